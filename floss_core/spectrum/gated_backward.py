"""The backward of the fast gated engine for one sub-batch: one hand-written pass over the tangent recursion, the
coefficients' adjoints of all steps at once, one pass over the state.

1. Backward in time through the QRs (``qr_log_diag_backward``) and the tangent recursion, one tangent map step per
   step (``Q_bar = J^T Y_bar``, ``gated_tangent``). Per chunk of steps, the Jacobians' adjoints
   ``J_bar_t = Y_bar_t Q_t^T`` give the adjoints of the Jacobians' coefficients and the explicit W's gradient.
2. The coefficients' vector-Jacobian product with respect to the pre-activations and the entering state, over all
   steps at once (``gated_cells``: elementwise, from the stored gates).
3. (gradient="full") The state's adjoint backward in time, one tangent map step per step (on rows):
   ``s_bar_t^T = s_bar_{t+1}^T J_t + g_t^T`` with the coefficients' contribution g_t; then the pre-activations'
   adjoints from the state path (elementwise, all steps at once).
4. W, U, b, b_h, the inputs' and h0's gradients as a few large products over all steps.
"""
from __future__ import annotations

import torch

from .qr import qr_log_diag_backward

__all__ = ["backward_group"]


def backward_group(saved, lam_bar, need):
    """The backward of one sub-batch, lam_bar (E, B, k): the gradients of (W, U, b, b_h, h0, X, Q0), None where
    ``need`` says not needed."""
    kernel, S_all, gates, coefs, tangent, QTs, Ls, qr_at, plan, X = (
        saved[name] for name in ("kernel", "S_all", "gates", "coefs", "tangent", "QTs", "Ls", "qr_at", "plan", "X"))
    E, B, T = X.shape[:3]
    k, S, M, H = QTs.shape[-2], QTs.shape[-1], E * B, kernel.H
    n_tr = plan.n_transient
    full = not plan.detached
    kw = dict(dtype=QTs.dtype, device=QTs.device)
    w = (lam_bar / (T - n_tr)).reshape(M, k)
    QTv = QTs.unbind(0)
    back = tangent.back

    # 1. the tangent recursion backward, in chunks of steps [t0, t1) from the end
    chunk = tangent.backward_chunk()
    bounds = [(max(0, t1 - chunk), t1) for t1 in range(T, 0, -chunk)]
    bufs = [torch.empty(chunk, M, k, S, **kw) for _ in range(min(2, len(bounds)))]  # Y_bar of a chunk's steps
    views = [tangent.slot_views(buf) for buf in bufs]
    coef_bar = torch.empty(kernel.n_coefs, T, E, B, H, **kw)
    WJ_bar = torch.zeros(E, kernel.n_gates * H, H, **kw)  # W's gradient through the Jacobians' explicit W
    Q0_barT = None
    Q_bar = None  # the adjoint of the basis entering step t + 1 (None after the last step)
    for n, (t0, t1) in enumerate(bounds):
        Y, V = bufs[n % 2], views[n % 2]
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            if qr_at[t]:
                Y[j].copy_(qr_log_diag_backward(QTv[t + 1], Ls[t], Q_bar, w if t >= n_tr else None, rows=True))
            # else Y[j] already holds Y_bar_t = Q_bar_{t+1}
            if t > t0:
                Q_bar = back(t, V[j], V[j - 1], slot=j)
            elif t > 0:
                Q_bar = back(t, V[0], views[(n + 1) % 2][bounds[n + 1][1] - bounds[n + 1][0] - 1], slot=0)
            else:
                Q0_barT = back(0, V[0], None, slot=0)
        for i, cb in enumerate(tangent.adjoint(QTs[t0:t1], Y[:t1 - t0], t0, t1, WJ_bar)):
            coef_bar[i, t0:t1] = cb

    # 2. the coefficients' adjoints back to the pre-activations and the entering state, all steps at once
    S_prev = S_all[:-1]
    partials, S_prev_bar = kernel.coef_partials(gates, coef_bar.unbind(0))
    pre_bar, chain_bar = kernel.chain(gates, partials)
    h0_grad = None
    if full:
        # 3. the state's adjoint backward in time, on rows: s_bar_t^T = s_bar_{t+1}^T J_t + g_t^T
        g = S_prev_bar + kernel.state_of_pre(pre_bar)
        if chain_bar is not None:
            g += chain_bar
        g = g.reshape(T, M, 1, S)
        s_bar = torch.empty(T + 1, M, 1, S, **kw)
        s_bar[T] = 0
        sv, gv = tangent.slot_views(s_bar), tangent.slot_views(g)
        state_back = tangent.state_back
        for t in range(T - 1, -1, -1):
            state_back(t, sv[t + 1], gv[t], sv[t])
        pre_bar_s, _ = kernel.chain(gates, kernel.state_partials(gates, s_bar[1:].reshape(T, E, B, S)))
        pre_bar = [a + b for a, b in zip(pre_bar, pre_bar_s)]
        if need[4]:
            h0_grad = s_bar[0].reshape(E, B, S)

    # 4. the parameters' and inputs' gradients
    W_grad, U_grad, b_grad, b_h_grad, X_grad = kernel.param_grads(pre_bar, S_prev, X, need)
    if W_grad is not None:
        W_grad = W_grad + WJ_bar
    Q0_grad = Q0_barT.mT.reshape(E, B, S, k) if need[6] else None
    return W_grad, U_grad, b_grad, b_h_grad, h0_grad, X_grad, Q0_grad
