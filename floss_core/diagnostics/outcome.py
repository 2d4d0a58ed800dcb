"""The outcome of training: when a run reached (and kept) a target accuracy, its final accuracy, running means.

Accuracies come as ``History.accuracy``, shape (n_steps, E): training steps first, networks second. The functions
here take a ``History`` itself, or a tensor together with ``steps_dim``, the dimension that runs over training steps
(0 for ``History.accuracy``), so that a transposed tensor cannot silently give one value per step.
"""
from __future__ import annotations

import torch

from ..checks import check_int, check_number

__all__ = ["steps_to_criterion", "success", "running_mean", "final_accuracy", "criterion_outcome"]


def _steps_last(accuracy, steps_dim) -> torch.Tensor:
    """(E, n_steps) from a History or a 2-D tensor with its steps dimension named."""
    if hasattr(accuracy, "accuracy") and hasattr(accuracy, "failed"):  # a History
        accuracy, steps_dim = accuracy.accuracy, 0 if steps_dim is None else steps_dim
    accuracy = torch.as_tensor(accuracy)
    if accuracy.dim() != 2 or min(accuracy.shape) < 1:
        raise ValueError(f"accuracy must be 2-D, (n_steps, E) as History.accuracy or (E, n_steps), with at least "
                         f"one step and one network, got shape {tuple(accuracy.shape)}")
    if steps_dim is None:
        raise ValueError(f"accuracy is a tensor of shape {tuple(accuracy.shape)}: say which dimension runs over "
                         "training steps, steps_dim=0 for History.accuracy (n_steps, E) or steps_dim=1 for "
                         "(E, n_steps)")
    steps_dim = check_int("steps_dim", steps_dim, 0, 1)
    return accuracy if steps_dim == 1 else accuracy.T


def steps_to_criterion(accuracy, threshold: float = 0.95, *, steps_dim: int | None = None) -> torch.Tensor:
    """The first training step from which the accuracy stays >= threshold until the end, per network.

    accuracy: a ``History``, or a tensor of accuracies (a NaN counts as below the threshold) whose dimension
        ``steps_dim`` runs over training steps and the other over networks.
    threshold: in (0, 1].
    Returns a long tensor (E,): the step index, or -1 where the final accuracy is below the threshold.
    """
    threshold = check_number("threshold", threshold, 0, 1, low_open=True)
    accuracy = _steps_last(accuracy, steps_dim)  # (E, n_steps)
    n = accuracy.shape[1]
    below = ~(accuracy >= threshold)  # (E, n_steps)
    steps = torch.arange(n, device=accuracy.device)
    first = torch.where(below, steps, -1).amax(1) + 1  # (E,): one past the last step below the threshold
    return torch.where(first < n, first, -1).long()


def success(accuracy, threshold: float = 0.95, *, steps_dim: int | None = None) -> torch.Tensor:
    """Whether each network ends above the threshold (``steps_to_criterion >= 0``): bool (E,)."""
    return steps_to_criterion(accuracy, threshold, steps_dim=steps_dim) >= 0


def running_mean(x: torch.Tensor, window: int) -> torch.Tensor:
    """Running mean over the first (step) dimension: (n, ...) -> (n - window + 1, ...)."""
    check_int("window", window, 1, x.shape[0], note=" (the number of steps)")
    c = torch.cat([torch.zeros_like(x[:1]), x.cumsum(0)])
    return (c[window:] - c[:-window]) / window


def final_accuracy(accuracy: torch.Tensor, last: int = 100) -> torch.Tensor:
    """Mean accuracy over the last ``last`` training steps: (steps, ...) -> (...)."""
    check_int("last", last, 1)
    return accuracy[-min(last, accuracy.shape[0]):].mean(0)


def criterion_outcome(accuracy: torch.Tensor, failed: torch.Tensor, *, threshold: float = 0.9, window: int = 50,
                      last: int = 100) -> dict:
    """The figures' criteria for accuracies (steps, ...) of networks shaped like ``failed`` (...):

    "smoothed" (steps - w + 1, ...): the running mean over w = min(window, steps) steps (quick runs may train for
    fewer steps than the window); "steps_to_criterion" (...): the training step from which it stays >= threshold
    to the end (-1: never); "success" (...): whether there is one; "final_accuracy" (...): the mean over the
    ``last`` steps. A network whose training failed (non-finite loss or gradient: frozen) is no success, whatever
    its frozen accuracy, and has no steps to criterion (-1) and a NaN final accuracy, as in the author's code,
    where it would have gone on as NaN."""
    check_int("window", window, 1)
    failed = failed.to(torch.bool)
    n, shape = accuracy.shape[0], accuracy.shape[1:]
    if failed.shape != shape:
        raise ValueError(f"failed must have the networks' shape {tuple(shape)}, got {tuple(failed.shape)}")
    w = min(window, n)
    smoothed = running_mean(accuracy, w)  # (n - w + 1, ...)
    steps = steps_to_criterion(smoothed.reshape(n - w + 1, -1), threshold, steps_dim=0).reshape(shape)
    steps = torch.where((steps >= 0) & ~failed, steps + w - 1, -1)
    return {"smoothed": smoothed, "steps_to_criterion": steps, "success": steps >= 0,
            "final_accuracy": torch.where(failed, torch.nan, final_accuracy(accuracy, last))}
