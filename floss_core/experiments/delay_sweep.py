"""Figures 3, 4 and 6: training on delayed tasks over a grid of delays, for no flossing, flossing before training, and
flossing before and during training."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..cells import ModelConfig
from ..checks import check_choice, check_int
from ..flossing import FlossConfig, floss, flossed_parameters
from ..tasks import TASKS, InputEncoding, TaskConfig
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, network_generators
from .sharding import Shard, join, open_executor, ranges

__all__ = ["DelaySweep", "delay_sweep", "initial_networks", "CONDITIONS"]

CONDITIONS = ("none", "pre", "pre+during")


@dataclass(frozen=True)
class DelaySweep:
    """A grid of delayed tasks x delays x seeds, trained under flossing conditions (figures 3, 4 and 6)."""
    tasks: tuple = ("copy", "xor")  # task names (floss_core.tasks)
    delays: tuple = (10, 20, 30, 40)  # d, the longest lag
    conditions: tuple = CONDITIONS  # "none", "pre" (schedule.pre_steps), "pre+during" (also the schedule's episodes)
    n_networks: int = 5  # networks (seeds) per task, delay and condition
    seq_len: int = TaskConfig.seq_len  # T of the training sequences
    batch: int = TaskConfig.batch  # sequences per training step
    encoding: InputEncoding = InputEncoding()  # of the tasks and the flossing inputs (replaces FlossConfig.encoding)
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    floss: FlossConfig = FlossConfig()
    schedule: FlossSchedule = FlossSchedule()
    seed: int = 0
    episode_adam: str = "continued"  # the flossing Adam of the episodes: "continued" from preflossing (the author's)
    # or "new" (a fresh Adam per training run, as this package did before; for the ablation)
    shard_size: int = 32  # networks per shard: independent ensembles of at most this many (experiments.sharding;
    # 32 runs a training step ~1.5x cheaper per network than 16 on 2 cores)

    def __post_init__(self):
        object.__setattr__(self, "tasks", as_tuple("DelaySweep.tasks", self.tasks,
                                                   lambda n, v: check_choice(n, v, TASKS)))
        object.__setattr__(self, "delays", as_tuple("DelaySweep.delays", self.delays,
                                                    lambda n, v: check_int(n, v, 1)))
        object.__setattr__(self, "conditions", as_tuple("DelaySweep.conditions", self.conditions,
                                                        lambda n, v: check_choice(n, v, CONDITIONS)))
        check_int("DelaySweep.n_networks", self.n_networks, 1)
        check_choice("DelaySweep.episode_adam", self.episode_adam, ("continued", "new"))
        check_int("DelaySweep.shard_size", self.shard_size, 1)
        check_seed("DelaySweep.seed", self.seed)
        self.grid()  # every task of the grid is valid (e.g. no odd delay for XOR) before any work

    def grid(self) -> list:
        """The TaskConfig of every network of one condition: ``e = (j * D + d) * S + s`` for task j, delay d, seed s."""
        return [TaskConfig(name=t, delay=d, seq_len=self.seq_len, batch=self.batch, encoding=self.encoding)
                for t in self.tasks for d in self.delays for _ in range(self.n_networks)]

    def floss_config(self) -> FlossConfig:
        """The flossing config, its inputs encoded like the tasks'."""
        return dataclasses.replace(self.floss, encoding=self.encoding)


def initial_networks(s: DelaySweep, seeds=None, device="cpu"):
    """The initial networks of these seeds (default all ``range(n_networks)``) as one ensemble: the same for every
    task, delay and condition of the sweep (e.g. to measure them before flossing)."""
    seeds = range(s.n_networks) if seeds is None else seeds
    return s.model.build(1, 1, n_networks=len(seeds), device=device,
                         generator=network_generators(s.seed, "init", [f"s{i}" for i in seeds]))


_ADAM_STATE = ("exp_avg", "exp_avg_sq")  # Adam's per-parameter state, (E, ...) like its parameter


def _prefloss_shard(s: DelaySweep, a: int, b: int, device, progress: bool) -> dict:
    """Seeds a..b-1 flossed before training: their parameters, the flossing Adam's state (continued by the
    episodes of "pre+during", as the author keeps one flossing optimizer) and the exponents measured meanwhile."""
    model = initial_networks(s, range(a, b), device)
    config = s.floss_config()
    params = dict(zip(config.params, flossed_parameters(model, config)))
    opt = torch.optim.Adam(list(params.values()), lr=config.lr)
    res = floss(model, s.schedule.pre_steps, config=config, progress=progress, optimizer=opt,
                generator=network_generators(s.seed, "prefloss", [f"s{i}" for i in range(a, b)]))
    adam = {name: {key: opt.state[p][key].detach().clone() for key in _ADAM_STATE} for name, p in params.items()}
    steps = {name: opt.state[p]["step"].clone() for name, p in params.items()}
    return {"state": {name: p.detach() for name, p in model.named_parameters()}, "adam": adam, "adam_step": steps,
            "exponents": res.exponents}


def _flossing_adam(s: DelaySweep, model, preflossed: list, seeds: list) -> torch.optim.Adam:
    """The flossing Adam of preflossing, continued: over ``model``'s flossed parameters, with the state each seed's
    network had after preflossing (``seeds``: the seed of each of model's networks)."""
    config = s.floss_config()
    params = dict(zip(config.params, flossed_parameters(model, config)))
    opt = torch.optim.Adam(list(params.values()), lr=config.lr)
    adam = {name: join([p["adam"][name] for p in preflossed]) for name in params}  # {name: {key: (S, ...)}}
    for name, p in params.items():
        opt.state[p] = {key: adam[name][key][seeds].clone() for key in _ADAM_STATE}
        opt.state[p]["step"] = preflossed[0]["adam_step"][name].clone()  # the same count for every seed
    return opt


def _shard_model(s: DelaySweep, a: int, b: int, device, per_seed: dict | None = None, per_network: dict | None = None):
    """Networks a..b-1 of one condition's grid as one ensemble: (model, tasks, seeds), with the parameters
    ``per_seed`` ({name: (S, ...)}, e.g. after preflossing), ``per_network`` ({name: (b - a, ...)}) or the initial
    ones."""
    tasks = s.grid()[a:b]
    seeds = [e % s.n_networks for e in range(a, b)]
    model = initial_networks(s, seeds, device)  # (b - a networks)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if per_network is not None:
                p.copy_(per_network[name])
            elif per_seed is not None:
                p.copy_(per_seed[name][seeds])
    return model, tasks, seeds


def _first_episode(s: DelaySweep) -> int | None:
    """The training step of the first flossing episode of "pre+during", if "pre" shares the training before it."""
    shared = ({"pre", "pre+during"} <= set(s.conditions) and s.schedule.pre_steps and s.schedule.max_episodes
              and s.schedule.episode_steps)
    return s.schedule.every if shared and 0 < s.schedule.every < s.train.n_steps else None


def _train_shard(s: DelaySweep, condition: str, a: int, b: int, preflossed: list, device, progress: bool,
                 prefix: dict | None = None, stop: int | None = None) -> dict:
    """Training of networks a..b-1 of one condition's grid (task, delay, seed; ``DelaySweep.grid``) as one ensemble.
    ``preflossed``: the preflossing shards' results, in seed order (empty: train the initial networks).
    ``stop``: train only up to this step and return where it stopped (the prefix "pre" and "pre+during" share);
    ``prefix``: go on from such a result (then ``preflossed`` is not used)."""
    per_seed = join([p["state"] for p in preflossed]) if preflossed else None  # {name: (S, ...)}
    model, tasks, seeds = _shard_model(s, a, b, device, per_seed, prefix["state"] if prefix else None)
    schedule, floss_opt = FlossSchedule.none(), None
    if condition == "pre+during":
        schedule = FlossSchedule(pre_steps=0, every=s.schedule.every, episode_steps=s.schedule.episode_steps,
                                 max_episodes=s.schedule.max_episodes)
    if preflossed and s.episode_adam == "continued" and (condition == "pre+during" or stop):
        floss_opt = _flossing_adam(s, model, preflossed, seeds)
    keys = [f"{t.name}/d{t.delay}/s{seed}" for t, seed in zip(tasks, seeds)]  # not the condition
    h = train(model, tasks, config=s.train, floss_config=s.floss_config(), schedule=schedule, progress=progress,
              generator=network_generators(s.seed, "train", keys), floss_optimizer=floss_opt, stop=stop,
              resume=prefix["train"] if prefix else None)
    if stop is not None:
        return {"state": {name: p.detach() for name, p in model.named_parameters()}, "train": h.state}
    return {"accuracy": h.accuracy, "loss": h.loss, "grad_norm": h.grad_norm, "exponents": h.exponents,
            "failed": h.failed, "exponent_steps": h.exponent_steps}


_NETWORK_DIM = {"accuracy": 1, "loss": 1, "grad_norm": 1, "exponents": 1}  # (steps, E), (records, E, k); else E first


def delay_sweep(sweep: DelaySweep, *, device: str = "cpu", progress: bool = True, cluster=None) -> dict:
    """Run the sweep. The n_networks initial networks (seeds) are the same for every task, delay and condition;
    preflossing is done once per seed and the flossed networks are copied to every task and delay. Network
    ``(j * D + d) * S + s`` of condition c is task j, delay d, seed s.

    Randomness: every network draws from its own generators, seeded from (sweep.seed, stage, name)
    (``common.network_generators``): seed s's initial weights ("init", "s<s>") and preflossing ("prefloss"), and
    the training batches and flossing episodes of (task, delay, seed) ("train", "<task>/d<delay>/s<s>"). The
    condition is not part of the name: the conditions of a task, delay and seed start from the same network and see
    the same batches until their flossing differs.

    Work done once: preflossing runs once per seed; with both "pre" and "pre+during", their training up to the first
    episode (step ``schedule.every``) runs once, as "prefix" shards that both conditions resume (``train``'s
    stop/resume; the same numbers, bit for bit, as training each condition from step 0).

    Shards (``experiments.sharding``): preflossing runs as shards of at most ``sweep.shard_size`` seeds, and each
    condition's training as shards of at most ``shard_size`` of its networks, each an independent ensemble; a
    training shard of a flossed condition depends on the preflossing shards (and on its prefix shard). They run here
    one after the other or, with ``cluster`` (a Dask ``Client``, scheduler address or Cluster), as Dask tasks at
    once: the same numbers, bit for bit.

    Returns {"tasks", "delays", "conditions", and per condition c: c -> {"accuracy", "loss", "grad_norm":
    (train_steps, n_tasks, D, S), "exponents": (n_records, n_tasks, D, S, record_k), "exponent_steps",
    "failed": (n_tasks, D, S)}} plus, with preflossing, "pre_floss_exponents" (pre_steps, S, k) measured during
    preflossing and "pre_state" {parameter name: (S, ...)}, the preflossed networks.

    One flossing optimizer per network, as in the author's code: the Adam of preflossing (its moments and step
    count) is continued by the flossing episodes of "pre+during".
    """
    s = sweep
    J, D, S = len(s.tasks), len(s.delays), s.n_networks
    n = J * D * S  # networks per condition
    inner = progress and cluster is None  # the steps' progress bars in this process, the shards' on a cluster
    first = _first_episode(s)
    with open_executor(cluster, progress=progress) as ex:
        pre, shards = [], []
        if any(c != "none" for c in s.conditions) and s.schedule.pre_steps:
            shards = [Shard("delay_sweep", a, b, "preflossing", "seeds") for a, b in ranges(S, s.shard_size)]
            pre = [ex.submit(sh, _prefloss_shard, s, sh.start, sh.stop, device, inner) for sh in shards]
        tasks, prefixes = list(pre), {}
        if first is not None:  # the training before the first episode, once for "pre" and "pre+during"
            for a, b in ranges(n, s.shard_size):
                sh = Shard("delay_sweep", a, b, f"training to step {first}")
                prefixes[a] = ex.submit(sh, _train_shard, s, "pre", a, b, pre, device, inner, None, first)
        for i, c in enumerate(s.conditions):
            for a, b in ranges(n, s.shard_size):
                shards.append(Shard("delay_sweep", i * n + a, i * n + b))
                prefix = prefixes.get(a) if c in ("pre", "pre+during") else None
                tasks.append(ex.submit(shards[-1], _train_shard, s, c, a, b, pre if c != "none" and not prefix else [],
                                       device, inner, prefix))
        done = ex.gather(tasks, shards)
    out = {"tasks": list(s.tasks), "delays": list(s.delays), "conditions": list(s.conditions)}
    if pre:
        out["pre_floss_exponents"] = join(done[:len(pre)], {"exponents": 1})["exponents"]
        out["pre_state"] = join([p["state"] for p in done[:len(pre)]])  # {name: (S, ...)} after preflossing
    per_condition = len(done[len(pre):]) // len(s.conditions)
    for i, c in enumerate(s.conditions):
        h = join(done[len(pre) + i * per_condition:len(pre) + (i + 1) * per_condition], _NETWORK_DIM)
        steps, records = h["accuracy"].shape[0], len(h["exponent_steps"])
        out[c] = {key: h[key].reshape(steps, J, D, S) for key in ("accuracy", "loss", "grad_norm")}
        k = h["exponents"].shape[-1]
        out[c].update(exponents=h["exponents"].reshape(records, J, D, S, k), exponent_steps=h["exponent_steps"],
                      failed=h["failed"].reshape(J, D, S))
    return out
