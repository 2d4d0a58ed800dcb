"""The forward of the fast gated engine for one sub-batch of LSTM or GRU networks (see ``spectrum.gated``).

1. The state trajectory first, with the cell's own step (``spectrum.gated``: the same bits as the reference, hence the
   same exponents for chaotic networks).
2. The Jacobians' coefficients of all steps at once from the stored states (``gated_cells``: a handful of
   operations on (T, E, B, H) tensors), and the tangent map built from them (``gated_tangent``: the Jacobians'
   columns on h stored for many exponents, as scalings of ``W Q`` for few).
3. The tangent recursion, orthonormalized in windows by ``spectrum.windows`` (the TanhRNN engine's driver: guarded
   Cholesky QR, t_ons="auto" or an integer, rollback of collapsed windows).
"""
from __future__ import annotations

from .gated_tangent import tangent_map
from .runtime import take_buffer
from .windows import Plan, run_windows

__all__ = ["forward_group"]


def forward_group(kernel, S_all, X, Q0, plan: Plan):
    """The forward of one sub-batch: exponents (E, B, k) and what its backward needs.

    kernel: the cell's ``gated_cells`` kernel for this sub-batch; S_all (T + 1, E, B, S) the state trajectory from
    the cell's own step (the reference's bits; entering step t is S_all[t]); X (E, B, T, I); Q0 (E, B, S, k)
    orthonormal."""
    E, B, T, _ = X.shape
    S, k, M = S_all.shape[-1], Q0.shape[-1], E * B
    S_prev = S_all[:-1]

    # 2. coefficients of every step at once, and the tangent map
    pre = kernel.pre(S_prev, X)  # pre-activations, (T, E, B, .) each
    gates = kernel.gates(pre, S_prev)  # (T, E, B, H) each
    coefs = kernel.coefs(gates)  # (T, E, B, H) each
    QTs = take_buffer((T + 1, M, k, S), S_all.dtype, S_all.device)  # QTs[t] = Q^T entering step t
    QTs[0] = Q0.reshape(M, S, k).mT
    tangent = tangent_map(kernel, coefs, T, k, QTs)

    # 3. the tangent recursion on rows, orthonormalized in windows
    lam, Ls, qr_at = run_windows(tangent.push, QTs, plan)  # push(t, out): Y_t^T = (J_t Q_t)^T
    if plan.keep_diagnostics:
        plan.diag.update(log_r=[lr.reshape(E, B, k) for lr in plan.diag["log_r"]], states=list(S_all[1:].unbind(0)))
    if plan.keep_windows:  # where a continuation starts: the last state and basis (copied out of the pooled buffer)
        plan.diag.update(final_state=S_all[-1].clone(), final_basis=QTs[T].clone().mT.reshape(E, B, S, k))

    saved = dict(kernel=kernel, S_all=S_all, gates=gates, coefs=coefs, tangent=tangent, QTs=QTs, Ls=Ls, qr_at=qr_at,
                 plan=plan, X=X)
    return lam.reshape(E, B, k), saved
