"""The backward of the fast engine for one sub-batch: one hand-written pass for the whole recursion.

* through each QR ``Y = Q R`` with loss weights w on ``log|R_ii|`` (``qr_log_diag_backward``);
* through ``Y = W diag(d) Q``: ``W_bar += Y_bar (d Q)^T``, ``Q_bar = d W^T Y_bar``, ``d_bar = rowsum(W^T Y_bar * Q)``;
* through the state ``h' = W tanh(h) + U x + b``: ``h_bar = d (W^T h'_bar) - 2 tanh(h) d d_bar``, with ``W^T h'_bar``
  fused into the tangent's ``W^T Y_bar`` (one matmul with k + 1 columns), and ``W_bar`` accumulated over chunks of
  time steps (one matmul per chunk).
"""
from __future__ import annotations

import torch

from .qr import qr_log_diag_backward

__all__ = ["backward_group"]

# most rows (time steps x (k + 1)) per W_bar matmul. Measured at N = 64, k = 16 on one thread: in float64 34-51 rows
# make the whole spectrum 4-5% faster than 119 (and leave its bits); in float32 they are no faster and would change
# the last bits, so float32 keeps 128
_WBAR_ROWS = {torch.float64: 48}
_WBAR_ROWS_DEFAULT = 128


def backward_group(saved, W, U, X, lam_bar, need):
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
