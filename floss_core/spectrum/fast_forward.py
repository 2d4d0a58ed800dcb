"""The forward of the fast engine for one sub-batch of TanhRNN networks (see ``spectrum.fast`` for the method).

1. The state trajectory first, with ``TanhRNN``'s own step (``voltage_step``: the same bits as the reference, hence
   the same exponents for chaotic networks), then the tangent recursion on the stored ``d_t = 1 - tanh(h_t)^2``.
2. Orthonormalization by the guarded Cholesky QR of ``spectrum.qr``, in windows: between two QRs only the product of
   the window's Jacobians matters. A window whose basis became too ill-conditioned (Cholesky failure or failed probe
   after two passes) is rolled back and redone with a QR every step. With ``t_ons="auto"`` each window's length is
   chosen from the stretching measured in the previous one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ..cells.tanh import voltage_step
from .inputs import window_collapsed, window_limits
from .qr import cholesky_qr_rows, default_tol, householder_fix, make_probe
from .runtime import take_buffer

__all__ = ["Plan", "forward_group"]


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


def forward_group(W, U, b, h0, X, Q0, plan: Plan):
    """The forward of one sub-batch of networks: (exponents (E, B, k), what its backward needs)."""
    E, B, T, _ = X.shape
    N, k, M = W.shape[-1], Q0.shape[-1], E * B
    n_tr = plan.n_transient
    kw = dict(dtype=W.dtype, device=W.device)

    # 1. the state trajectory, with TanhRNN.step's own operations (same bits as the reference)
    r_all = torch.empty(T, E, B, N, **kw)  # tanh(h_t), t = 0..T-1
    states = []
    h = h0
    for t, x in enumerate(X.unbind(2)):
        r = torch.tanh(h, out=r_all[t])
        h = voltage_step(r, x, W, U, b)  # (E, B, N)
        states.append(h)
    D = (1 - r_all * r_all).reshape(T, M, 1, N)  # d_t = 1 - tanh(h_t)^2 (as step_tangent computes it), as a row

    # 2. the tangent recursion on rows: QTs[t] = Q^T entering step t (orthonormal rows right after a QR)
    Wb = W.unsqueeze(1).expand(E, B, N, N).reshape(M, N, N)  # one W per trajectory (a view when B = 1)
    # (M, N, N): as the bmm's second operand a transposed view costs 20-35% more at k = 75; copied from k = 16 on,
    # where both give the same bits (measured at N = 80); below, MKL sums small products (k = 1-3) in another order
    # for the two layouts, and the committed figures were computed with the view
    WbT = Wb.mT.contiguous() if k >= 16 else Wb.mT
    QTs = take_buffer((T + 1, M, k, N), W.dtype, W.device)
    QTs[0] = Q0.reshape(M, N, k).mT
    probe, probe64 = make_probe(k, W.dtype, W.device), make_probe(k, torch.float64, W.device)
    tol64, in_double = default_tol(torch.float64), [False]
    qr_at = [False] * T
    Ls = {}  # step -> L = R^T (M, k, k)
    log_r = {}  # step -> log|R_ii| (M, k), steps >= n_transient only
    mandatory = sorted({T - 1} | ({n_tr - 1} if n_tr > 0 else set()))
    window = 1  # "auto": the next window's length
    scale = window_limits(W.dtype)[1]  # "auto": no window grows or shrinks the basis beyond this many nats

    PT = torch.empty(M, k, N, **kw)  # (d_t Q_t)^T of the current step
    QTv, Dv = QTs.unbind(0), D.unbind(0)  # the per-step views, made once

    def push(t, out=None):  # Y_t^T = (d_t Q_t)^T W^T
        return torch.bmm(torch.mul(QTv[t], Dv[t], out=PT), WbT, out=out)

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
        plan.diag.update(qr_at=qr_at, log_r=[log_r[t].reshape(E, B, k) for t in sorted(log_r)], states=states)
    plan.diag["n_qr"] = sum(qr_at)

    saved = dict(r_all=r_all, D=D, QTs=QTs, Ls=Ls, qr_at=qr_at, plan=plan, Wb=Wb)
    return lam.reshape(E, B, k), saved
