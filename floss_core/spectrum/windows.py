"""The window and orthonormalization loop of the fast engines, for any cell (see ``spectrum.fast`` for the method).

A cell's engine gives ``push(t, out=None)``, which returns the rows ``Y_t^T = (J_t Q_t)^T`` (M, k, S) of one tangent
step from the stored basis ``QTs[t]`` (written into ``out`` when given), and this loop does the rest:

* windows of steps without QR, each closed by a guarded Cholesky QR (``spectrum.qr``) whose orthonormal rows go to
  ``QTs[t + 1]``; with an integer ``t_ons`` the reference's schedule (``Plan.schedule``), with ``t_ons="auto"`` each
  window's length from the stretching measured in the previous one (aiming its basis' condition number at
  ``Plan.kappa`` and its largest ``|log|R_ii||`` at half the exponent range);
* a window whose basis became too ill-conditioned (Cholesky failure or failed probe after two passes) or over- or
  underflowed (``inputs.window_collapsed``) is rolled back and redone with a QR every step;
* in single precision, factors that fail the guard are redone in double precision first (from then on directly in
  double where most needed it), then by Householder.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .inputs import window_collapsed, window_limits
from .qr import cholesky_qr_rows, default_tol, householder_fix, make_probe

__all__ = ["Plan", "run_windows"]


@dataclass
class Plan:
    """What the autograd Function needs besides tensors."""
    n_transient: int
    schedule: list | None  # per step: whether the reference orthonormalizes after it; None for t_ons="auto"
    detached: bool
    orth: str  # "cholesky" or "householder"
    tol: float  # accepted orthogonality error
    kappa: float  # "auto": aim each window's basis condition number at this
    max_window: int  # "auto": longest window
    keep_diagnostics: bool
    diag: dict = field(default_factory=dict)  # filled by forward: qr_at, log_r, states (for error messages)
    keep_windows: bool = False  # diag also receives every QR window's log|R_ii| and end step, the final state and basis


def run_windows(push, QTs: torch.Tensor, plan: Plan):
    """Push the basis ``QTs[0]`` (M, k, S) through all T steps, orthonormalizing in windows.

    ``push(t, out=None)`` returns ``(J_t Q_t)^T`` (M, k, S) for the rows ``QTs[t]``; QTs (T + 1, M, k, S) receives
    the basis entering every step (orthonormal rows right after a QR, the window's un-orthonormalized rows inside
    it). Returns ``(lam (M, k), Ls, qr_at)``: the exponents, ``{step: L = R^T (M, k, k)}`` of every QR and the per-step
    flags of where one was done; ``plan.diag`` receives "n_qr" (and "qr_at" and "log_r" with ``keep_diagnostics``:
    log|R_ii| per QR after the transient, (M, k) each, reshaped by the caller; with ``keep_windows`` also
    "window_ends", the steps of the QRs after the transient, and "window_log_r", their log|R_ii| (M, k) each)."""
    T, M, k = QTs.shape[0] - 1, QTs.shape[1], QTs.shape[2]
    dtype, device = QTs.dtype, QTs.device
    n_tr = plan.n_transient
    QTv = QTs.unbind(0)  # the per-step views, made once
    probe, probe64 = make_probe(k, dtype, device), make_probe(k, torch.float64, device)
    tol64, in_double = default_tol(torch.float64), [False]
    qr_at = [False] * T
    Ls = {}  # step -> L = R^T (M, k, k)
    log_r = {}  # step -> log|R_ii| (M, k), steps >= n_transient only
    mandatory = sorted({T - 1} | ({n_tr - 1} if n_tr > 0 else set()))
    window = 1  # "auto": the next window's length
    scale = window_limits(dtype)[1]  # "auto": no window grows or shrinks the basis beyond this many nats

    def orthonormalize(t, YT, window_len):
        """QR of Y after step t into QTs[t + 1]; False if a window's basis was too ill-conditioned."""
        if plan.orth == "householder":
            Q, R = torch.linalg.qr(YT.mT)
            QT, L = Q.mT, R.mT
            if window_len > 1 and window_collapsed(torch.diagonal(L, dim1=-2, dim2=-1).abs().log(), YT.dtype):
                return False  # no guard here: the reference's test of the window's stretching
        elif in_double[0]:  # single precision whose factors mostly needed double precision so far
            QT, L, ok = cholesky_qr_rows(YT.double(), tol64, probe64)
            QT, L = QT.to(YT.dtype), L.to(YT.dtype)
            if not bool(ok.all()):
                if window_len > 1:
                    return False
                householder_fix(YT, QT, L, ok)
        else:
            QT, L, ok = cholesky_qr_rows(YT, plan.tol, probe)
            if not bool(ok.all()):
                if window_len > 1:
                    return False
                if YT.dtype != torch.float64:  # in single precision, first retry in double
                    bad = (~ok).nonzero().flatten()
                    QT64, L64, ok64 = cholesky_qr_rows(YT[bad].double(), tol64, probe64)
                    QT.index_copy_(0, bad, QT64.to(YT.dtype))
                    L.index_copy_(0, bad, L64.to(YT.dtype))
                    ok = ok.index_copy(0, bad, ok64)
                    in_double[0] = 2 * bad.numel() > M  # most needed it: go to double directly from now on
                if not bool(ok.all()):
                    householder_fix(YT, QT, L, ok)
        if plan.orth != "householder" and window_len > 1 and \
                window_collapsed(torch.diagonal(L, dim1=-2, dim2=-1).abs().log(), YT.dtype):
            return False  # the window over- or underflowed (or stretched) where the guard could not tell
        QTs[t + 1] = QT
        Ls[t] = L
        qr_at[t] = True
        if t >= n_tr:
            log_r[t] = torch.diagonal(L, dim1=-2, dim2=-1).abs().log()  # (M, k)
        return True

    t0 = 0
    while t0 < T:
        # the window [t0, t1]: no QR inside it, one after its last step
        if plan.schedule is not None:
            t1 = next(t for t in range(t0, T) if plan.schedule[t])
        else:
            t1 = min(t0 + window - 1, next(t for t in mandatory if t >= t0))
        for t in range(t0, t1):
            push(t, QTv[t + 1])
        if not orthonormalize(t1, push(t1), t1 - t0 + 1):  # roll back: a QR after every step of the window
            for t in range(t0, t1 + 1):
                orthonormalize(t, push(t), 1)
            window = max(1, (t1 - t0 + 1) // 2)
        elif plan.schedule is None:  # the next window from this one's stretching
            ld = torch.diagonal(Ls[t1], dim1=-2, dim2=-1).abs().log()  # (M, k)
            n = t1 - t0 + 1
            growth = float((ld.amax(-1) - ld.amin(-1)).amax()) / n  # log kappa per step (NaN/inf: one step)
            size = float(ld.abs().amax()) / n  # |log stretch| per step
            fit = min(int(math.log(max(plan.kappa, 1.0)) / max(growth, 1e-12)),
                      int(0.5 * scale / max(size, 1e-12))) if growth < math.inf and size < math.inf else 1
            window = max(1, min(plan.max_window, fit))  # aimed at half the range: few windows need a redo
        t0 = t1 + 1

    lam = torch.stack([log_r[t] for t in sorted(log_r)]).sum(0) / (T - n_tr)  # (M, k)
    if plan.keep_diagnostics:
        plan.diag.update(qr_at=qr_at, log_r=[log_r[t] for t in sorted(log_r)])
    if plan.keep_windows:  # the finite-time stretchings (spectrum.window_report)
        plan.diag.update(window_ends=sorted(log_r), window_log_r=[log_r[t] for t in sorted(log_r)])
    plan.diag["n_qr"] = sum(qr_at)
    return lam, Ls, qr_at
