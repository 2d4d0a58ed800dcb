"""A fast engine for the differentiable Lyapunov spectrum of TanhRNN ensembles (forward and backward).

``lyapunov_spectrum(..., method="fast")`` returns the same exponents as the reference engine (kept for the tests to
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
   picks each window's length from the measured stretching (largest over smallest ``|R_ii|`` of the last window,
   and the largest ``|log|R_ii||``, kept within half the exponent range), and a window whose basis turned out too
   ill-conditioned (Cholesky failure or failed probe after two passes) or over- or underflowed
   (``inputs.window_collapsed``) is rolled back and redone with a QR every step. An integer ``t_ons`` follows the
   reference's schedule, with the same rollback: where the reference's basis would collapse (large t_ons in a
   chaotic net), this engine returns the t_ons = 1 answer instead of a wrong one.
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

This module takes ``TanhRNN`` (not a subclass that changes its dynamics); LSTM and GRU networks (floss_core's and
single-layer torch.nn modules in a TorchCell) take ``spectrum.gated``, the same method with their Jacobians, which
shares the window driver (``spectrum.windows``), the sub-batches and the QR code with this one; other cells fall
back to the reference. Works in float32 and float64, on CPU and CUDA (nothing here is CPU-only).
"""
from __future__ import annotations

import dataclasses
import weakref

import torch
from torch.autograd.function import once_differentiable

from ..cells.tanh import TanhRNN
from .errors import bad_networks
from .fast_backward import backward_group
from .fast_forward import Plan, forward_group
from .inputs import qr_schedule
from .qr import default_tol, window_kappa
from .runtime import MIN_INTRAOP_FLOPS, give_buffer, run_jobs
from .window_report import engine_window_report

__all__ = ["fast_spectrum", "supports_fast_tanh", "sub_batches", "engine_plans", "n_qr", "bad_masks", "ORTH_METHODS"]

ORTH_METHODS = ("cholesky", "householder")
_MIN_WORKER_FLOPS = 1e6  # CPU: least matmul flops per step of a sub-batch worth a thread of its own
_GROUP_BYTES = 2 ** 23  # CPU: networks per sub-batch so that its per-step working set is about this (measured best)


def supports_fast_tanh(model) -> bool:
    """Whether ``model`` takes this engine: a TanhRNN whose step and tangent step are TanhRNN's own."""
    if not isinstance(model, TanhRNN):
        return False
    cls = type(model)
    return all(getattr(cls, name) is getattr(TanhRNN, name) for name in ("step", "step_tangent"))


class _TanhSpectrum(torch.autograd.Function):
    """(W, U, b, h0, X, Q0) -> exponents (E, B, k) of a TanhRNN, with a hand-written backward.

    The networks run in sub-batches (``groups``, slices of E), on ``workers`` threads at once
    (``runtime.run_jobs``)."""

    @staticmethod
    def forward(ctx, W, U, b, h0, X, Q0, plans: list, groups: list, workers: int, one_thread: bool):
        out = run_jobs(workers, [lambda g=g, pl=pl: forward_group(W[g], U[g], b[g], h0[g], X[g], Q0[g], pl)
                                 for g, pl in zip(groups, plans)], one_thread, W.device.type)
        ctx.save_for_backward(W, U, X)
        ctx.saved_groups, ctx.groups, ctx.workers, ctx.one_thread = [sv for _, sv in out], groups, workers, one_thread
        for _, sv in out:  # its bases back to the pool once the graph (or this call's result) is freed
            weakref.finalize(ctx, give_buffer, sv["QTs"])
        return torch.cat([lam for lam, _ in out]) if len(out) > 1 else out[0][0]

    @staticmethod
    @once_differentiable
    def backward(ctx, lam_bar):
        W, U, X = ctx.saved_tensors
        need = ctx.needs_input_grad[:6]
        out = run_jobs(ctx.workers, [lambda g=g, sv=sv: backward_group(sv, W[g], U[g], X[g], lam_bar[g], need)
                                     for g, sv in zip(ctx.groups, ctx.saved_groups)], ctx.one_thread,
                       W.device.type)
        grads = [None if out[0][i] is None else torch.cat([o[i] for o in out]) if len(out) > 1 else out[0][i]
                 for i in range(6)]
        return (*grads, None, None, None, None)


def fast_spectrum(model, inputs: torch.Tensor, h: torch.Tensor, Q: torch.Tensor, *, n_transient: int, t_ons,
                  detached: bool, check: bool, orth: str, tol: float | None, max_window: int, group: int | None,
                  workers: int | None, info: dict | None):
    """Exponents (E, B, k) of a TanhRNN from checked arguments (``spectrum.api`` validates them), and a function
    that returns the (T, E) masks of non-finite states and exponents for the error report."""
    E, B, T, _ = inputs.shape
    S, k = model.state_size, Q.shape[-1]
    p = next(model.parameters())
    W, U, b = model.W, model.U, model.b
    if detached:  # the state trajectory carries no gradient: only the Jacobians' explicit W
        U, b, h, inputs = U.detach(), b.detach(), h.detach(), inputs.detach()
    groups, workers, one_thread = sub_batches(E, B, S, k, p, group, workers)
    plans = engine_plans(len(groups), T, n_transient=n_transient, t_ons=t_ons, detached=detached, check=check,
                         orth=orth, tol=tol, max_window=max_window, dtype=p.dtype, windows=info is not None)
    lam = _TanhSpectrum.apply(W, U, b, h, inputs, Q, plans, groups, workers, one_thread)  # (E, B, k)
    if info is not None:
        info["n_qr"] = n_qr(plans, groups)
        info.update(engine_window_report(plans, groups, E, B, k))
    return lam, lambda: bad_masks(plans, n_transient)


def engine_plans(n: int, T: int, *, n_transient: int, t_ons, detached: bool, check: bool, orth: str,
                 tol: float | None, max_window: int, dtype: torch.dtype, windows: bool = False) -> list:
    """One ``windows.Plan`` per sub-batch (each fills its own ``diag``) from the checked arguments; ``windows``: keep
    what ``window_report`` reports (the ``info`` of ``lyapunov_spectrum``)."""
    tol = default_tol(dtype) if tol is None else float(tol)
    schedule = None if t_ons == "auto" else qr_schedule(T, n_transient, t_ons)
    plan = Plan(n_transient=n_transient, schedule=schedule,
                detached=detached, orth=orth, tol=tol, kappa=window_kappa(tol, dtype), max_window=max_window,
                keep_diagnostics=check, keep_windows=windows)
    return [dataclasses.replace(plan, diag={}) for _ in range(n)]


def n_qr(plans, groups) -> float:
    """The orthonormalizations done, mean over the networks of all sub-batches (``info["n_qr"]``)."""
    return sum(pl.diag["n_qr"] * (g.stop - g.start) for pl, g in zip(plans, groups)) / groups[-1].stop


def sub_batches(E: int, B: int, S: int, k: int, p: torch.Tensor, group: int | None, workers: int | None):
    """How the fast engines split E networks (B trajectories each, state size S, k exponents, parameters like p):
    ``(groups, workers, one_thread)``, the slices of E that run as sub-batches, the threads that run them at once
    and whether each operation runs on one intra-op thread (see ``lyapunov_spectrum``'s group and workers)."""
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
    # one intra-op thread per operation on CPU where sub-batches run at once or each is small (measured: faster)
    group_flops = 2 * max(sizes) * B * S * S * (k + 1)
    one_thread = cpu and ((workers > 1 and len(groups) > 1) or group_flops < MIN_INTRAOP_FLOPS)
    return groups, workers, one_thread


def bad_masks(plans, n_transient: int):
    """(T, E) bool masks of non-finite states and exponents, over the sub-batches (each with its own QR steps)."""
    state_bad, exp_bad = [], []
    for pl in plans:
        states, qr_at = pl.diag["states"], pl.diag["qr_at"]
        state_bad.append(torch.stack([bad_networks(h) for h in states]))  # (T, E_g)
        bad = torch.zeros_like(state_bad[-1])
        steps = [t for t, q in enumerate(qr_at) if q and t >= n_transient]
        for t, lr in zip(steps, pl.diag["log_r"]):
            bad[t] = bad_networks(lr)
        exp_bad.append(bad)
    return torch.cat(state_bad, 1), torch.cat(exp_bad, 1)
