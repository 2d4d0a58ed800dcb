"""The forward of the fast engine for one sub-batch of TanhRNN networks (see ``spectrum.fast`` for the method).

1. The state trajectory first, with ``TanhRNN``'s own step (``voltage_step``: the same bits as the reference, hence
   the same exponents for chaotic networks), then the tangent recursion on the stored ``d_t = 1 - tanh(h_t)^2``.
2. Orthonormalization by the guarded Cholesky QR of ``spectrum.qr``, in windows (``spectrum.windows``, shared with
   the gated cells' engine): between two QRs only the product of the window's Jacobians matters. A window whose
   basis became too ill-conditioned (Cholesky failure or failed probe after two passes) is rolled back and redone
   with a QR every step. With ``t_ons="auto"`` each window's length is chosen from the stretching measured in the
   previous one.
"""
from __future__ import annotations

import torch

from ..cells.tanh import voltage_step
from .runtime import take_buffer
from .windows import Plan, run_windows

__all__ = ["Plan", "forward_group"]


def forward_group(W, U, b, h0, X, Q0, plan: Plan):
    """The forward of one sub-batch of networks: (exponents (E, B, k), what its backward needs)."""
    E, B, T, _ = X.shape
    N, k, M = W.shape[-1], Q0.shape[-1], E * B
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
    PT = torch.empty(M, k, N, **kw)  # (d_t Q_t)^T of the current step
    QTv, Dv = QTs.unbind(0), D.unbind(0)  # the per-step views, made once

    def push(t, out=None):  # Y_t^T = (d_t Q_t)^T W^T
        return torch.bmm(torch.mul(QTv[t], Dv[t], out=PT), WbT, out=out)

    lam, Ls, qr_at = run_windows(push, QTs, plan)
    if plan.keep_diagnostics:
        plan.diag.update(log_r=[lr.reshape(E, B, k) for lr in plan.diag["log_r"]], states=states)
    if plan.keep_windows:  # where a continuation starts: the last state and basis (copied out of the pooled buffer)
        plan.diag.update(final_state=h, final_basis=QTs[T].clone().mT.reshape(E, B, N, k))

    saved = dict(r_all=r_all, D=D, QTs=QTs, Ls=Ls, qr_at=qr_at, plan=plan, Wb=Wb)
    return lam.reshape(E, B, k), saved
