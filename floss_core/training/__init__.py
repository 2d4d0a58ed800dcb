"""Training ensembles by backpropagation through time, with gradient flossing before and/or during training:
``config`` (TrainConfig, FlossSchedule), ``loss`` (the task loss of one step), ``loop`` (``train`` and its History)."""
from .config import FlossSchedule, TrainConfig
from .loop import History, train
from .loss import rollout, sample_task, task_loss

__all__ = ["TrainConfig", "FlossSchedule", "History", "train", "rollout", "sample_task", "task_loss"]
