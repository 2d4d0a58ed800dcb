"""Figures 3, 4 and 6: training on delayed tasks over a grid of delays, for no flossing, flossing before training, and
flossing before and during training."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from ..cells import ModelConfig
from ..checks import check_choice, check_int
from ..ensemble import concat_networks, tile_networks
from ..flossing import FlossConfig, floss
from ..tasks import TASKS, InputEncoding, TaskConfig
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, generator

__all__ = ["DelaySweep", "delay_sweep", "CONDITIONS"]

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

    def __post_init__(self):
        object.__setattr__(self, "tasks", as_tuple("DelaySweep.tasks", self.tasks,
                                                   lambda n, v: check_choice(n, v, TASKS)))
        object.__setattr__(self, "delays", as_tuple("DelaySweep.delays", self.delays,
                                                    lambda n, v: check_int(n, v, 1)))
        object.__setattr__(self, "conditions", as_tuple("DelaySweep.conditions", self.conditions,
                                                        lambda n, v: check_choice(n, v, CONDITIONS)))
        check_int("DelaySweep.n_networks", self.n_networks, 1)
        check_seed("DelaySweep.seed", self.seed)
        self.grid()  # every task of the grid is valid (e.g. no odd delay for XOR) before any work

    def grid(self) -> list:
        """The TaskConfig of every network of one condition: ``e = (j * D + d) * S + s`` for task j, delay d, seed s."""
        return [TaskConfig(name=t, delay=d, seq_len=self.seq_len, batch=self.batch, encoding=self.encoding)
                for t in self.tasks for d in self.delays for _ in range(self.n_networks)]

    def floss_config(self) -> FlossConfig:
        """The flossing config, its inputs encoded like the tasks'."""
        return dataclasses.replace(self.floss, encoding=self.encoding)


def delay_sweep(sweep: DelaySweep, *, device: str = "cpu", progress: bool = True) -> dict:
    """Run the sweep. The n_networks initial networks (seeds) are the same for every task, delay and condition;
    preflossing is done once per seed and the flossed networks are copied to every task and delay. Conditions without
    flossing episodes ("none", "pre") train together as one ensemble, "pre+during" as another: network
    ``e = (c * n_tasks + j) * D * S + d * S + s``.

    Returns {"tasks", "delays", "conditions", and per condition c: c -> {"accuracy", "loss", "grad_norm":
    (train_steps, n_tasks, D, S), "exponents": (n_records, n_tasks, D, S, record_k), "exponent_steps",
    "failed": (n_tasks, D, S)}} plus "pre_floss_exponents" (pre_steps, S, k) measured during preflossing.
    """
    s = sweep
    J, D, S = len(s.tasks), len(s.delays), s.n_networks
    grid = s.grid()
    base = s.model.build(1, 1, n_networks=S, generator=generator(s.seed), device=device)
    out = {"tasks": list(s.tasks), "delays": list(s.delays), "conditions": list(s.conditions)}
    pre = None
    if any(c != "none" for c in s.conditions) and s.schedule.pre_steps:
        pre = copy.deepcopy(base)
        res = floss(pre, s.schedule.pre_steps, config=s.floss_config(), generator=generator(s.seed + 1),
                    progress=progress)
        out["pre_floss_exponents"] = res.exponents
    during = FlossSchedule(pre_steps=0, every=s.schedule.every, episode_steps=s.schedule.episode_steps,
                           max_episodes=s.schedule.max_episodes)
    groups = [[c for c in s.conditions if c != "pre+during"], [c for c in s.conditions if c == "pre+during"]]
    for group in groups:
        if not group:
            continue
        model = concat_networks([tile_networks(base if c == "none" or pre is None else pre, J * D) for c in group])
        h = train(model, grid * len(group), config=s.train, floss_config=s.floss_config(),
                  schedule=FlossSchedule.none() if group[0] != "pre+during" else during,
                  generator=generator(s.seed + 2), progress=progress)
        n, r = h.accuracy.shape[0], len(h.exponent_steps)
        for i, c in enumerate(group):
            sl = slice(i * J * D * S, (i + 1) * J * D * S)
            out[c] = {
                "accuracy": h.accuracy[:, sl].reshape(n, J, D, S), "loss": h.loss[:, sl].reshape(n, J, D, S),
                "grad_norm": h.grad_norm[:, sl].reshape(n, J, D, S),
                "exponents": h.exponents[:, sl].reshape(r, J, D, S, -1), "exponent_steps": h.exponent_steps,
                "failed": h.failed[sl].reshape(J, D, S),
            }
    return out
