"""Summaries of a delay sweep: success, steps to criterion and final accuracy per condition and delay."""
from __future__ import annotations

import torch

from ..diagnostics import final_accuracy, running_mean, steps_to_criterion

__all__ = ["summarize_delay_sweep"]


def summarize_delay_sweep(result: dict, task: str, *, threshold: float = 0.9, window: int = 50,
                          compare=None) -> dict:
    """Success, steps to criterion and final accuracy per condition for one task of a ``delay_sweep`` result.

    Success: the running mean (``window`` steps) of the test accuracy reaches ``threshold`` and stays above it until
    the end (``diagnostics.steps_to_criterion``); steps_to_criterion counts training steps (-1: never).
    Returns {"success", "steps_to_criterion", "final_accuracy": {condition: (D, S)}, "smoothed_accuracy":
    {condition: (steps - window + 1, D, S)}, "hardest_informative_delay_index": the delay where the success rates
    of the conditions in ``compare`` (default: all) differ most (ties: the longest such delay)}."""
    if task not in result["tasks"]:
        raise ValueError(f"task {task!r} is not in this sweep: {result['tasks']}")
    j = result["tasks"].index(task)
    out = {"success": {}, "steps_to_criterion": {}, "final_accuracy": {}, "smoothed_accuracy": {}}
    for c in result["conditions"]:
        acc = result[c]["accuracy"][:, j]  # (steps, D, S)
        n, D, S = acc.shape
        w = min(window, n)
        sm = running_mean(acc, w)  # (n - w + 1, D, S)
        steps = steps_to_criterion(sm.reshape(sm.shape[0], D * S), threshold, steps_dim=0).reshape(D, S)
        steps = torch.where(steps >= 0, steps + w - 1, steps)
        out["success"][c] = steps >= 0
        out["steps_to_criterion"][c] = steps
        out["final_accuracy"][c] = final_accuracy(acc)
        out["smoothed_accuracy"][c] = sm
    rates = torch.stack([out["success"][c].float().mean(1) for c in (compare or result["conditions"])])  # (C, D)
    gap = rates.max(0).values - rates.min(0).values  # (D,)
    best = torch.nonzero(gap == gap.max()).flatten()
    out["hardest_informative_delay_index"] = int(best[-1])
    return out
