"""Figure 5: final accuracy vs the number of preflossed exponents k, for tasks of increasing temporal complexity.

The tasks are the author's hierarchical temporal XOR (``TaskConfig.hierarchical_xor``): at level h the target is
the parity of the 2^h bits at lags a, 2a, ..., 2^h a (a = ``author_delay``), so each level doubles both the number
of bits the network must combine and the longest lag it must bridge. Optionally a second family: the XOR across C
input channels of the bits at one lag ("channel_xor", one target), a task of growing dimension.

Every task is trained from networks preflossed with k exponents (k = 0: no flossing) and the outcome is scored like
figures 3-4's: success when the running mean of the test accuracy reaches a threshold and stays above it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_int
from ..diagnostics import criterion_outcome
from ..flossing import FlossConfig, floss
from ..tasks import InputEncoding, TaskConfig
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["ComplexitySweep", "complexity_sweep", "complexity_outcome"]


@dataclass(frozen=True)
class ComplexitySweep:
    """Preflossing k exponents (k in ``ks``, 0: none) before training on the hierarchical temporal XOR of each level
    h in ``levels`` and, optionally, on the XOR across C channels for each C in ``channel_xor`` (figure 5).

    Defaults: the author's settings (T = 300, batch 16, 3001 training steps, E_p = 500 flossing steps, N = 80, the
    author's input encoding) and 9 networks per task and k. ``author_delay`` = 5 makes level 1 the delayed XOR of
    lags 5 and 10, level 2 the parity of 4 bits at lags 5-20 and level 3 of 8 bits at lags 5-40. Measured at these
    defaults (seeds 0-2): without flossing level 1 is learned by 3 of 3 networks (final accuracy 1.00) and level 2
    by 0 of 3 (0.50); with k = 75, level 2 by 2 of 3 (1.00, 0.50, 1.00)."""
    levels: tuple = (1, 2, 3)  # h of the hierarchical temporal XOR: the parity of 2^h bits (one curve each)
    author_delay: int = 5  # a, the lag spacing of the hierarchical XOR, steps: level h uses lags a, 2a, ..., 2^h a
    channel_xor: tuple = ()  # C >= 2 of the optional cross-channel XOR tasks (one curve each; empty: none)
    channel_delay: int = 10  # d, the lag of the cross-channel XOR, steps (y_t = XOR of the C bits of step t - d)
    ks: tuple = (0, 5, 15, 40, 75)  # exponents preflossed (0: no flossing), at most the model's n_hidden
    n_networks: int = 9  # networks (seeds) per task and k
    seq_len: int = TaskConfig.seq_len  # T of the training sequences
    batch: int = TaskConfig.batch  # sequences per training step
    pre_steps: int = FlossSchedule.pre_steps  # E_p, flossing steps before training (for every k > 0)
    encoding: InputEncoding = InputEncoding()  # of the tasks and the flossing inputs (replaces FlossConfig.encoding)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig(record_every=0)  # figure 5 records no exponents during training
    floss: FlossConfig = FlossConfig()  # its k is replaced by each of ks
    seed: int = 0
    shard_size: int = 16  # networks per shard: independent ensembles of at most this many (experiments.sharding)

    def __post_init__(self):
        n = self.model.n_hidden
        levels = as_tuple("ComplexitySweep.levels", self.levels, lambda name, v: check_int(name, v, 1))
        ks = as_tuple("ComplexitySweep.ks", self.ks,
                      lambda name, v: check_int(name, v, 0, n, note=" (the model's n_hidden)"))
        channels = () if isinstance(self.channel_xor, (list, tuple)) and not self.channel_xor else \
            as_tuple("ComplexitySweep.channel_xor", self.channel_xor, lambda name, v: check_int(name, v, 2))
        for name, value in (("levels", levels), ("ks", ks), ("channel_xor", channels)):
            if len(set(value)) != len(value):
                raise ValueError(f"ComplexitySweep.{name} must not repeat a value, got {list(value)}")
            object.__setattr__(self, name, value)
        check_int("ComplexitySweep.author_delay", self.author_delay, 1)
        check_int("ComplexitySweep.channel_delay", self.channel_delay, 1)
        check_int("ComplexitySweep.n_networks", self.n_networks, 1)
        check_int("ComplexitySweep.pre_steps", self.pre_steps, 1)
        check_int("ComplexitySweep.shard_size", self.shard_size, 1)
        check_seed("ComplexitySweep.seed", self.seed)
        self.tasks()  # every task fits in seq_len before any work

    def tasks(self) -> dict:
        """{name: TaskConfig}: "h<h>" for each level, then "cxor<C>" for each cross-channel XOR."""
        seq_len = check_int("ComplexitySweep.seq_len", self.seq_len, 1)
        common = dict(seq_len=seq_len, batch=check_int("ComplexitySweep.batch", self.batch, 1), encoding=self.encoding)
        out = {}
        for h in self.levels:
            if 2 ** h * self.author_delay >= seq_len:
                raise ValueError(f"ComplexitySweep.levels: level {h} spans lags up to 2^{h} * author_delay = "
                                 f"{2 ** h * self.author_delay}, which must be smaller than seq_len={seq_len}")
            out[f"h{h}"] = TaskConfig.hierarchical_xor(h, self.author_delay, **common)
        if self.channel_xor and self.channel_delay >= seq_len:
            raise ValueError(f"ComplexitySweep.channel_delay must be smaller than seq_len={seq_len}, "
                             f"got {self.channel_delay}")
        for C in self.channel_xor:
            out[f"cxor{C}"] = TaskConfig(name="channel_xor", delay=self.channel_delay, n_channels=C, **common)
        return out

    def groups(self) -> list:
        """[(C, task names)]: the tasks whose networks share their initial weights and preflossing, those of C input
        channels: every level (C = 1), then each cross-channel XOR on its own."""
        return [(1, [f"h{h}" for h in self.levels])] + [(C, [f"cxor{C}"]) for C in self.channel_xor]

    def floss_config(self, k: int) -> FlossConfig:
        """The flossing config of k exponents, its inputs encoded like the tasks'."""
        return dataclasses.replace(self.floss, k=k, encoding=self.encoding)


def _shard(s: ComplexitySweep, C: int, names: list, a: int, b: int, device, progress: bool) -> dict:
    """Networks a..b-1 of the (k, seed, task) grid of the tasks ``names`` with C inputs (network
    ``e = (j * n_networks + seed) * len(names) + i`` for k = ks[j], task names[i]): each (k, seed) preflossed once
    and copied to its tasks, then all trained together."""
    S, L = s.n_networks, len(names)
    tasks = s.tasks()
    nets = [(s.ks[e // (S * L)], e // L % S, names[e % L]) for e in range(a, b)]  # (k, seed, task) per network
    n_out = tasks[names[0]].n_outputs

    def initial(seeds):  # the initial networks of these seeds: keyed by their inputs and seed
        keys = [f"C{C}/s{seed}" for seed in seeds]
        return s.model.build(C, n_out, n_networks=len(keys), device=device,
                             generator=network_generators(s.seed, "init", keys)), keys

    model, _ = initial([seed for _, seed, _ in nets])  # (b - a networks)
    for k in dict.fromkeys(k for k, _, _ in nets if k):  # the shard's ks > 0 in order
        rows = [e for e, net in enumerate(nets) if net[0] == k]
        seeds = list(dict.fromkeys(nets[e][1] for e in rows))  # each seed flossed once for all its tasks
        flossed, keys = initial(seeds)
        floss(flossed, s.pre_steps, config=s.floss_config(k), progress=progress,
              generator=network_generators(s.seed, "prefloss", keys))
        which = [seeds.index(nets[e][1]) for e in rows]
        with torch.no_grad():
            for p, q in zip(model.parameters(), flossed.parameters()):
                p[rows] = q[which]
    h = train(model, [tasks[name] for _, _, name in nets], config=s.train, floss_config=s.floss_config(s.floss.k),
              schedule=FlossSchedule.none(), progress=progress,
              generator=network_generators(s.seed, "train", [f"{name}/s{seed}" for _, seed, name in nets]))
    return {"accuracy": h.accuracy, "failed": h.failed}


def complexity_sweep(sweep: ComplexitySweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep. For each task (``ComplexitySweep.tasks``: "h<h>" per level, "cxor<C>" per cross-channel XOR)
    and each k, n_networks networks are preflossed with k exponents (none for k = 0) and trained.

    Randomness: every network draws from its own generators (``common.network_generators``): its initial weights
    ("init") and its preflossing ("prefloss") from the key "C<inputs>/s<seed>", its training batches ("train") from
    "<task>/s<seed>". k is in no key, and the level in none but the training's: the networks of a seed start from
    the same weights and floss on the same inputs at every level, and train on the same batches for every k, so
    that the curves differ by k and by the task alone.

    Shards (``experiments.sharding``): the networks of a group of tasks (``ComplexitySweep.groups``: all levels,
    then each cross-channel XOR), in the order (k, seed, task), run as independent ensembles of at most
    ``sweep.shard_size`` networks; a shard flosses each of its (k, seed) once and trains it on every level, here one
    shard after the other or, with ``cluster`` (a Dask ``Client``, scheduler address or Cluster), as Dask tasks at
    once: the same numbers, bit for bit, whatever the shards.

    Returns {"tasks": [names], "levels", "channel_xor", "ks", "author_delay", "channel_delay", "accuracy":
    {task: (train_steps, len(ks), S)}, "failed": {task: (len(ks), S)}}.
    """
    s = sweep
    S, K = s.n_networks, len(s.ks)
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    with open_executor(cluster, progress=progress) as ex:
        jobs, shards, first = [], [], 0
        for C, names in s.groups():
            n = K * S * len(names)
            for a, b in ranges(n, s.shard_size):
                shards.append(Shard("complexity_sweep", first + a, first + b, ", ".join(names)))
                jobs.append(ex.submit(shards[-1], _shard, s, C, names, a, b, device, inner))
            first += n
        done = ex.gather(jobs, shards)
    out = {"tasks": list(s.tasks()), "levels": list(s.levels), "channel_xor": list(s.channel_xor),
           "ks": list(s.ks), "author_delay": s.author_delay, "channel_delay": s.channel_delay, "accuracy": {},
           "failed": {}}
    i = 0
    for C, names in s.groups():
        parts = len(ranges(K * S * len(names), s.shard_size))
        h = join(done[i:i + parts], {"accuracy": 1})
        i += parts
        acc = h["accuracy"].reshape(-1, K, S, len(names))  # (steps, K, S, tasks)
        failed = h["failed"].reshape(K, S, len(names))
        for j, name in enumerate(names):
            out["accuracy"][name] = acc[..., j].contiguous()
            out["failed"][name] = failed[..., j].contiguous()
    return out


def complexity_outcome(result: dict, *, threshold: float = 0.9, window: int = 50, last: int = 100) -> dict:
    """Success and final accuracy of every network of a ``complexity_sweep`` result, as in figures 3-4
    (``summarize_delay_sweep``): success when the running mean (``window`` steps) of the test accuracy reaches
    ``threshold`` and stays above it to the end; final accuracy, the mean over the ``last`` steps. A network whose
    training failed (``failed``) is no success and has a NaN final accuracy (``summarize_delay_sweep``).
    Returns {task: {"success": bool (len(ks), S), "final_accuracy": (len(ks), S), "failed": bool (len(ks), S)}}."""
    out = {}
    for name, acc in result["accuracy"].items():  # (steps, K, S)
        failed = result["failed"][name].to(torch.bool)  # (K, S)
        o = criterion_outcome(acc, failed, threshold=threshold, window=window, last=last)
        out[name] = {"success": o["success"], "final_accuracy": o["final_accuracy"], "failed": failed}
    return out
