"""The reference engine: autograd through every step and every ``torch.linalg.qr`` (any cell).

It is the definition the fast engine and the tests are checked against: push the basis Q (E, B, S, k) through the
step Jacobians, ``Q, R = qr(Q)`` after every step of the QR schedule, and average ``log|R_ii|`` after the transient.

A window of ``t_ons`` steps without QR multiplies the basis by the window's Jacobians; when their stretching ratio
exceeds what the precision resolves, the later columns are lost in roundoff ("the basis collapses") and the exponents
come out wrong; a long enough window also over- or underflows. The engine checks every window's QR
(``inputs.window_collapsed``): where ``max_i log|R_ii| - min_i log|R_ii|`` exceeds half the digits of the precision
(``log(1 / eps) / 2``, 18 nats in float64), or some ``|log|R_ii||`` exceeds half the exponent range (44 nats in
float32) or is infinite, the window is redone with a QR after every step, so a large ``t_ons`` gives the ``t_ons = 1``
exponents, as the fast engine does, never a collapsed basis.
"""
from __future__ import annotations

import torch

from .inputs import qr_schedule, window_collapsed
from .tangent import tangent_step

__all__ = ["reference_spectrum"]


def reference_spectrum(model, inputs: torch.Tensor, h: torch.Tensor, Q: torch.Tensor, *, n_transient: int,
                       t_ons: int, detached: bool, diag: dict | None = None):
    """Exponents (E, B, k) from inputs (E, B, T, I), start h (E, B, S) and orthonormal Q (E, B, S, k).

    Returns ``(lam, states, log_r)``: the states after every step and ``[(t, log|diag R_t|) ...]`` after the
    transient, kept for the error report. ``diag``, if a dict, receives "final_basis", the basis after the last QR
    (E, B, S, k)."""
    E, B, T, _ = inputs.shape
    if detached:
        h = h.detach()
    xs = inputs.unbind(2)  # T x (E, B, I): unbind once, never index inside the loop
    qr_after = qr_schedule(T, n_transient, t_ons)
    log_r = []  # (step, (E, B, k)) per QR after the transient
    states, entering = [], []  # (E, B, S) after / before each step of the current window
    t0, Q_start = 0, Q  # the current window starts at step t0 with basis Q_start
    for t in range(T):
        entering.append(h)
        h, Q = _step(model, h, xs[t], Q, detached)
        states.append(h)
        if not qr_after[t]:
            continue
        Q_next, R = torch.linalg.qr(Q)  # (E, B, S, k), (E, B, k, k)
        ld = torch.diagonal(R, dim1=-2, dim2=-1).abs().log()  # (E, B, k)
        if t > t0 and window_collapsed(ld, Q.dtype):
            Q_next = Q_start  # collapsed: redo the window with a QR after every step
            for s in range(t0, t + 1):
                _, Q_next = _step(model, entering[s - t0], xs[s], Q_next, detached)
                Q_next, R = torch.linalg.qr(Q_next)
                if s >= n_transient:
                    log_r.append((s, torch.diagonal(R, dim1=-2, dim2=-1).abs().log()))
        elif t >= n_transient:
            log_r.append((t, ld))
        Q = Q_start = Q_next
        t0, entering = t + 1, []
    lam = torch.stack([lr for _, lr in log_r]).sum(0) / (T - n_transient)  # (E, B, k)
    if diag is not None:
        diag["final_basis"] = Q
    return lam, states, log_r


def _step(model, h, x, Q, detached: bool):
    """(h_next, J Q): in detached mode the state carries no gradient, only the Jacobian's parameters do."""
    if not detached:
        return tangent_step(model, h, x, Q)
    with torch.no_grad():
        h_next = model.step(h, x)
    return h_next, tangent_step(model, h, x, Q)[1]
