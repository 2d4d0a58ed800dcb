"""A fast engine for the differentiable Lyapunov spectrum of TanhRNN ensembles (forward and backward).

``fast_lyapunov_spectrum`` returns the same exponents as ``lyapunov_spectrum`` (the reference, kept for the tests to
compare against) and the same gradients, computed differently:

1. **The state trajectory first**, with exactly the reference's operations (so its bits, and hence the exponents of
   chaotic networks, are the reference's), then the tangent recursion on the stored ``d_t = 1 - tanh(h_t)^2``.
2. **Orthonormalization from batched matmuls** instead of LAPACK's small-matrix Householder QR (which runs near
   5-10 GFLOP/s at these sizes against ~30-100 for matmul): Cholesky QR, ``G = Y^T Y = R^T R``, ``Q = Y R^{-1}``,
   with a second pass (CholeskyQR2) where the first one lost orthogonality. A guard never lets a bad factor through:
   every factor's orthogonality is measured (``|q_i|^2 - 1`` and ``|Q^T Q v - v|`` for a fixed random v); where the
   Cholesky fails or the error exceeds the tolerance after two passes, that trajectory's step is redone (in float32
   first by Cholesky QR in float64, then) by Householder ``torch.linalg.qr``. Errors of the accepted factors do not
   accumulate in the exponents: ``Y = Q R`` holds to roundoff for any upper triangular R used, so the log-diagonals
   telescope and only the orthogonality of the last basis enters (as ~tol / T).
3. **Fewer orthonormalizations where that is exact.** Between two QRs the exponents only need the product of the
   R factors, and ``QR(J_2 J_1 Q) = (Q'', R'' R')`` whenever ``J_1 Q = Q' R'`` and ``J_2 Q' = Q'' R''``: skipping a QR
   changes nothing but roundoff, as long as the un-orthonormalized basis stays well conditioned. ``t_ons="auto"``
   picks each window's length from the measured stretching (largest over smallest ``|R_ii|`` of the last window),
   and a window whose basis turned out too ill-conditioned (Cholesky failure or failed probe after two passes) is
   rolled back and redone with a QR every step. An integer ``t_ons`` follows the reference's schedule, with the
   same rollback: where the reference's basis would collapse (large t_ons in a chaotic net), this engine returns
   the t_ons = 1 answer instead of a wrong one.
4. **One autograd node for the whole recursion** (a custom ``torch.autograd.Function``) instead of autograd through
   every step. It stores the tangent bases and R factors, and back-propagates by hand:

   * through each QR ``Y = Q R`` with loss weights w on ``log|R_ii|`` (``R_bar = diag(w / R_ii)``):
     ``Y_bar = (Q_bar - Q S) R^{-T}`` with ``S = sym(triu(Q^T Q_bar)) - diag(w)``, where ``sym(U) = U + triu(U, 1)^T``
     (the reduced-QR backward that torch uses, specialised to a diagonal R_bar; ``qr_log_diag_backward``);
   * through ``Y = W diag(d) Q``: ``W_bar += Y_bar (d Q)^T``, ``Q_bar = d W^T Y_bar``,
     ``d_bar = rowsum(W^T Y_bar * Q)``;
   * through the state ``h' = W tanh(h) + U x + b``: ``h_bar = d (W^T h'_bar) - 2 tanh(h) d d_bar``, with ``W^T h'_bar``
     fused into the tangent's ``W^T Y_bar`` (one matmul with k + 1 columns), and ``W_bar`` accumulated over chunks of
     time steps (one matmul per chunk).

On CPU the networks run in sub-batches whose per-step data fit the caches, several sub-batches at once on threads of
their own (``workers``, default: torch's thread count, fewer where a sub-batch would have too little work), every
operation on one thread (a single small sub-batch too); the stored bases are kept between calls (fresh memory costs
a page fault per 4 KiB).

Only ``TanhRNN`` (not a subclass that changes its dynamics) takes the fast path; other cells fall back to the
reference. Works in float32 and float64, on CPU and CUDA (nothing here is CPU-only).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import math
import os
import threading
import weakref
from dataclasses import dataclass, field

import torch

from torch.autograd.function import once_differentiable

from .lyapunov import _qr_schedule, lyapunov_spectrum, setup_spectrum
from .models import TanhRNN

__all__ = ["fast_lyapunov_spectrum", "supports_fast", "qr_log_diag_backward", "cholesky_qr", "clear_workspace"]

ORTH_METHODS = ("cholesky", "householder")


def supports_fast(model) -> bool:
    """Whether ``model`` takes the fast path: a TanhRNN whose step, drive and tangent step are TanhRNN's own."""
    if not isinstance(model, TanhRNN):
        return False
    cls = type(model)
    return all(getattr(cls, name) is getattr(TanhRNN, name) for name in ("step", "_drive", "step_tangent"))


# -- orthonormalization ------------------------------------------------------------------------------------------
# The engine keeps tangent vectors as rows: QT (M, k, N) = Q^T, so that Y^T = (d Q)^T W^T, the Gram Y^T Y and the
# triangular solves are row-major products on contiguous operands (up to 2x faster than Q (M, N, k) for small k).
# R = L^T is kept as the lower triangular L (the Cholesky factor of the Gram).

_MIN_WORKER_FLOPS = 1e6  # CPU: least matmul flops per step of a sub-batch worth a thread of its own
_GROUP_BYTES = 2 ** 23  # CPU: networks per sub-batch so that its per-step working set is about this (measured best)
# most rows (time steps x (k + 1)) per W_bar matmul. Measured at N = 64, k = 16 on one thread: in float64 34-51 rows
# make the whole spectrum 4-5% faster than 119 (and leave its bits); in float32 they are no faster and would change
# the last bits, so float32 keeps 128
_WBAR_ROWS = {torch.float64: 48}
_WBAR_ROWS_DEFAULT = 128


def _default_tol(dtype: torch.dtype) -> float:
    """Largest accepted orthogonality error of a factor: 1e-7 in float64, 1e-3 in lower precision.

    Measured: a factor accepted with orthogonality error e changes the gradient by up to ~10 e (relative; usually
    far less) and the exponents by far less (their errors telescope away), so 1e-7 keeps float64 gradients within
    ~1e-6 of the reference's. In float32 the gradients at large k are roundoff-limited at 1e-2 to 1e-1 anyway (the
    reference's too), and at small k the factors are far more accurate than 1e-3."""
    return 1e-7 if dtype == torch.float64 else 1e-3


_PASS2_MAX_ERROR = 1e-2  # a first pass this far from orthogonal is not refined but redone by Householder


def _window_kappa(tol: float, dtype: torch.dtype) -> float:
    """t_ons="auto": the condition number each window's basis is aimed at.

    A Cholesky QR pass leaves an orthogonality error of about eps kappa^2. Aiming at sqrt(tol / eps) lets most
    windows pass in one pass; aiming higher, at 1/64 of the most a second pass can repair (eps kappa^2 ~ 2.5e-6 in
    float64), needs a second pass more often but fewer QRs, which costs less where they are many (measured at
    N = 80, k = 75, g = 2: 155 instead of 224 QRs in 300 steps, 10-15% less time; elsewhere the same)."""
    eps = torch.finfo(dtype).eps
    return max(math.sqrt(tol / eps), math.sqrt(_PASS2_MAX_ERROR / eps) / 64)


def _probe(k: int, dtype, device) -> torch.Tensor:
    """A fixed random unit vector (k, 1) that probes the orthogonality of a basis."""
    v = torch.randn(k, 1, generator=torch.Generator().manual_seed(12345), dtype=torch.float64)
    return (v / v.norm()).to(dtype=dtype, device=device)


def _orth_error(QT: torch.Tensor, probe: torch.Tensor) -> torch.Tensor:
    """Orthogonality error of the rows of QT (M, k, N): max of ``|q_i|^2 - 1`` and ``|Q^T Q v - v|`` -> (M,).

    Cheap (elementwise passes, no matmul); NaN where QT is not finite."""
    norms = ((QT * QT).sum(-1) - 1).abs().amax(-1)  # (M,)
    u = (QT * probe).sum(-2, keepdim=True)  # (M, 1, N): Q v
    z = (QT * u).sum(-1) - probe.squeeze(-1)  # (M, k): Q^T Q v - v
    return torch.maximum(norms, z.norm(dim=-1))


def _solve_lower(L: torch.Tensor, BT: torch.Tensor) -> torch.Tensor:
    """L^{-1} BT for lower triangular L (M, k, k) and rows BT (M, k, N).

    Both forms are the same triangular solve; MKL runs the left one faster in float64 and the right one (on the
    transposed views) 2-3x faster in float32 (measured at k = 75)."""
    if BT.dtype == torch.float64:
        return torch.linalg.solve_triangular(L, BT, upper=False)
    return torch.linalg.solve_triangular(L.mT, BT.mT, upper=True, left=False).mT


def _solve_upper(L: torch.Tensor, BT: torch.Tensor) -> torch.Tensor:
    """L^{-T} BT for lower triangular L (M, k, k) and rows BT (M, k, N), as the right solve (B L^{-1})^T, which
    MKL runs faster than the left one in both precisions."""
    return torch.linalg.solve_triangular(L, BT.mT, upper=False, left=False).mT


def _cholesky_pass(YT: torch.Tensor):
    """One Cholesky QR pass on rows: (QT, L, info) with Y^T Y = L L^T, QT = L^{-1} YT; info != 0 where it failed."""
    R, info = torch.linalg.cholesky_ex(YT @ YT.mT, upper=True)  # (M, k, k), (M,): the upper form is faster
    L = R.mT
    return _solve_lower(L, YT), L, info


def _cholesky_qr_rows(YT: torch.Tensor, tol: float, probe: torch.Tensor):
    """Guarded Cholesky QR on rows (see ``cholesky_qr``): YT (M, k, N) -> QT (M, k, N), L (M, k, k), ok (M,)."""
    QT, L, info = _cholesky_pass(YT)
    err = _orth_error(QT, probe)
    ok = (info == 0) & (err <= tol)
    if not bool(ok.all()):
        # a second pass where the first lost some orthogonality but not the flag: CholeskyQR2 is as accurate as
        # Householder while u kappa^2 << 1; beyond that (err >= 1e-2) only Householder (or a shorter window) is
        again = ((info == 0) & ~(err <= tol) & (err <= _PASS2_MAX_ERROR)).nonzero().flatten()
        if again.numel():
            QT2, L2, info2 = _cholesky_pass(QT[again])
            QT = QT.index_copy(0, again, QT2)
            L = L.index_copy(0, again, L[again] @ L2)  # R = R2 R1, so L = L1 L2
            ok = ok.index_copy(0, again, (info2 == 0) & (_orth_error(QT2, probe) <= tol))
    return QT, L, ok


def cholesky_qr(Y: torch.Tensor, *, tol: float | None = None):
    """Guarded Cholesky QR of a batch Y (M, N, k), N >= k: returns (Q, R, ok) with Y = Q R and ok (M,) bool.

    One pass, then a second one (CholeskyQR2) on the matrices whose measured orthogonality error exceeds ``tol``
    (default 1e-7 in float64, 1e-3 in float32); ``ok`` is False where a Cholesky failed or the error still exceeds
    ``tol`` (there, use Householder QR). R has a positive diagonal.
    """
    tol = _default_tol(Y.dtype) if tol is None else tol
    QT, L, ok = _cholesky_qr_rows(Y.mT, tol, _probe(Y.shape[-1], Y.dtype, Y.device))
    return QT.mT, L.mT, ok


def _householder_fix(YT, QT, L, ok):
    """Redo the factorization with Householder QR (torch.linalg.qr) where ``ok`` is False, in place (rows layout)."""
    bad = (~ok).nonzero().flatten()
    Qh, Rh = torch.linalg.qr(YT[bad].mT)
    QT.index_copy_(0, bad, Qh.mT)
    L.index_copy_(0, bad, Rh.mT)


_MASKS = {}


def _upper_mask(k: int, device) -> torch.Tensor:
    key = (k, str(device))
    if key not in _MASKS:
        _MASKS[key] = torch.ones(k, k, dtype=torch.bool, device=device).triu()
    return _MASKS[key]


def qr_log_diag_backward(Q: torch.Tensor, R: torch.Tensor, Q_bar: torch.Tensor | None,
                         w: torch.Tensor | None, *, rows: bool = False) -> torch.Tensor:
    """The gradient through a reduced QR ``Y = Q R`` (Y (M, N, k), N >= k, full rank) of a loss that sees R only
    through ``sum_i w_i log|R_ii|`` and Q through Q_bar: ``Y_bar = (Q_bar - Q S) R^{-T}``, with the symmetric
    ``S = triu(A) + triu(A, 1)^T - diag(w)``, ``A = Q^T Q_bar``.

    This is torch's reduced-QR backward with ``R_bar = diag(w / R_ii)``. Q (M, N, k), R (M, k, k) upper triangular,
    Q_bar (M, N, k) or None (zero), w (M, k) or None (zero). With ``rows=True``: Q, Q_bar and the result are
    transposed (M, k, N) and R is given as the lower triangular L = R^T.
    """
    QT, Q_barT, L = (Q, Q_bar, R) if rows else (Q.mT, None if Q_bar is None else Q_bar.mT, R.mT)
    if Q_barT is None:
        if w is None:
            return torch.zeros_like(Q)
        VT = QT * w.unsqueeze(-1)  # (M, k, N): (Q diag(w))^T
    else:
        A = QT @ Q_barT.mT  # (M, k, k): Q^T Q_bar
        S = torch.where(_upper_mask(A.shape[-1], A.device), A, A.mT)  # symmetric from the upper triangle
        if w is not None:
            S.diagonal(dim1=-2, dim2=-1).sub_(w)
        VT = torch.baddbmm(Q_barT, S, QT, alpha=-1)  # (M, k, N): (Q_bar - Q S)^T
    Y_barT = _solve_upper(L, VT)  # R^{-1} V^T = (V R^{-T})^T
    return Y_barT if rows else Y_barT.mT


# -- workspace --------------------------------------------------------------------------------------------------
# The stored tangent bases are the engine's one large allocation (T x E x B x k x N). On CPU, fresh memory costs a
# page fault per 4 KiB on first touch (measured: ~90 ms for 270 MB, a tenth of the whole spectrum at (64, 16, 512)),
# so buffers are kept for the next call of the same shape once the backward (or a forward without gradient) is done.
# The CUDA caching allocator already does this on GPUs.

_WORKSPACE: dict = {}
_WORKSPACE_KEEP = 2  # buffers kept per (shape, dtype)


_WORKSPACE_LOCK = threading.RLock()  # worker threads take and give buffers concurrently (re-entrant: a
# finalizer giving a buffer back may run in a garbage collection inside the lock)


def _take_buffer(shape, dtype, device) -> torch.Tensor:
    device = torch.device(device)
    if device.type == "cpu":
        with _WORKSPACE_LOCK:
            free = _WORKSPACE.get((tuple(shape), dtype))
            if free:
                return free.pop()
    return torch.empty(shape, dtype=dtype, device=device)


def _give_buffer(buf: torch.Tensor) -> None:
    if buf.device.type == "cpu":
        with _WORKSPACE_LOCK:
            free = _WORKSPACE.setdefault((tuple(buf.shape), buf.dtype), [])
            if len(free) < _WORKSPACE_KEEP:
                free.append(buf)


def clear_workspace() -> None:
    """Free the buffers the engine keeps between calls (CPU only)."""
    with _WORKSPACE_LOCK:
        _WORKSPACE.clear()


# -- the engine --------------------------------------------------------------------------------------------------

@dataclass
class _Plan:
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


def _forward_group(W, U, b, h0, X, Q0, plan: _Plan):
    """The forward of one sub-batch of networks: (exponents (E, B, k), what its backward needs)."""
    E, B, T, _ = X.shape
    N, k, M = W.shape[-1], Q0.shape[-1], E * B
    n_tr = plan.n_transient
    kw = dict(dtype=W.dtype, device=W.device)

    # 1. the state trajectory, with TanhRNN.step's own operations (same bits as the reference)
    Wt, Ut, b1 = W.transpose(1, 2), U.transpose(1, 2), b.unsqueeze(1)
    r_all = torch.empty(T, E, B, N, **kw)  # tanh(h_t), t = 0..T-1
    states = []
    h = h0
    for t, x in enumerate(X.unbind(2)):
        r = torch.tanh(h, out=r_all[t])
        h = torch.baddbmm(torch.baddbmm(b1, x, Ut), r, Wt)  # (E, B, N)
        states.append(h)
    D = (1 - r_all * r_all).reshape(T, M, 1, N)  # d_t = 1 - tanh(h_t)^2 (as step_tangent computes it), as a row

    # 2. the tangent recursion on rows: QTs[t] = Q^T entering step t (orthonormal rows right after a QR)
    Wb = W.unsqueeze(1).expand(E, B, N, N).reshape(M, N, N)  # one W per trajectory (a view when B = 1)
    WbT = Wb.mT
    QTs = _take_buffer((T + 1, M, k, N), W.dtype, W.device)
    QTs[0] = Q0.reshape(M, N, k).mT
    probe, probe64 = _probe(k, W.dtype, W.device), _probe(k, torch.float64, W.device)
    tol64, in_double = _default_tol(torch.float64), [False]
    qr_at = [False] * T
    Ls = {}  # step -> L = R^T (M, k, k)
    log_r = {}  # step -> log|R_ii| (M, k), steps >= n_transient only
    mandatory = sorted({T - 1} | ({n_tr - 1} if n_tr > 0 else set()))
    window = 1  # "auto": the next window's length

    PT = torch.empty(M, k, N, **kw)  # (d_t Q_t)^T of the current step
    QTv, Dv = QTs.unbind(0), D.unbind(0)  # the per-step views, made once

    def push(t, out=None):  # Y_t^T = (d_t Q_t)^T W^T
        return torch.bmm(torch.mul(QTv[t], Dv[t], out=PT), WbT, out=out)

    def orthonormalize(t, YT, window_len):
        """QR of Y after step t into QTs[t + 1]; False if a window's basis was too ill-conditioned."""
        if plan.orth == "householder":
            Q, R = torch.linalg.qr(YT.mT)
            QT, L = Q.mT, R.mT
        elif in_double[0]:  # single precision whose factors mostly needed double precision so far
            QT, L, ok = _cholesky_qr_rows(YT.double(), tol64, probe64)
            QT, L = QT.to(YT.dtype), L.to(YT.dtype)
            if not bool(ok.all()):
                if window_len > 1:
                    return False
                _householder_fix(YT, QT, L, ok)
        else:
            QT, L, ok = _cholesky_qr_rows(YT, plan.tol, probe)
            if not bool(ok.all()):
                if window_len > 1:
                    return False
                if YT.dtype != torch.float64:  # in single precision, first retry in double
                    bad = (~ok).nonzero().flatten()
                    QT64, L64, ok64 = _cholesky_qr_rows(YT[bad].double(), tol64, probe64)
                    QT.index_copy_(0, bad, QT64.to(YT.dtype))
                    L.index_copy_(0, bad, L64.to(YT.dtype))
                    ok = ok.index_copy(0, bad, ok64)
                    in_double[0] = 2 * bad.numel() > M  # most needed it: go to double directly from now on
                if not bool(ok.all()):
                    _householder_fix(YT, QT, L, ok)
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
            growth = float((ld.amax(-1) - ld.amin(-1)).amax()) / (t1 - t0 + 1)  # log kappa per step
            fit = int(math.log(max(plan.kappa, 1.0)) / max(growth, 1e-12)) if growth < math.inf else 1
            window = max(1, min(plan.max_window, fit))
        t0 = t1 + 1

    lam = torch.stack([log_r[t] for t in sorted(log_r)]).sum(0) / (T - n_tr)  # (M, k)
    if plan.keep_diagnostics:
        plan.diag.update(qr_at=qr_at, log_r=[log_r[t].reshape(E, B, k) for t in sorted(log_r)], states=states)
    plan.diag["n_qr"] = sum(qr_at)

    saved = dict(r_all=r_all, D=D, QTs=QTs, Ls=Ls, qr_at=qr_at, plan=plan, Wb=Wb)
    return lam.reshape(E, B, k), saved


def _backward_group(saved, W, U, X, lam_bar, need):
    """The backward of one sub-batch (W, U, X its parameters and inputs, lam_bar (E, B, k)): the gradients of
    (W, U, b, h0, X, Q0), None where ``need`` says not needed."""
    r_all, D, QTs, Ls, qr_at, plan, Wb = (saved[name] for name in ("r_all", "D", "QTs", "Ls", "qr_at", "plan", "Wb"))
    T, E, B, N = r_all.shape
    k, M = QTs.shape[-2], E * B
    n_tr = plan.n_transient
    full = not plan.detached
    kw = dict(dtype=W.dtype, device=W.device)
    w = (lam_bar / (T - n_tr)).reshape(M, k)
    width = k + 1 if full else k  # the state adjoint rides along as one more row
    chunk = max(1, _WBAR_ROWS.get(W.dtype, _WBAR_ROWS_DEFAULT) // width)  # time steps per W_bar matmul
    Ybuf = torch.empty(M, chunk, width, N, **kw)  # slots of rows [Y_bar_t^T ; h_bar_{t+1}^T]
    Pbuf = torch.empty(M, chunk, width, N, **kw)  # slots of rows [(d_t Q_t)^T ; tanh(h_t)^T]
    Ys, Ps = Ybuf.unbind(1), Pbuf.unbind(1)  # the slots (M, width, N), and views of their rows:
    Yq, Pq = [s[:, :k] for s in Ys], [s[:, :k] for s in Ps]  # (M, k, N)
    Z = torch.empty(M, width, N, **kw)  # rows [(W^T Y_bar_t)^T ; (W^T h_bar_{t+1})^T] of the current step
    Zq = Z[:, :k]
    W_bar = torch.zeros(M, N, N, **kw)
    r_flat = r_all.reshape(T, M, N)
    D_flat = D.reshape(T, M, N)
    if full:
        Yh, Ph = [s[:, k] for s in Ys], [s[:, k] for s in Ps]  # (M, N)
        C = -2 * r_flat * D_flat  # d(d_t)/d(h_t) = -2 tanh(h_t) d_t
        h_bars = torch.empty(T, M, N, **kw)  # h_bar_{t+1}, t = 0..T-1
        h_bars[T - 1] = 0
        Yh[0].zero_()  # no gradient reaches the state after the last step
        rv, Cv, hv = r_flat.unbind(0), C.unbind(0), h_bars.unbind(0)  # the per-step views, made once
    QTv, Dv = QTs.unbind(0), D.unbind(0)
    j = 0  # slot of the current step in the chunk buffers
    for t in range(T - 1, -1, -1):
        QT, d = QTv[t], Dv[t]  # (M, k, N), (M, 1, N)
        if qr_at[t]:  # the slot holds Q_bar_t (written at the end of step t + 1; none after the last step)
            Yq[j].copy_(qr_log_diag_backward(QTv[t + 1], Ls[t], Yq[j] if t < T - 1 else None,
                                             w if t >= n_tr else None, rows=True))
        # else the slot already holds Y_bar_t = Q_bar_t (the last step always has a QR)
        torch.mul(QT, d, out=Pq[j])
        if full:
            Ph[j].copy_(rv[t])
        torch.bmm(Ys[j], Wb, out=Z)
        if full:
            d_bar = torch.linalg.vecdot(Zq, QT, dim=-2)  # (M, N)
        if j == chunk - 1 or t == 0:
            W_bar.baddbmm_(Ybuf[:, :j + 1].reshape(M, (j + 1) * width, N).mT,
                           Pbuf[:, :j + 1].reshape(M, (j + 1) * width, N))
            j = 0
        else:
            j += 1
        if t:  # into the next slot: Q_bar of the basis entering step t, and h_bar_t
            torch.mul(Z, d, out=Ys[j])  # rows [Q_bar_t^T ; (d_t W^T h_bar_{t+1})^T]
            if full:
                Yh[j].addcmul_(Cv[t], d_bar)
                hv[t - 1].copy_(Yh[j])
        else:
            Q_barT = Zq * d
            if full:
                h_bar = torch.addcmul(D_flat[0] * Z[:, k], C[0], d_bar)

    W_grad = W_bar.reshape(E, B, N, N).sum(1) if need[0] else None
    U_grad = b_grad = h0_grad = X_grad = None
    if full:
        hb = h_bars.reshape(T, E, B, N)
        if need[1]:
            U_grad = torch.einsum("tebn,ebti->eni", hb, X)
        if need[2]:
            b_grad = hb.sum((0, 2))
        if need[3]:
            h0_grad = h_bar.reshape(E, B, N)
        if need[4]:
            X_grad = torch.einsum("tebn,eni->ebti", hb, U)
    Q0_grad = Q_barT.mT.reshape(E, B, N, k) if need[5] else None
    return W_grad, U_grad, b_grad, h0_grad, X_grad, Q0_grad


class _TanhSpectrum(torch.autograd.Function):
    """(W, U, b, h0, X, Q0) -> exponents (E, B, k) of a TanhRNN, with a hand-written backward.

    The networks run in sub-batches (``groups``, slices of E), on ``workers`` threads at once (see ``_run``)."""

    @staticmethod
    def forward(ctx, W, U, b, h0, X, Q0, plans: list, groups: list, workers: int, one_thread: bool):
        out = _run(workers, [lambda g=g, pl=pl: _forward_group(W[g], U[g], b[g], h0[g], X[g], Q0[g], pl)
                             for g, pl in zip(groups, plans)], one_thread, W.device.type)
        ctx.save_for_backward(W, U, X)
        ctx.saved_groups, ctx.groups, ctx.workers, ctx.one_thread = [sv for _, sv in out], groups, workers, one_thread
        for _, sv in out:  # its bases back to the pool once the graph (or this call's result) is freed
            weakref.finalize(ctx, _give_buffer, sv["QTs"])
        return torch.cat([lam for lam, _ in out]) if len(out) > 1 else out[0][0]

    @staticmethod
    @once_differentiable
    def backward(ctx, lam_bar):
        W, U, X = ctx.saved_tensors
        need = ctx.needs_input_grad[:6]
        out = _run(ctx.workers, [lambda g=g, sv=sv: _backward_group(sv, W[g], U[g], X[g], lam_bar[g], need)
                                 for g, sv in zip(ctx.groups, ctx.saved_groups)], ctx.one_thread, W.device.type)
        grads = [None if out[0][i] is None else torch.cat([o[i] for o in out]) if len(out) > 1 else out[0][i]
                 for i in range(6)]
        return (*grads, None, None, None, None)


# -- threads ------------------------------------------------------------------------------------------------------
# Intra-op threads make these small batched operations slower, not faster (measured on a 2-core CPU: a flossing step
# at k = 75 took 3x longer on 2 threads than on 1), so on CPU the engine runs every operation on one thread and
# gets its parallelism from independent sub-batches run at once, each on a thread of its own: torch releases the
# GIL inside every operation.

_POOL = {}  # workers -> ThreadPoolExecutor
_THREADS_LOCK = threading.Lock()  # guards _POOL and the intra-op thread count saved by the first caller in _run
_THREADS_STATE = {"depth": 0, "before": None}
os.register_at_fork(after_in_child=_POOL.clear)  # a forked child has none of the parent's worker threads
_MIN_INTRAOP_FLOPS = 2e7  # CPU, one sub-batch at a time: from this many flops per step on, intra-op threads pay


def _run(workers: int, jobs: list, one_thread: bool, device_type: str) -> list:
    """Run the zero-argument ``jobs`` (independent sub-batches) on ``workers`` threads; their results, in order.

    With ``one_thread`` torch's intra-op threads are set to 1 meanwhile (restored by the last concurrent caller to
    leave), so that the operations neither oversubscribe the cores nor pay for threads on small matrices. Every job
    runs with the caller's grad mode and without autocast (the same in a worker thread and here)."""
    grad_mode = torch.is_grad_enabled()  # thread-local: off inside an autograd Function, on in a fresh thread

    def in_worker(job):
        with torch.set_grad_enabled(grad_mode), torch.autocast(device_type, enabled=False):
            return job()

    if one_thread:
        with _THREADS_LOCK:
            if _THREADS_STATE["depth"] == 0:
                _THREADS_STATE["before"] = torch.get_num_threads()
                torch.set_num_threads(1)
            _THREADS_STATE["depth"] += 1
    try:
        if workers <= 1 or len(jobs) <= 1:
            return [in_worker(job) for job in jobs]
        with _THREADS_LOCK:
            pool = _POOL.get(workers)
            if pool is None:
                pool = _POOL[workers] = concurrent.futures.ThreadPoolExecutor(
                    workers, thread_name_prefix="floss_core.fast")
        futures = [pool.submit(in_worker, job) for job in jobs]
        concurrent.futures.wait(futures)  # all of them, also when one fails, before the thread count is restored
        return [f.result() for f in futures]
    finally:
        if one_thread:
            with _THREADS_LOCK:
                _THREADS_STATE["depth"] -= 1
                if _THREADS_STATE["depth"] == 0:
                    torch.set_num_threads(_THREADS_STATE["before"])


def fast_lyapunov_spectrum(model, inputs: torch.Tensor | None, k: int, *, n_steps: int | None = None,
                           batch: int = 1, t_ons: int | str = 1, n_transient: int | None = None,
                           h0: torch.Tensor | None = None, Q0: torch.Tensor | None = None,
                           generator: torch.Generator | None = None, gradient: str = "full", reduce: str = "mean",
                           check: bool = True, orth: str = "cholesky", tol: float | None = None,
                           max_window: int = 64, group: int | None = None, workers: int | None = None,
                           info: dict | None = None) -> torch.Tensor:
    """The first k Lyapunov exponents of every network, like ``lyapunov_spectrum`` but faster (see the module).

    Main arguments and return value: as ``lyapunov_spectrum`` (same validation, same random draws from
    ``generator``, same exponents and gradients up to roundoff), for models where ``supports_fast(model)``;
    other cells are passed to ``lyapunov_spectrum`` unchanged.

    Other arguments (keyword-only), beyond those of ``lyapunov_spectrum``:
        t_ons: an int follows the reference's QR schedule (but a window whose basis became too ill-conditioned
            is redone with a QR every step, so a large t_ons gives the t_ons = 1 exponents, not a collapsed basis);
            "auto" chooses the windows from the measured stretching (the exponents of t_ons = 1, fewer QRs).
        orth: "cholesky" (default: guarded Cholesky QR, Householder where the guard fails) or "householder"
            (torch.linalg.qr at every scheduled QR, as the reference, without the window guard).
        tol: accepted orthogonality error of a Cholesky QR factor (default 1e-7 in float64, 1e-3 in float32);
            "auto" aims each window's condition number at the larger of sqrt(tol / eps) and ~1e5 (float64).
        max_window: longest window for t_ons="auto".
        group: networks per sub-batch (default: all on GPU; on CPU balanced sub-batches, each of whose per-step
            data stay near 8 MiB, their number a multiple of ``workers``).
        workers: CPU threads that run sub-batches at once, each with one intra-op thread (default:
            ``torch.get_num_threads()``, fewer where the sub-batches would be too small to gain; on GPU 1). With fixed sub-batches the result does not depend on it
            (each sub-batch runs the same operations); the default sub-batches depend on it, and with
            t_ons="auto" (whose windows each sub-batch chooses) so does the roundoff (~1e-12 in float64).
        info: a dict that receives "n_qr", the number of orthonormalizations done (mean over networks).
    """
    auto = t_ons == "auto"
    if orth not in ORTH_METHODS:
        raise ValueError(f"orth must be one of {ORTH_METHODS}, got {orth!r}")
    if auto and orth == "householder":
        raise ValueError("t_ons='auto' needs orth='cholesky' (its guard detects ill-conditioned windows)")
    for name, value in (("workers", workers), ("group", group)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if not supports_fast(model):
        return lyapunov_spectrum(model, inputs, k, n_steps=n_steps, batch=batch, t_ons=1 if auto else t_ons,
                                 n_transient=n_transient, h0=h0, Q0=Q0, generator=generator, gradient=gradient,
                                 reduce=reduce, check=check)
    # validation: the checks and messages of lyapunov_spectrum (shared code)
    if not auto and (isinstance(t_ons, bool) or not isinstance(t_ons, int) or t_ons < 1):
        raise ValueError(f"t_ons must be an int >= 1 or 'auto', got {t_ons!r}")
    if isinstance(max_window, bool) or not isinstance(max_window, int) or max_window < 1:
        raise ValueError(f"max_window must be an int >= 1, got {max_window!r}")
    inputs, n_transient, h0, Q = setup_spectrum(model, inputs, k, n_steps=n_steps, batch=batch,
                                                n_transient=n_transient, h0=h0, Q0=Q0, generator=generator,
                                                gradient=gradient, reduce=reduce, check=check)
    E, B, T, _ = inputs.shape
    S = model.state_size
    p = next(model.parameters())
    h = h0.to(dtype=p.dtype, device=p.device)

    detached = gradient == "detached"
    W, U, b = model.W, model.U, model.b
    if detached:  # the state trajectory carries no gradient: only the Jacobians' explicit W
        U, b, h = U.detach(), b.detach(), h.detach()
        inputs = inputs.detach()
    plan = _Plan(n_transient=n_transient, schedule=None if auto else _qr_schedule(T, n_transient, t_ons),
                 detached=detached, orth=orth, tol=_default_tol(p.dtype) if tol is None else float(tol),
                 kappa=_window_kappa(_default_tol(p.dtype) if tol is None else float(tol), p.dtype),
                 max_window=max_window, keep_diagnostics=check)
    cpu = p.device.type == "cpu"
    if workers is None:  # threads pay where each sub-batch has >= ~1 MFLOP per step (measured: less runs slower)
        step_flops = 2 * E * B * S * S * (k + 1)
        workers = max(1, min(torch.get_num_threads(), E, int(step_flops // _MIN_WORKER_FLOPS))) if cpu else 1
    if group is None:  # balanced sub-batches, as many as the caches need and a multiple of the workers
        per_network = p.element_size() * B * (S * S + 6 * S * k + 2 * k * k)  # W, a few bases and k x k factors
        n = 1 if not cpu else -(-E // max(1, _GROUP_BYTES // per_network))
        n = min(E, -(-max(n, workers) // workers) * workers if workers > 1 else n)
        sizes = [E // n + (i < E % n) for i in range(n)]
    else:
        sizes = [min(group, E - e0) for e0 in range(0, E, group)]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    groups = [slice(e0, e0 + size) for e0, size in zip(starts, sizes)]
    plans = [dataclasses.replace(plan, diag={}) for _ in groups]
    # one intra-op thread per operation on CPU where sub-batches run at once or each is small (measured: faster)
    group_flops = 2 * max(sizes) * B * S * S * (k + 1)
    one_thread = cpu and ((workers > 1 and len(groups) > 1) or group_flops < _MIN_INTRAOP_FLOPS)
    lam = _TanhSpectrum.apply(W, U, b, h, inputs, Q, plans, groups, workers, one_thread)  # (E, B, k)
    if info is not None:
        info["n_qr"] = sum(pl.diag["n_qr"] * (g.stop - g.start) for pl, g in zip(plans, groups)) / E
    if check and not bool(torch.isfinite(lam).all()):
        _raise_non_finite_groups(plans, starts, n_transient)
    return lam.mean(1) if reduce == "mean" else lam


def _raise_non_finite_groups(plans, starts, n_transient):
    """``lyapunov._raise_non_finite`` (same messages) for sub-batched networks, each with its own QR steps."""
    T = len(plans[0].diag["states"])
    for t in range(T):  # the first step where some network's state stopped being finite
        nets = []
        for i, pl in enumerate(plans):
            bad = ~torch.isfinite(pl.diag["states"][t]).flatten(1).all(1)
            nets += (bad.nonzero().flatten() + starts[i]).tolist()
        if nets:
            raise ValueError(f"the state became non-finite at step {t} in network(s) {nets}: "
                             "the dynamics diverged (check the weights' scale and the inputs)")
    first = None  # else the first QR step where some network's exponents stopped being finite
    for i, pl in enumerate(plans):
        steps = [t for t, q in enumerate(pl.diag["qr_at"]) if q and t >= n_transient]
        for t, lr in zip(steps, pl.diag["log_r"]):
            bad = ~torch.isfinite(lr).flatten(1).all(1)
            if bool(bad.any()):
                if first is None or t < first[0]:
                    first = (t, [])
                if t == first[0]:
                    first[1].extend((bad.nonzero().flatten() + starts[i]).tolist())
                break
    if first is not None:
        t, nets = first
        raise ValueError(f"the exponents stopped being finite at step {t} in network(s) {sorted(nets)}: the tangent "
                         "basis overflowed or collapsed (log|R_ii| = -inf); try a smaller t_ons or float64")
    raise ValueError("the exponents are not finite")
