"""floss_core: gradient flossing (Engelken, NeurIPS 2023) for ensembles of recurrent networks in PyTorch.

The public API is what this module re-exports; everything else may change. The package's layers, each importing
only from those before it:

    _source                         the hash of the computing code at import (what the cache keys results by)
    checks, rng, tasks, ensemble    argument checks, random draws, task batches, per-network training helpers
    cells                           the cell protocol, TanhRNN, LSTM, GRU, torch.nn modules, ModelConfig
    spectrum                        lyapunov_spectrum: the reference and the fast engine; spectrum_estimate (standard
                                    errors, finite-time exponents), covariant_vectors (CLVs)
    flossing                        FlossConfig, the flossing loss, floss
    training                        TrainConfig, FlossSchedule, train
    diagnostics, adapters           gradient norms, long-term Jacobians, training outcome; spectra of torch modules
    experiments                     the computation behind each figure
    repro                           cache, plotting and the notebook runner
"""
from . import _source  # noqa: F401 - first: the hash of the code as imported, which the cache keys results by
from . import adapters
from .cells import GRU, LSTM, ModelConfig, TanhRNN
from .flossing import FlossConfig, FlossResult, floss, flossing_loss, flossing_spectrum
from .spectrum import (CovariantVectors, SpectrumEstimate, clv_angles, covariant_vectors, fast_lyapunov_spectrum,
                       kaplan_yorke_dimension, lyapunov_spectrum, positive_exponent_sum, spectrum_estimate,
                       subspace_angle, tangent_step)
from .tasks import TASKS, TaskBatch, TaskConfig, delay_from_author, make_batch
from .training import FlossSchedule, History, TrainConfig, TrainState, rollout, task_loss, train

__all__ = [
    "TanhRNN", "LSTM", "GRU", "adapters", "lyapunov_spectrum", "fast_lyapunov_spectrum", "tangent_step",
    "ModelConfig", "FlossConfig", "FlossSchedule", "TrainConfig", "TaskConfig",
    "TASKS", "TaskBatch", "make_batch", "delay_from_author",
    "floss", "flossing_loss", "flossing_spectrum", "FlossResult",
    "train", "History", "TrainState", "rollout", "task_loss",
    "spectrum_estimate", "SpectrumEstimate", "kaplan_yorke_dimension", "positive_exponent_sum",
    "covariant_vectors", "CovariantVectors", "clv_angles", "subspace_angle",
]
__version__ = "0.1.0"
