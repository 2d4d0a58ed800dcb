"""Orthonormalization for the fast engine: a guarded Cholesky QR from batched matmuls, and the backward of a QR
through ``log|diag R|``.

LAPACK's Householder QR of small matrices runs near 5-10 GFLOP/s at these sizes against ~30-100 for matmul, so the
fast engine factors ``G = Y^T Y = R^T R``, ``Q = Y R^{-1}`` (Cholesky QR), with a second pass (CholeskyQR2) where the
first lost orthogonality. A guard never lets a bad factor through: every factor's orthogonality is measured
(``|q_i|^2 - 1`` and ``|Q^T Q v - v|`` for a fixed random v); where the Cholesky fails or the error exceeds the
tolerance after two passes, the caller redoes that factorization by Householder ``torch.linalg.qr``.

The engine keeps tangent vectors as rows: QT (M, k, N) = Q^T, so that the Gram and the triangular solves are
row-major products on contiguous operands (up to 2x faster than Q (M, N, k) for small k). R = L^T is kept as the
lower triangular L (the Cholesky factor of the Gram).
"""
from __future__ import annotations

import math

import torch

__all__ = ["PASS2_MAX_ERROR", "cholesky_qr", "qr_log_diag_backward", "default_tol", "window_kappa", "make_probe",
           "cholesky_qr_rows", "householder_fix"]


def default_tol(dtype: torch.dtype) -> float:
    """Largest accepted orthogonality error of a factor: 1e-7 in float64, 1e-3 in lower precision.

    Measured: a factor accepted with orthogonality error e changes the gradient by up to ~10 e (relative; usually
    far less) and the exponents by far less (their errors telescope away), so 1e-7 keeps float64 gradients within
    ~1e-6 of the reference's. In float32 the gradients at large k are roundoff-limited at 1e-2 to 1e-1 anyway (the
    reference's too), and at small k the factors are far more accurate than 1e-3."""
    return 1e-7 if dtype == torch.float64 else 1e-3


PASS2_MAX_ERROR = 1e-2  # a first pass this far from orthogonal is not refined but redone by Householder


def window_kappa(tol: float, dtype: torch.dtype) -> float:
    """t_ons="auto": the condition number each window's basis is aimed at.

    A Cholesky QR pass leaves an orthogonality error of about eps kappa^2. Aiming at sqrt(tol / eps) lets most
    windows pass in one pass; aiming higher, at 1/64 of the most a second pass can repair (eps kappa^2 ~ 2.5e-6 in
    float64), needs a second pass more often but fewer QRs, which costs less where they are many (measured at
    N = 80, k = 75, g = 2: 155 instead of 224 QRs in 300 steps, 10-15% less time; elsewhere the same)."""
    eps = torch.finfo(dtype).eps
    return max(math.sqrt(tol / eps), math.sqrt(PASS2_MAX_ERROR / eps) / 64)


def make_probe(k: int, dtype, device) -> torch.Tensor:
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


def cholesky_qr_rows(YT: torch.Tensor, tol: float, probe: torch.Tensor):
    """Guarded Cholesky QR on rows (see ``cholesky_qr``): YT (M, k, N) -> QT (M, k, N), L (M, k, k), ok (M,)."""
    QT, L, info = _cholesky_pass(YT)
    err = _orth_error(QT, probe)
    ok = (info == 0) & (err <= tol)
    if not bool(ok.all()):
        # a second pass where the first lost some orthogonality but not the flag: CholeskyQR2 is as accurate as
        # Householder while u kappa^2 << 1; beyond that (err >= 1e-2) only Householder (or a shorter window) is
        again = ((info == 0) & ~(err <= tol) & (err <= PASS2_MAX_ERROR)).nonzero().flatten()
        if again.numel() == QT.shape[0]:  # all of them (the usual case of t_ons="auto"): no gather and scatter
            QT, L2, info2 = _cholesky_pass(QT)
            L = L @ L2  # R = R2 R1, so L = L1 L2
            ok = (info2 == 0) & (_orth_error(QT, probe) <= tol)
        elif again.numel():
            QT2, L2, info2 = _cholesky_pass(QT[again])
            QT = QT.index_copy(0, again, QT2)
            L = L.index_copy(0, again, L[again] @ L2)
            ok = ok.index_copy(0, again, (info2 == 0) & (_orth_error(QT2, probe) <= tol))
    return QT, L, ok


def cholesky_qr(Y: torch.Tensor, *, tol: float | None = None):
    """Guarded Cholesky QR of a batch Y (M, N, k), N >= k: returns (Q, R, ok) with Y = Q R and ok (M,) bool.

    One pass, then a second one (CholeskyQR2) on the matrices whose measured orthogonality error exceeds ``tol``
    (default 1e-7 in float64, 1e-3 in float32); ``ok`` is False where a Cholesky failed or the error still exceeds
    ``tol`` (there, use Householder QR). R has a positive diagonal.
    """
    tol = default_tol(Y.dtype) if tol is None else tol
    QT, L, ok = cholesky_qr_rows(Y.mT, tol, make_probe(Y.shape[-1], Y.dtype, Y.device))
    return QT.mT, L.mT, ok


def householder_fix(YT, QT, L, ok):
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


