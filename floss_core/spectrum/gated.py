"""The fast engine for LSTM and GRU networks: ``floss_core.LSTM`` / ``GRU`` ensembles and single-layer torch.nn
LSTM / GRU modules wrapped by ``floss_core.cells.adapters.TorchCell`` (forward and backward).

The same method as the TanhRNN engine (``spectrum.fast``): the state trajectory first with the cell's own step (the
reference's bits), the tangent recursion orthonormalized by the guarded Cholesky QR in windows (``spectrum.windows``:
t_ons="auto" or an integer, with the rollback of collapsed windows), and one autograd node with a hand-written
backward. What differs is the Jacobian (``gated_cells``): the coefficients of every step (gate derivatives, from the
stored states, all steps at once) scale the rows of W's gate blocks, plus a diagonal (the GRU's z, the LSTM's f on c).
``gated_tangent`` applies it, for many exponents from J's columns on h built for every step (a tangent step is one
matmul, for the LSTM plus one multiply-add on c), for few as scalings of ``W Q`` (a matmul with the shared W and two
weighted sums: no per-step array of size S x H to read); never autograd through each step. The backward
(``gated_backward``) goes back through the QRs and the tangent recursion, turns the Jacobians' adjoints into the
coefficients' (chunks of steps at once), takes their vector-Jacobian product over all steps at once, and runs the
state's own adjoint back in time (one tangent step per step).

Chosen by ``lyapunov_spectrum(method="fast")`` (the default, and so by flossing and ``floss_core.adapters``) for
floss_core's LSTM and GRU (not subclasses that replace ``_forward``, ``step`` or ``step_tangent``) and for TorchCells
of kind "LSTM" / "GRU" with one layer (``gated_kind``).

The gradients reach W, U, b (and the GRU's b_h), h0, the inputs and Q0 (of a TorchCell: the module's own
``weight_hh``, ``weight_ih``, ``bias_ih``, ``bias_hh``). gradient="detached" drops the state trajectory's dependence
on the parameters; the Jacobians' coefficients still depend on W, U, the biases and the inputs through the gates
(as in the reference). Works in float32 and float64, on CPU and CUDA.
"""
from __future__ import annotations

import weakref

import torch
from torch.autograd.function import once_differentiable

from ..cells.adapters import TorchCell
from ..cells.gated import GRU, LSTM, gru_step, lstm_step
from ..cells.stacked import stacked_step
from .fast import bad_masks, engine_plans, n_qr, sub_batches
from .gated_backward import backward_group
from .gated_cells import KERNELS
from .gated_forward import forward_group
from .runtime import give_buffer, run_jobs
from .window_report import engine_window_report

__all__ = ["gated_kind", "gated_spectrum"]

_OWN = {LSTM: ("_forward", "step", "step_tangent"), GRU: ("_forward", "step", "step_tangent"),
        TorchCell: ("step", "_weights", "step_tangent")}


def gated_kind(model) -> str | None:
    """"LSTM" or "GRU" where ``model`` takes this engine, else None: a floss_core LSTM / GRU (or a subclass that keeps
    its ``_forward``, ``step`` and ``step_tangent``), or a single-layer TorchCell of kind "LSTM" / "GRU"."""
    for cls, names in _OWN.items():
        if isinstance(model, cls):
            if any(getattr(type(model), name, None) is not getattr(cls, name, None) for name in names):
                return None
            if cls is TorchCell:
                ok = model.kind in KERNELS and getattr(model, "num_layers", 1) == 1
                return model.kind if ok else None
            return "LSTM" if cls is LSTM else "GRU"
    return None


def _parameters(model, kind: str):
    """(W, U, b, b_h or None, trajectory) of ``model``: W (E, G H, H), U (E, G H, I), b and b_h (E, G H) as views of
    its parameters (gradients reach them), and ``trajectory(W, U, b, b_h, h0, X)``, the states (T + 1, E, B, S) of
    a sub-batch from h0 (E, B, S) and inputs X (E, B, T, I), with the cell's own step (the reference's bits)."""
    if isinstance(model, TorchCell):
        w_ih, w_hh, b_ih, b_hh = model._weights()
        zero = torch.zeros(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device)
        b_ih = zero if b_ih is None else b_ih
        b_hh = zero if b_hh is None else b_hh
        b, b_h = (b_ih + b_hh, None) if kind == "LSTM" else (b_ih, b_hh.unsqueeze(0))
        layers = [model._weights()]  # TorchCell.step of one layer is stacked_step on (B, S), here without its
        # per-step wrapper (the same operations on the same tensors, so the same bits)

        def trajectory(W, U, b_, b_h_, h0, X):
            h, states = h0[0], [h0[0]]
            for x in X[0].unbind(1):  # unbind once, never index inside the loop
                h = stacked_step(kind, layers, h, x)  # (B, S)
                states.append(h)
            return torch.stack(states).unsqueeze(1)

        return w_hh.unsqueeze(0), w_ih.unsqueeze(0), b.unsqueeze(0), b_h, trajectory
    step = (lambda W, U, b, b_h, h, x: lstm_step(W, U, b, h, x)[0]) if kind == "LSTM" else \
        (lambda W, U, b, b_h, h, x: gru_step(W, U, b, b_h, h, x)[0])

    def trajectory(W, U, b, b_h, h0, X):
        h, states = h0, [h0]
        for x in X.unbind(2):
            h = step(W, U, b, b_h, h, x)  # (E, B, S)
            states.append(h)
        return torch.stack(states)

    return model.W, model.U, model.b, (model.b_h if kind == "GRU" else None), trajectory


class _GatedSpectrum(torch.autograd.Function):
    """(W, U, b, b_h, h0, X, Q0) -> exponents (E, B, k) of an LSTM or GRU, with a hand-written backward.

    The networks run in sub-batches (``groups``, slices of E), on ``workers`` threads at once
    (``runtime.run_jobs``)."""

    @staticmethod
    def forward(ctx, W, U, b, b_h, h0, X, Q0, kind: str, trajectory, plans: list, groups: list, workers: int,
                one_thread: bool):
        B = X.shape[1]

        def job(g, plan):
            params = W[g], U[g], b[g], None if b_h is None else b_h[g]
            states = trajectory(*params, h0[g], X[g])  # (T + 1, E_g, B, S)
            return forward_group(KERNELS[kind](*params, B), states, X[g], Q0[g], plan)

        out = run_jobs(workers, [lambda g=g, pl=pl: job(g, pl) for g, pl in zip(groups, plans)], one_thread,
                       W.device.type)
        ctx.saved_groups, ctx.workers, ctx.one_thread = [sv for _, sv in out], workers, one_thread
        for _, sv in out:  # its buffers back to the pool once the graph (or this call's result) is freed
            for buf in [sv["QTs"], *sv["tangent"].buffers()]:
                weakref.finalize(ctx, give_buffer, buf)
        return torch.cat([lam for lam, _ in out]) if len(out) > 1 else out[0][0]

    @staticmethod
    @once_differentiable
    def backward(ctx, lam_bar):
        need = ctx.needs_input_grad[:7]
        out = run_jobs(ctx.workers, [lambda sv=sv, g=g: backward_group(sv, lam_bar[g], need)
                                     for sv, g in zip(ctx.saved_groups, _groups_of(ctx.saved_groups))],
                       ctx.one_thread, lam_bar.device.type)
        grads = [None if out[0][i] is None else torch.cat([o[i] for o in out]) if len(out) > 1 else out[0][i]
                 for i in range(7)]
        return (*grads, None, None, None, None, None, None)


def _groups_of(saved_groups) -> list:
    """The slices of E of the sub-batches, from their saved sizes."""
    starts, e0 = [], 0
    for sv in saved_groups:
        E = sv["X"].shape[0]
        starts.append(slice(e0, e0 + E))
        e0 += E
    return starts


def gated_spectrum(model, inputs: torch.Tensor, h: torch.Tensor, Q: torch.Tensor, *, n_transient: int, t_ons,
                   detached: bool, check: bool, orth: str, tol: float | None, max_window: int, group: int | None,
                   workers: int | None, info: dict | None):
    """Exponents (E, B, k) of an LSTM or GRU (``gated_kind``) from checked arguments (``spectrum.api`` validates
    them), and a function that returns the (T, E) masks of non-finite states and exponents for the error report."""
    kind = gated_kind(model)
    E, B, T, _ = inputs.shape
    S, k = model.state_size, Q.shape[-1]
    W, U, b, b_h, trajectory = _parameters(model, kind)
    if detached:  # the state trajectory carries no gradient (the coefficients still depend on the parameters)
        h = h.detach()
    groups, workers, one_thread = sub_batches(E, B, S, k, W, group, workers)
    plans = engine_plans(len(groups), T, n_transient=n_transient, t_ons=t_ons, detached=detached, check=check,
                         orth=orth, tol=tol, max_window=max_window, dtype=W.dtype, windows=info is not None)
    lam = _GatedSpectrum.apply(W, U, b, b_h, h, inputs, Q, kind, trajectory, plans, groups, workers, one_thread)
    if info is not None:
        info["n_qr"] = n_qr(plans, groups)
        info.update(engine_window_report(plans, groups, E, B, k))
    return lam, lambda: bad_masks(plans, n_transient)
