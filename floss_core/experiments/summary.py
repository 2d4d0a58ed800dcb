"""Summaries of a delay sweep: success, steps to criterion and final accuracy per condition and delay."""
from __future__ import annotations

import torch

from ..checks import check_int
from ..diagnostics import final_accuracy, running_mean, steps_to_criterion

__all__ = ["summarize_delay_sweep"]


def summarize_delay_sweep(result: dict, task: str, *, threshold: float = 0.9, window: int = 50,
                          compare=None) -> dict:
    """Success, steps to criterion and final accuracy per condition for one task of a ``delay_sweep`` result.

    Success: the running mean (``window`` steps, at most the training steps) of the test accuracy reaches
    ``threshold`` and stays above it until the end (``diagnostics.steps_to_criterion``); steps_to_criterion counts
    training steps (-1: never). A network whose training failed (non-finite loss or gradient: frozen, ``failed``) is
    not a success, whatever its frozen accuracy, and has no steps to criterion (-1) and no final accuracy (NaN), as
    in the author's code, where such a network would go on as NaN.
    Returns {"success", "steps_to_criterion", "final_accuracy", "failed": {condition: (D, S)}, "smoothed_accuracy":
    {condition: (steps - w + 1, D, S)} with w = min(window, steps), "hardest_informative_delay_index": the delay
    where the success rates of the conditions in ``compare`` (default: all) differ most (ties: the longest such
    delay)}."""
    if task not in result["tasks"]:
        raise ValueError(f"task {task!r} is not in this sweep: {result['tasks']}")
    conditions = list(result["conditions"])
    compare = conditions if compare is None else list(compare)
    unknown = [c for c in compare if c not in conditions]
    if not compare or unknown:
        raise ValueError(f"compare must name some of this sweep's conditions {conditions}, got {compare}")
    check_int("window", window, 1)
    j = result["tasks"].index(task)
    out = {"success": {}, "steps_to_criterion": {}, "final_accuracy": {}, "failed": {}, "smoothed_accuracy": {}}
    for c in conditions:
        acc = result[c]["accuracy"][:, j]  # (steps, D, S)
        n, D, S = acc.shape
        w = min(window, n)  # quick runs may train for fewer steps than the window
        failed = result[c]["failed"][j].to(torch.bool)  # (D, S)
        sm = running_mean(acc, w)  # (n - w + 1, D, S)
        steps = steps_to_criterion(sm.reshape(sm.shape[0], D * S), threshold, steps_dim=0).reshape(D, S)
        steps = torch.where((steps >= 0) & ~failed, steps + w - 1, -1)
        out["success"][c] = steps >= 0
        out["steps_to_criterion"][c] = steps
        out["final_accuracy"][c] = torch.where(failed, torch.nan, final_accuracy(acc))
        out["failed"][c] = failed
        out["smoothed_accuracy"][c] = sm
    rates = torch.stack([out["success"][c].float().mean(1) for c in compare])  # (C, D)
    gap = rates.max(0).values - rates.min(0).values  # (D,)
    delays = torch.tensor([float(d) for d in result["delays"]])
    out["hardest_informative_delay_index"] = int(torch.where(gap == gap.max(), delays, -torch.inf).argmax())
    return out
