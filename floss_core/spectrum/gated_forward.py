"""The forward of the fast gated engine for one sub-batch of LSTM or GRU networks (see ``spectrum.gated``).

1. The state trajectory first, with the cell's own step (the same bits as the reference, hence the same exponents
   for chaotic networks).
2. The Jacobians' coefficients of all steps at once from the stored states (``gated_cells``: a handful of
   operations on (T, E, B, H) tensors), and the Jacobians themselves as diagonal scalings of W, in chunks of steps.
3. The tangent recursion, one matmul per step, orthonormalized in windows by ``spectrum.windows`` (the TanhRNN
   engine's driver: guarded Cholesky QR, t_ons="auto" or an integer, rollback of collapsed windows).
"""
from __future__ import annotations

import torch

from .runtime import take_buffer
from .windows import Plan, run_windows

__all__ = ["forward_group", "chunk_steps"]

_CHUNK_BYTES = 2 ** 22  # per chunk of steps, the Jacobians (or their adjoints) of all its trajectories: ~4 MiB


def chunk_steps(T: int, per_step_bytes: int) -> int:
    """Steps per chunk: as many as fit ``_CHUNK_BYTES`` (at least 1, at most T)."""
    return max(1, min(T, _CHUNK_BYTES // max(1, per_step_bytes)))


def forward_group(kernel, step, h0, X, Q0, plan: Plan):
    """The forward of one sub-batch: exponents (E, B, k) and what its backward needs.

    kernel: the cell's ``gated_cells`` kernel for this sub-batch; step(h (E, B, S), x (E, B, I)) -> (E, B, S) the
    cell's own step; h0 (E, B, S), X (E, B, T, I), Q0 (E, B, S, k) orthonormal."""
    E, B, T, _ = X.shape
    S, k, M, H = h0.shape[-1], Q0.shape[-1], E * B, kernel.H
    dtype, device = h0.dtype, h0.device

    # 1. the state trajectory, with the cell's own step (same bits as the reference)
    states = [h0]
    h = h0
    for x in X.unbind(2):  # unbind once, never index inside the loop
        h = step(h, x)  # (E, B, S)
        states.append(h)
    S_all = torch.stack(states)  # (T + 1, E, B, S): entering step t is S_all[t]
    S_prev = S_all[:-1]

    # 2. coefficients of every step at once, then the Jacobians in chunks (few operations, cache-sized)
    pre = kernel.pre(S_prev, X)  # pre-activations, (T, E, B, .) each
    coefs = kernel.coefs(*pre, S_prev)  # (T, E, B, H) each
    J = take_buffer((T, M, H, S), dtype, device)  # JT (GRU) or JhT (LSTM) of every step
    D = torch.empty(T, M, 2, H, dtype=dtype, device=device) if kernel.state_factor == 2 else None
    chunk = chunk_steps(T, M * H * S * J.element_size())
    for t0 in range(0, T, chunk):
        kernel.jacobians(coefs, t0, min(T, t0 + chunk), J, D)

    # 3. the tangent recursion on rows: QTs[t] = Q^T entering step t (orthonormal rows right after a QR)
    QTs = take_buffer((T + 1, M, k, S), dtype, device)
    QTs[0] = Q0.reshape(M, S, k).mT
    QTv, Jv = QTs.unbind(0), J.unbind(0)  # the per-step views, made once
    Dv = D.unbind(0) if D is not None else [None] * T
    push_step = kernel.push

    def push(t, out=None):  # Y_t^T = (J_t Q_t)^T
        return push_step(QTv[t], Jv[t], Dv[t], out=out)

    lam, Ls, qr_at = run_windows(push, QTs, plan)
    if plan.keep_diagnostics:
        plan.diag.update(log_r=[lr.reshape(E, B, k) for lr in plan.diag["log_r"]], states=states[1:])

    saved = dict(kernel=kernel, S_all=S_all, pre=pre, coefs=coefs, J=J, D=D, QTs=QTs, Ls=Ls, qr_at=qr_at,
                 plan=plan, X=X)
    return lam.reshape(E, B, k), saved
