"""floss_core: gradient flossing (Engelken, NeurIPS 2023) for ensembles of recurrent networks in PyTorch.

The public API is what this module re-exports; everything else may change.
"""
from .config import FlossConfig, FlossSchedule, ModelConfig, TrainConfig
from .flossing import FlossResult, floss, flossing_loss, flossing_spectrum
from .lyapunov import lyapunov_spectrum, tangent_step
from .fast import fast_lyapunov_spectrum
from .gated import GRU, LSTM
from .models import TanhRNN
from . import adapters
from .tasks import TASKS, TaskBatch, TaskConfig, delay_from_author, make_batch
from .training import History, rollout, task_loss, train

__all__ = [
    "TanhRNN", "LSTM", "GRU", "adapters", "lyapunov_spectrum", "fast_lyapunov_spectrum", "tangent_step",
    "ModelConfig", "FlossConfig", "FlossSchedule", "TrainConfig", "TaskConfig",
    "TASKS", "TaskBatch", "make_batch", "delay_from_author",
    "floss", "flossing_loss", "flossing_spectrum", "FlossResult",
    "train", "History", "rollout", "task_loss",
]
__version__ = "0.1.0"
