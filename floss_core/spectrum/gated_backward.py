"""The backward of the fast gated engine for one sub-batch: one hand-written pass over the tangent recursion, the
coefficients' adjoints of all steps at once, one pass over the state.

1. Backward in time through the QRs (``qr_log_diag_backward``) and the tangent recursion, one matmul per step
   (``Q_bar = J^T Y_bar``). Per chunk of steps, the Jacobians' adjoints ``J_bar_t = Y_bar_t Q_t^T`` (one batched
   matmul) give the adjoints of the Jacobians' coefficients and the explicit W's gradient (``gated_cells``).
2. The coefficients' vector-Jacobian product with respect to the pre-activations and the entering state, over all
   steps at once (``torch.func.vjp`` of ``coefs``).
3. (gradient="full") The state's adjoint backward in time, one matmul per step: ``s_bar_t = J_t^T s_bar_{t+1} +
   g_t`` with the coefficients' contribution g_t; then the pre-activations' adjoints from the state path (a second
   vjp, all steps at once).
4. W, U, b, b_h, the inputs' and h0's gradients as a few large products over all steps.
"""
from __future__ import annotations

import torch

from .gated_forward import chunk_steps
from .qr import qr_log_diag_backward

__all__ = ["backward_group"]


def backward_group(saved, lam_bar, need):
    """The backward of one sub-batch, lam_bar (E, B, k): the gradients of (W, U, b, b_h, h0, X, Q0), None where
    ``need`` says not needed."""
    kernel, S_all, pre, coefs, J, D, QTs, Ls, qr_at, plan, X = (
        saved[name] for name in ("kernel", "S_all", "pre", "coefs", "J", "D", "QTs", "Ls", "qr_at", "plan", "X"))
    E, B, T = X.shape[:3]
    k, S, M, H = QTs.shape[-2], QTs.shape[-1], E * B, kernel.H
    n_tr = plan.n_transient
    full = not plan.detached
    kw = dict(dtype=QTs.dtype, device=QTs.device)
    w = (lam_bar / (T - n_tr)).reshape(M, k)
    QTv, Jv = QTs.unbind(0), J.unbind(0)
    Dv = D.unbind(0) if D is not None else [None] * T
    tangent_back = kernel.tangent_back

    # 1. the tangent recursion backward, in chunks of steps [t0, t1) from the end
    chunk = chunk_steps(T, M * S * max(H, k) * QTs.element_size())
    bounds = [(max(0, t1 - chunk), t1) for t1 in range(T, 0, -chunk)]
    bufs = [torch.empty(chunk, M, k, S, **kw) for _ in range(min(2, len(bounds)))]  # Y_bar of a chunk's steps
    coef_bar = torch.empty(kernel.n_coefs, T, E, B, H, **kw)
    WJ_bar = torch.zeros(E, kernel.n_gates * H, H, **kw)  # W's gradient through the Jacobians' explicit W
    Q0_barT = None
    Q_bar = None  # the adjoint of the basis entering step t + 1 (None after the last step)
    for n, (t0, t1) in enumerate(bounds):
        Y = bufs[n % 2]
        for t in range(t1 - 1, t0 - 1, -1):
            j = t - t0
            if qr_at[t]:
                Y[j].copy_(qr_log_diag_backward(QTv[t + 1], Ls[t], Q_bar, w if t >= n_tr else None, rows=True))
            # else Y[j] already holds Y_bar_t = Q_bar_{t+1}
            if t > t0:
                Q_bar = tangent_back(Y[j], Jv[t], Dv[t], out=Y[j - 1])
            elif t > 0:
                nxt = bufs[(n + 1) % 2]
                Q_bar = tangent_back(Y[0], Jv[t], Dv[t], out=nxt[bounds[n + 1][1] - bounds[n + 1][0] - 1])
            elif need[6]:
                Q0_barT = tangent_back(Y[0], Jv[0], Dv[0])
        kernel.jacobian_adjoint(QTs[t0:t1], Y[:t1 - t0], J[t0:t1], None if D is None else D[t0:t1], coefs, t0, t1,
                                coef_bar, WJ_bar)

    # 2. the coefficients' adjoints back to the pre-activations and the entering state, all steps at once
    S_prev = S_all[:-1]
    _, vjp_coefs = torch.func.vjp(kernel.coefs, *pre, S_prev)
    *pre_bar, S_prev_bar = vjp_coefs(tuple(coef_bar.unbind(0)))
    h0_grad = None
    if full:
        # 3. the state's adjoint backward in time: s_bar_t = J_t^T s_bar_{t+1} + g_t
        g = (S_prev_bar + kernel.state_of_pre(pre_bar)).reshape(T, M, S, 1)
        s_bar = torch.empty(T + 1, M, S, 1, **kw)
        s_bar[T] = 0
        sv, gv = s_bar.unbind(0), g.unbind(0)
        state_back = kernel.state_back
        for t in range(T - 1, -1, -1):
            state_back(sv[t + 1], Jv[t], Dv[t], gv[t], out=sv[t])
        _, vjp_state = torch.func.vjp(kernel.next_state, *pre, S_prev)
        pre_bar = [a + b for a, b in zip(pre_bar, vjp_state(s_bar[1:].reshape(T, E, B, S))[:-1])]
        if need[4]:
            h0_grad = s_bar[0].reshape(E, B, S)

    # 4. the parameters' and inputs' gradients
    W_grad, U_grad, b_grad, b_h_grad, X_grad = kernel.param_grads(pre_bar, S_prev, X, need)
    if W_grad is not None:
        W_grad = W_grad + WJ_bar
    Q0_grad = Q0_barT.mT.reshape(E, B, S, k) if Q0_barT is not None else None
    return W_grad, U_grad, b_grad, b_h_grad, h0_grad, X_grad, Q0_grad
