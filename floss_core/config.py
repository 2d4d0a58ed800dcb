"""Paper defaults in one place: one small frozen dataclass per concern (model, flossing, schedule, training).

Every default is the author's example run (see PAPER.md: N = 80, k = 75, a 55-step flossing trajectory with 16
transient steps, batch 1 while flossing, QR every step, Adam lr 1e-3, training batch 16 of length 300 for 3001 steps,
gradient-norm clipping at 0.03 per parameter array, trainable initial state, E_p = 500, E_f = 100, E_i = 500,
N_i = 2). A notebook changes only the fields it varies: ``dataclasses.replace(FlossConfig(), k=16)``.
The task defaults live in ``floss_core.tasks.TaskConfig``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .gated import GRU, LSTM
from .models import TanhRNN

__all__ = ["ModelConfig", "FlossConfig", "FlossSchedule", "TrainConfig"]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_dtype(dtype) -> torch.dtype:
    """'float32' / 'float64' / a torch.dtype -> torch.dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {list(_DTYPES)} or a torch.dtype, got {dtype!r}")
    return _DTYPES[dtype]


CELLS = {"tanh": TanhRNN, "lstm": LSTM, "gru": GRU}


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "tanh"  # "tanh" (the paper's vanilla RNN), "lstm" or "gru"
    n_hidden: int = 80  # N, units
    gain: float = 1.0  # g, W_ij ~ N(0, g^2 / N)
    init: str = "gaussian"  # "gaussian" or "orthogonal" recurrent weights
    input_std: float = 1.0  # U ~ N(0, input_std^2)
    readout_std: float = 1.0  # V ~ N(0, readout_std^2)
    bias_max: float = 0.1  # b ~ U[0, bias_max)
    dtype: str = "float32"  # parameter dtype, "float32" or "float64"

    def build(self, n_in: int, n_out: int, *, n_networks: int = 1, generator: torch.Generator | None = None,
              device=None):
        """An ensemble of ``n_networks`` networks with these settings (gated cells use their own PyTorch-like
        initialization; only ``gain`` applies to them)."""
        if self.cell not in CELLS:
            raise ValueError(f"unknown cell {self.cell!r}; valid cells: {sorted(CELLS)}")
        if self.cell != "tanh":
            return CELLS[self.cell](n_in, self.n_hidden, n_out, gain=self.gain, n_networks=n_networks,
                                    generator=generator, dtype=resolve_dtype(self.dtype), device=device)
        return TanhRNN(n_in, self.n_hidden, n_out, gain=self.gain, n_networks=n_networks, init=self.init,
                       input_std=self.input_std, readout_std=self.readout_std, bias_max=self.bias_max,
                       generator=generator, dtype=resolve_dtype(self.dtype), device=device)


@dataclass(frozen=True)
class FlossConfig:
    k: int = 75  # number of exponents flossed (the first k)
    target: float = 0.0  # target exponent, nats per step
    seq_len: int = 55  # flossing trajectory length, steps (transient included)
    n_transient: int = 16  # steps not averaged at the start of the trajectory
    batch: int = 1  # trajectories per network per flossing step
    t_ons: int = 1  # QR every t_ons steps
    lr: float = 1e-3  # Adam learning rate of flossing
    lr_final: float | None = None  # if set, lr decays geometrically to this over each flossing call (None: constant)
    gradient: str = "full"  # "full" (through the state trajectory) or "detached"
    method: str = "fast"  # spectrum engine: "fast" (floss_core.fast; other cells than TanhRNN fall back to the
    # reference) or "reference" (autograd through every QR); the same numbers up to roundoff
    params: tuple = ("W", "U", "b")  # which parameters flossing updates
    input: str = "task"  # flossing inputs: "task" (random +-1 bits like the task's) or "zero"


@dataclass(frozen=True)
class FlossSchedule:
    pre_steps: int = 500  # E_p, flossing steps before training (0: no preflossing)
    every: int = 100  # E_f, training steps between flossing episodes during training
    episode_steps: int = 500  # E_i, flossing steps per episode during training
    max_episodes: int = 2  # N_i, at most this many episodes during training (0: none)
    weight: float = 0.0  # flossing loss added to the task loss at every training step with this weight (0: off)

    @classmethod
    def none(cls) -> "FlossSchedule":
        """Plain training: no flossing at all."""
        return cls(pre_steps=0, max_episodes=0, weight=0.0)

    @classmethod
    def pre(cls, pre_steps: int = 500) -> "FlossSchedule":
        """Flossing before training only."""
        return cls(pre_steps=pre_steps, max_episodes=0, weight=0.0)

    def __post_init__(self):
        for name in ("pre_steps", "every", "episode_steps", "max_episodes"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"FlossSchedule.{name} must be an int >= 0, got {v!r}")
        if self.max_episodes > 0 and self.every < 1:
            raise ValueError("FlossSchedule.every must be >= 1 when flossing episodes are scheduled")
        if self.weight < 0:
            raise ValueError(f"FlossSchedule.weight must be >= 0, got {self.weight!r}")

    def episode_at(self, step: int, done: int) -> bool:
        """Whether a flossing episode starts before training step ``step`` when ``done`` episodes have run."""
        return self.max_episodes > done and step > 0 and step % self.every == 0


@dataclass(frozen=True)
class TrainConfig:
    n_steps: int = 3001  # training steps, each on a fresh batch
    lr: float = 1e-3  # Adam learning rate
    clip: float = 0.03  # gradient-norm clipping per parameter array and per network (None or 0: off)
    train_h0: bool = True  # whether the initial state h0 is trained
    record_every: int = 100  # record the exponents every this many steps (0: never)
    record_k: int | None = None  # how many exponents to record (None: FlossConfig.k)
    checkpoint: int = 0  # BPTT in segments of this many steps, recomputed in the backward (0: off; saves memory)
