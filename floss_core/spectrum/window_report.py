"""What the engines report through ``lyapunov_spectrum(..., info=...)`` about their QR windows: the finite-time
stretchings behind the exponents, and where a continuation starts.

Every orthonormalization after the transient closes a *window* of steps (one step with a QR every step, several with
``t_ons > 1`` or ``"auto"``); its ``log|R_ii|`` is the stretching of the i-th Gram-Schmidt direction over that window,
and the exponents are their sum over all windows divided by the averaged steps. The keys an ``info`` dict receives
besides "n_qr":

    "log_r"         (n, E, B, k) log|R_ii| of every window after the transient (detached). The sub-batches of the fast
                    engines choose their windows independently, so the n rows are the union of their QR steps; a row
                    where a network's sub-batch did no QR holds zeros for that network (and ``window_mask`` False).
    "window_ends"   (n,) int64 (CPU): the step (0-based, counted from the start of the inputs) after which each QR came.
    "window_mask"   (n, E) bool: whether network e's sub-batch did that QR.
    "final_state"   (E, B, S) the state after the last step, and
    "final_basis"   (E, B, S, k) the orthonormal basis after the last QR (the last step always has one): passed as
                    ``h0`` and ``Q0`` with ``n_transient=0``, they continue the trajectories where they stopped.

For every network, ``log_r[window_mask[:, e], e].sum(0) / (T - n_transient)`` is its exponents (up to roundoff: the
engines sum in their own order). Collecting them costs no computation: the engines compute these numbers anyway.
"""
from __future__ import annotations

import torch

__all__ = ["WINDOW_KEYS", "engine_window_report", "reference_window_report"]

WINDOW_KEYS = ("log_r", "window_ends", "window_mask", "final_state", "final_basis")


def engine_window_report(plans: list, groups: list, E: int, B: int, k: int) -> dict:
    """The ``info`` keys of a fast engine's run from its sub-batches' plans (``windows.Plan`` with ``keep_windows``;
    ``groups`` the slices of E they ran)."""
    steps = sorted({t for pl in plans for t in pl.diag["window_ends"]})
    row = {t: i for i, t in enumerate(steps)}
    first = plans[0].diag["window_log_r"]
    ref = first[0] if first else plans[0].diag["final_basis"]
    log_r = torch.zeros(len(steps), E, B, k, dtype=ref.dtype, device=ref.device)  # (n, E, B, k)
    mask = torch.zeros(len(steps), E, dtype=torch.bool)  # (n, E)
    for pl, g in zip(plans, groups):
        rows = [row[t] for t in pl.diag["window_ends"]]
        if rows:
            idx = torch.tensor(rows)
            log_r[idx.to(ref.device), g] = torch.stack(pl.diag["window_log_r"]).reshape(len(rows), -1, B, k)
            mask[idx, g] = True
    final_state = torch.cat([pl.diag["final_state"] for pl in plans]) if len(plans) > 1 else plans[0].diag[
        "final_state"]
    final_basis = torch.cat([pl.diag["final_basis"] for pl in plans]) if len(plans) > 1 else plans[0].diag[
        "final_basis"]
    return {"log_r": log_r, "window_ends": torch.tensor(steps, dtype=torch.int64), "window_mask": mask,
            "final_state": final_state.detach(), "final_basis": final_basis.detach()}


def reference_window_report(log_r: list, final_state: torch.Tensor, final_basis: torch.Tensor) -> dict:
    """The ``info`` keys of the reference engine's run from its ``[(step, log|R_ii| (E, B, k)), ...]`` after the
    transient (every network has the same QR steps), its last state (E, B, S) and last basis (E, B, S, k)."""
    stacked = torch.stack([lr.detach() for _, lr in log_r])  # (n, E, B, k)
    return {"log_r": stacked, "window_ends": torch.tensor([t for t, _ in log_r], dtype=torch.int64),
            "window_mask": torch.ones(stacked.shape[:2], dtype=torch.bool),
            "final_state": final_state.detach(), "final_basis": final_basis.detach()}
