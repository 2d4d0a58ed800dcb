"""The configurations of training: ``TrainConfig`` (steps, learning rate, clipping, recording) and ``FlossSchedule``
(when flossing happens). Defaults: the author's example run (3001 steps on fresh batches, Adam lr 1e-3, gradient-norm
clipping at 0.03 per parameter array, trainable initial state; E_p = 500, E_f = 100, E_i = 500, N_i = 2)."""
from __future__ import annotations

from dataclasses import dataclass

from ..checks import check_bool, check_choice, check_int, check_number

__all__ = ["TrainConfig", "FlossSchedule"]


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
            check_int(f"FlossSchedule.{name}", getattr(self, name), 0)
        if self.max_episodes > 0 and self.every < 1:
            raise ValueError("FlossSchedule.every must be >= 1 when flossing episodes are scheduled")
        check_number("FlossSchedule.weight", self.weight, 0)

    @property
    def flosses(self) -> bool:
        """Whether this schedule flosses at all."""
        return bool(self.pre_steps or (self.max_episodes and self.episode_steps) or self.weight)

    def episode_at(self, step: int, done: int) -> bool:
        """Whether a flossing episode starts before training step ``step`` when ``done`` episodes have run (never
        with ``episode_steps = 0``: an episode of no steps is none)."""
        return self.episode_steps > 0 and self.max_episodes > done and step > 0 and step % self.every == 0


@dataclass(frozen=True)
class TrainConfig:
    n_steps: int = 3001  # training steps, each on a fresh batch
    lr: float = 1e-3  # Adam learning rate of training (flossing has its own, FlossConfig.lr)
    clip: float | None = 0.03  # gradient-norm clipping per parameter array and per network (None or 0: off)
    train_h0: bool = True  # whether the initial state h0 is trained
    record_every: int = 100  # record the exponents every this many steps (0: never)
    record_k: int | None = None  # how many exponents to record (None: FlossConfig.k, at most the state size)
    checkpoint: int = 0  # BPTT in segments of this many steps, recomputed in the backward (0: off; saves memory)
    bptt: str = "fast"  # "fast" (hand-written BPTT for TanhRNN, LSTM and GRU, autograd for other cells) or "autograd"

    def __post_init__(self):
        check_int("TrainConfig.n_steps", self.n_steps, 0)
        check_number("TrainConfig.lr", self.lr, 0, low_open=True)
        check_number("TrainConfig.clip", self.clip, 0, none=True)  # a gradient norm; None or 0: off
        check_bool("TrainConfig.train_h0", self.train_h0)
        check_int("TrainConfig.record_every", self.record_every, 0, note=" (0: never)")
        check_int("TrainConfig.record_k", self.record_k, 1, none=True)
        check_int("TrainConfig.checkpoint", self.checkpoint, 0, note=" (a segment length in steps; 0: off)")
        check_choice("TrainConfig.bptt", self.bptt, ("fast", "autograd"))

    def recorded_k(self, floss_k: int, state_size: int) -> int:
        """How many exponents ``train`` records: record_k (at most the state size), else min(FlossConfig.k, S)."""
        if self.record_k is None:
            return min(floss_k, state_size)
        return check_int("TrainConfig.record_k", self.record_k, 1, state_size, note=" (the state size)")
