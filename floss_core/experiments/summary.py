"""Summaries of a delay sweep: success, steps to criterion and final accuracy per condition and delay."""
from __future__ import annotations

import torch

from ..diagnostics import criterion_outcome

__all__ = ["summarize_delay_sweep"]


def summarize_delay_sweep(result: dict, task: str, *, threshold: float = 0.9, window: int = 50,
                          compare=None) -> dict:
    """Success, steps to criterion and final accuracy per condition for one task of a ``delay_sweep`` result.

    Success: the running mean (``window`` steps, at most the training steps) of the test accuracy reaches
    ``threshold`` and stays above it until the end; steps_to_criterion counts training steps (-1: never); final
    accuracy: the mean over the last 100 steps. A network whose training failed (``failed``) is no success and has a
    NaN final accuracy (``diagnostics.criterion_outcome``).
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
    j = result["tasks"].index(task)
    out = {"success": {}, "steps_to_criterion": {}, "final_accuracy": {}, "failed": {}, "smoothed_accuracy": {}}
    for c in conditions:
        failed = result[c]["failed"][j].to(torch.bool)  # (D, S)
        o = criterion_outcome(result[c]["accuracy"][:, j], failed, threshold=threshold, window=window)  # (steps, D, S)
        for key in ("success", "steps_to_criterion", "final_accuracy"):
            out[key][c] = o[key]
        out["failed"][c], out["smoothed_accuracy"][c] = failed, o["smoothed"]
    rates = torch.stack([out["success"][c].float().mean(1) for c in compare])  # (C, D)
    gap = rates.max(0).values - rates.min(0).values  # (D,)
    delays = torch.tensor([float(d) for d in result["delays"]])
    out["hardest_informative_delay_index"] = int(torch.where(gap == gap.max(), delays, -torch.inf).argmax())
    return out
