"""Figure 5: final accuracy vs the number of preflossed exponents k, for tasks of several dimensions."""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass

from ..cells import ModelConfig
from ..checks import check_choice, check_int
from ..ensemble import concat_networks
from ..flossing import FlossConfig, floss
from ..tasks import TASKS, InputEncoding, TaskConfig
from ..training import FlossSchedule, TrainConfig, train
from .common import as_tuple, check_seed, generator

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

    def __post_init__(self):
        check_choice("ComplexitySweep.task", self.task, TASKS)
        object.__setattr__(self, "channels", as_tuple("ComplexitySweep.channels", self.channels,
                                                      lambda n, v: check_int(n, v, 1)))
        object.__setattr__(self, "ks", as_tuple("ComplexitySweep.ks", self.ks, lambda n, v: check_int(n, v, 0)))
        check_int("ComplexitySweep.n_networks", self.n_networks, 1)
        check_seed("ComplexitySweep.seed", self.seed)
        for C in self.channels:  # the tasks are valid before any work
            self.task_config(C)

    def task_config(self, n_channels: int) -> TaskConfig:
        return TaskConfig(name=self.task, delay=self.delay, seq_len=self.seq_len, batch=self.batch,
                          n_channels=n_channels, encoding=self.encoding)


def complexity_sweep(sweep: ComplexitySweep, *, device: str = "cpu", progress: bool = True) -> dict:
    """Run the sweep. For each number of channels C: n_networks initial networks with C inputs and C outputs; for each
    k a copy preflossed with that k (at most N); all (k, seed) networks then train together as one ensemble, network
    ``e = j * n_networks + s`` for k = ks[j].

    Returns {"channels", "ks", "task", "delay", "accuracy": [(train_steps, len(ks), S) per C],
    "failed": [(len(ks), S) per C]}.
    """
    s = sweep
    S = s.n_networks
    out = {"channels": list(s.channels), "ks": list(s.ks), "task": s.task, "delay": s.delay, "accuracy": [],
           "failed": []}
    for C in s.channels:
        base = s.model.build(C, s.task_config(C).n_outputs, n_networks=S, generator=generator(s.seed + 100 * C),
                             device=device)
        members = []
        for k in s.ks:
            model = copy.deepcopy(base)
            if k:
                config = dataclasses.replace(s.floss, k=min(k, s.model.n_hidden), encoding=s.encoding)
                floss(model, s.schedule.pre_steps, config=config, generator=generator(s.seed + 1), progress=progress)
            members.append(model)
        model = concat_networks(members)
        h = train(model, s.task_config(C), config=s.train,
                  floss_config=dataclasses.replace(s.floss, encoding=s.encoding), schedule=FlossSchedule.none(),
                  generator=generator(s.seed + 2), progress=progress)
        n = h.accuracy.shape[0]
        out["accuracy"].append(h.accuracy.reshape(n, len(s.ks), S))
        out["failed"].append(h.failed.reshape(len(s.ks), S))
    return out
