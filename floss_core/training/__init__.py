"""Training ensembles by backpropagation through time, with gradient flossing before and/or during training:
``config`` (TrainConfig, FlossSchedule), ``loss`` (the task loss of one step), ``tanh_bptt`` and ``gated_bptt`` (its
hand-written BPTT for TanhRNN, and for LSTM and GRU ensembles, with ``gated_steps`` their per-step kernels: the
default where they apply), ``loop`` (``train`` and its History)."""
from .config import FlossSchedule, TrainConfig
from .loop import History, TrainState, train
from .loss import rollout, sample_task, task_loss

__all__ = ["TrainConfig", "FlossSchedule", "History", "TrainState", "train", "rollout", "sample_task", "task_loss"]
