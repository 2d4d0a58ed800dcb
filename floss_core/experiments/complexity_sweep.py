"""Figure 5: final accuracy vs the number of preflossed exponents k, for tasks of several dimensions."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..cells import ModelConfig
from ..checks import check_choice, check_int
from ..ensemble import concat_networks
from ..flossing import FlossConfig, floss
from ..tasks import TASKS, InputEncoding, TaskConfig
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["ComplexitySweep", "complexity_sweep"]


@dataclass(frozen=True)
class ComplexitySweep:
    """Preflossing k exponents (k in ``ks``, 0: none) before training on tasks with C channels (figure 5)."""
    task: str = "copy"  # every channel carries its own task
    channels: tuple = (1, 2, 4)  # C, the task dimension
    ks: tuple = (0, 1, 4, 16, 64)  # exponents preflossed (at most N; 0: no flossing)
    delay: int = 20  # d
    n_networks: int = 5  # networks (seeds) per C and k
    seq_len: int = TaskConfig.seq_len
    batch: int = TaskConfig.batch
    encoding: InputEncoding = InputEncoding()  # of the tasks and the flossing inputs (replaces FlossConfig.encoding)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(record_every=0)  # figure 5 records no exponents during training
    floss: FlossConfig = FlossConfig()  # its k is replaced by each of ks
    schedule: FlossSchedule = FlossSchedule.pre()  # only pre_steps is used
    seed: int = 0
    shard_size: int = 16  # networks per shard: independent ensembles of at most this many (experiments.sharding)

    def __post_init__(self):
        check_choice("ComplexitySweep.task", self.task, TASKS)
        object.__setattr__(self, "channels", as_tuple("ComplexitySweep.channels", self.channels,
                                                      lambda n, v: check_int(n, v, 1)))
        object.__setattr__(self, "ks", as_tuple("ComplexitySweep.ks", self.ks, lambda n, v: check_int(n, v, 0)))
        check_int("ComplexitySweep.n_networks", self.n_networks, 1)
        check_int("ComplexitySweep.shard_size", self.shard_size, 1)
        check_seed("ComplexitySweep.seed", self.seed)
        for C in self.channels:  # the tasks are valid before any work
            self.task_config(C)

    def task_config(self, n_channels: int) -> TaskConfig:
        return TaskConfig(name=self.task, delay=self.delay, seq_len=self.seq_len, batch=self.batch,
                          n_channels=n_channels, encoding=self.encoding)


def _shard(s: ComplexitySweep, C: int, a: int, b: int, device, progress: bool) -> dict:
    """Networks a..b-1 of the (k, seed) grid for C channels (network ``e = j * n_networks + seed`` for k = ks[j]):
    preflossed with their k, then trained together."""
    S = s.n_networks
    nets = [(s.ks[e // S], e % S) for e in range(a, b)]  # (k, seed) per network
    task = s.task_config(C)
    members = []
    for k in dict.fromkeys(k for k, _ in nets):  # the shard's ks in order, each with its seeds
        seeds = [seed for kk, seed in nets if kk == k]
        keys = [f"C{C}/s{seed}" for seed in seeds]
        model = s.model.build(C, task.n_outputs, n_networks=len(seeds), device=device,
                              generator=network_generators(s.seed, "init", keys))
        if k:
            config = dataclasses.replace(s.floss, k=min(k, s.model.n_hidden), encoding=s.encoding)
            floss(model, s.schedule.pre_steps, config=config, progress=progress,
                  generator=network_generators(s.seed, "prefloss", keys))
        members.append(model)
    h = train(concat_networks(members), task, config=s.train,
              floss_config=dataclasses.replace(s.floss, encoding=s.encoding), schedule=FlossSchedule.none(),
              generator=network_generators(s.seed, "train", [f"C{C}/s{seed}" for _, seed in nets]),
              progress=progress)
    return {"accuracy": h.accuracy, "failed": h.failed}


def complexity_sweep(sweep: ComplexitySweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep. For each number of channels C: n_networks initial networks with C inputs and C outputs; for each
    k a copy preflossed with that k (at most N); then all (k, seed) networks train, network
    ``e = j * n_networks + s`` for k = ks[j].

    Randomness: network (C, k, seed) draws from its own generators, seeded from (sweep.seed, stage, "C<C>/s<seed>")
    (``common.network_generators``): its initial weights ("init"), its preflossing ("prefloss") and its training
    batches ("train"). The name leaves k out: the networks of a seed start from the same weights, floss on the same
    inputs and train on the same batches for every k.

    Shards (``experiments.sharding``): each C's (k, seed) networks run as independent ensembles of at most
    ``sweep.shard_size`` networks, each preflossing (per k) and training its own networks, here one after the other
    or, with ``cluster`` (a Dask ``Client``, scheduler address or Cluster), as Dask tasks at once: the same numbers,
    bit for bit.

    Returns {"channels", "ks", "task", "delay", "accuracy": [(train_steps, len(ks), S) per C],
    "failed": [(len(ks), S) per C]}.
    """
    s = sweep
    S, K = s.n_networks, len(s.ks)
    parts = ranges(K * S, s.shard_size)
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    with open_executor(cluster, progress=progress) as ex:
        shards = [(C, Shard("complexity_sweep", a, b, f"C = {C}")) for C in s.channels for a, b in parts]
        tasks = [ex.submit(sh, _shard, s, C, sh.start, sh.stop, device, inner) for C, sh in shards]
        done = ex.gather(tasks, [sh for _, sh in shards])
    out = {"channels": list(s.channels), "ks": list(s.ks), "task": s.task, "delay": s.delay, "accuracy": [],
           "failed": []}
    for i in range(len(s.channels)):
        h = join(done[i * len(parts):(i + 1) * len(parts)], {"accuracy": 1})
        out["accuracy"].append(h["accuracy"].reshape(-1, K, S))
        out["failed"].append(h["failed"].reshape(K, S))
    return out
