"""``lyapunov_spectrum``: the one public entry point of the spectrum engines. It validates its arguments once, picks
the engine (the fast one wherever it applies; the reference is the only fallback) and reports non-finite results once.
"""
from __future__ import annotations

import torch

from ..checks import check_choice, check_int, check_number
from .errors import bad_networks, raise_non_finite
from .fast import ORTH_METHODS, fast_spectrum, supports_fast_tanh
from .gated import gated_kind, gated_spectrum
from .inputs import setup_spectrum
from .qr import PASS2_MAX_ERROR
from .reference import reference_spectrum
from .window_report import reference_window_report

__all__ = ["lyapunov_spectrum", "fast_lyapunov_spectrum", "supports_fast", "DEFAULT_METHOD", "DEFAULT_T_ONS",
           "METHODS"]

METHODS = ("fast", "reference")
DEFAULT_METHOD = "fast"  # the engine of lyapunov_spectrum and of flossing (FlossConfig.method)
DEFAULT_T_ONS = "auto"  # lyapunov_spectrum's QR schedule: the t_ons = 1 exponents up to roundoff, fewer QRs


def lyapunov_spectrum(model, inputs: torch.Tensor | None, k: int, *, n_steps: int | None = None, batch: int = 1,
                      t_ons: int | str = DEFAULT_T_ONS, n_transient: int | None = None, h0: torch.Tensor | None = None,
                      Q0: torch.Tensor | None = None, generator=None, gradient: str = "full", reduce: str = "mean",
                      check: bool = True, method: str = DEFAULT_METHOD, orth: str = "cholesky",
                      tol: float | None = None, max_window: int = 64, group: int | None = None,
                      workers: int | None = None, info: dict | None = None) -> torch.Tensor:
    """The first k Lyapunov exponents of every network of an ensemble, in nats per time step.

    Main arguments:
        model: a TanhRNN, LSTM or GRU, a ``floss_core.cells.adapters.TorchCell`` (a torch.nn module), or any cell of
            the protocol in ``floss_core.cells.protocol``, holding E networks.
        inputs: (E, B, T, I), or (B, T, I) shared by all networks, or None for zero input (then give ``n_steps``).
            The exponents are those of the input-driven dynamics.
        k: how many exponents, 1 <= k <= state size S.

    Other arguments (keyword-only):
        n_steps, batch: with ``inputs=None``, T zero-input steps for ``batch`` trajectories per network (given
            inputs set both; ``batch`` must still be an int >= 1).
        t_ons: "auto" (default) or re-orthonormalize (QR) every t_ons steps. 1 is the definition; larger is
            cheaper, and a window whose basis would collapse ((lambda_1 - lambda_k) * t_ons too large for the
            precision) is redone with a QR every step, so every t_ons gives the t_ons = 1 exponents up to roundoff.
            "auto" (fast engine, orth="cholesky") chooses each window from the measured stretching, aiming its basis'
            condition number at ~1e5 in float64 (~1e2 in float32): measured at (N, k, T) = (80, 75, 300), g = 0.5-3,
            it gives the t_ons = 1 reference's exponents to ~1e-10 and gradients to ~1e-8 (relative) in float64,
            while the reference's own float32 and float64 results differ by ~0.3 and ~100% (benchmarks/README.md);
            LSTM and GRU likewise (tests/test_fast_gated.py). A network whose directions spread by more than that
            in one step (an LSTM at k close to S, say) gets a QR every step.
            The reference engine, and orth="householder", do a QR every step for "auto".
        n_transient: steps at the start that align the basis and the state but are not averaged (default T // 4).
            The exponents average over the remaining T - n_transient steps, which must be at least 1.
        h0: initial state (E, B, S). Default: a random start ``model.initial_state`` drawn from ``generator``
            (a zero-input network started at its fixed point would stay there forever).
        Q0: initial tangent basis (E, B, S, k), orthonormalized here. Default: random orthonormal from ``generator``.
        generator: torch.Generator, or a list of one per network, for the random start and basis (same generator
            state, same numbers).
        gradient: "full" (through the state trajectory, default) or "detached" (see the module docstring).
        reduce: "mean" averages the exponents over the B trajectories of each network -> (E, k);
            "none" returns one spectrum per trajectory -> (E, B, k).
        check: True (default) raises on non-finite parameters or exponents; False returns NaN/inf for the affected
            networks and goes on with the others (training uses this so one diverging network cannot stop the
            ensemble): with t_ons = 1 their numbers are those of a run without the failed network; with a larger or
            "auto" t_ons they may move in the last digits, since a sub-batch shares its windows and rollbacks.
        method: "fast" (default: Cholesky QR from batched matmuls with an orthogonality guard and a hand-written
            backward, the same exponents and gradients as the reference up to roundoff) or "reference"
            (``spectrum.reference``: autograd through every step and QR). The fast engine takes TanhRNN
            (``spectrum.fast``), floss_core's LSTM and GRU and single-layer torch.nn LSTM / GRU / LSTMCell / GRUCell
            modules in a TorchCell (``spectrum.gated``), not subclasses that change their step (``supports_fast``);
            every other cell runs the reference whatever the method.
        orth, tol, max_window, group, workers, info: options of the fast engine, see below.

    Options of the fast engine (ignored by the reference):
        orth: "cholesky" (default: guarded Cholesky QR, Householder where the guard fails) or "householder"
            (torch.linalg.qr at every scheduled QR; t_ons="auto" then means a QR every step).
        tol: accepted orthogonality error of a Cholesky QR factor, at most 1e-2 (default 1e-7 in float64, 1e-3 in
            float32; a larger error would let a window's collapsing basis through).
        max_window: longest window for t_ons="auto".
        group: networks per sub-batch (default: all on GPU; on CPU balanced sub-batches whose per-step data stay near
            8 MiB, their number a multiple of ``workers``).
        workers: CPU threads that run sub-batches at once, each with one intra-op thread (default: torch's thread
            count, fewer where the sub-batches would be too small to gain; on GPU 1). With fixed sub-batches (``group``)
            the result does not depend on it. With t_ons="auto" the networks of a sub-batch share their windows (and
            with an integer t_ons > 1 their rollbacks), so the default sub-batches (hence the thread count) move the
            last digits (~1e-11 in float64).
        info: a dict that receives "n_qr", the number of orthonormalizations done (mean over networks; fast engine).

    ``info`` (either engine) also receives the finite-time stretchings of every QR window after the transient and
    where a continuation starts (``spectrum.window_report``): "log_r" (n, E, B, k), "window_ends" (n,),
    "window_mask" (n, E), "final_state" (E, B, S), "final_basis" (E, B, S, k). ``spectrum_estimate`` builds its
    standard errors from them.

    Returns the exponents sorted as the QR produces them (descending for a converged spectrum), differentiable with
    respect to the model's parameters. Raises ValueError on bad input, and on exponents that stop being finite,
    naming the step.
    """
    check_choice("method", method, METHODS)
    if t_ons != "auto":
        check_int("t_ons (or 'auto')", t_ons, 1)
    check_choice("orth", orth, ORTH_METHODS)
    if t_ons == "auto" and orth == "householder":  # "auto" needs the Cholesky guard to detect ill-conditioned windows
        t_ons = 1
    check_number("tol", tol, 0, PASS2_MAX_ERROR, none=True)
    check_int("max_window", max_window, 1)
    check_int("batch", batch, 1)
    if info is not None and not isinstance(info, dict):
        raise ValueError(f"info must be a dict (it receives 'n_qr' and the windows' stretchings) or None, "
                         f"got {type(info).__name__}")
    check_int("group", group, 1, none=True)
    check_int("workers", workers, 1, none=True)
    inputs, n_transient, h0, Q = setup_spectrum(model, inputs, k, n_steps=n_steps, batch=batch,
                                                n_transient=n_transient, h0=h0, Q0=Q0, generator=generator,
                                                gradient=gradient, reduce=reduce, check=check)
    p = next(model.parameters())
    h0 = h0.to(dtype=p.dtype, device=p.device)  # (E, B, S)
    detached = gradient == "detached"
    engine = fast_spectrum if supports_fast_tanh(model) else gated_spectrum if gated_kind(model) else None
    if method == "fast" and engine is not None:
        lam, masks = engine(model, inputs, h0, Q, n_transient=n_transient, t_ons=t_ons, detached=detached,
                            check=check, orth=orth, tol=tol, max_window=max_window, group=group, workers=workers,
                            info=info)
    else:
        diag = {} if info is not None else None
        lam, states, log_r = reference_spectrum(model, inputs, h0, Q, n_transient=n_transient,
                                                t_ons=1 if t_ons == "auto" else t_ons, detached=detached, diag=diag)
        if info is not None:
            info.update(reference_window_report(log_r, states[-1], diag["final_basis"]))
        masks = lambda: _reference_masks(states, log_r)  # noqa: E731
    if check and not bool(torch.isfinite(lam).all()):
        raise_non_finite(*masks())
    return lam.mean(1) if reduce == "mean" else lam  # (E, k) or (E, B, k)


def supports_fast(model) -> bool:
    """Whether ``model`` takes the fast engine: a TanhRNN (``spectrum.fast``), a floss_core LSTM or GRU, or a
    single-layer TorchCell of kind "LSTM" / "GRU" (``spectrum.gated``); not a subclass that changes their dynamics."""
    return supports_fast_tanh(model) or gated_kind(model) is not None


def fast_lyapunov_spectrum(model, inputs: torch.Tensor | None, k: int, **kwargs) -> torch.Tensor:
    """``lyapunov_spectrum(..., method="fast")`` (kept for code written against the first API)."""
    return lyapunov_spectrum(model, inputs, k, method="fast", **kwargs)


def _reference_masks(states, log_r):
    """(T, E) masks of non-finite states and exponents of the reference engine."""
    state_bad = torch.stack([bad_networks(h) for h in states])  # (T, E)
    exp_bad = torch.zeros_like(state_bad)
    for t, lr in log_r:
        exp_bad[t] |= bad_networks(lr)
    return state_bad, exp_bad
