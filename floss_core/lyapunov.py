"""Differentiable Lyapunov spectra of RNN ensembles (the Benettin / QR method).

A Lyapunov exponent is the average exponential growth rate, per time step, of an infinitesimal perturbation of the
state. For the step Jacobians ``J_t = dh_t / dh_{t-1}`` along a trajectory, the long-term Jacobian
``J_T ... J_1`` stretches a k-dimensional volume by ``exp(T (lambda_1 + ... + lambda_k))``. To measure the first k
rates without overflow, push an orthonormal basis Q (S x k) through the Jacobians and re-orthonormalize with a QR
decomposition every ``t_ons`` steps: ``J Q = Q' R``. The diagonal of R holds the stretching of each successive
direction orthogonal to the previous ones, and

    lambda_i = (1 / T_acc) * sum over QR steps of log |R_ii|        (nats per time step)

where T_acc counts the steps after the transient. Every operation here (the state update, ``J Q``, ``torch.linalg.qr``
and ``log|diag R|``) is differentiable, so the exponents can be trained: that is gradient flossing.

Two gradient modes:
    "full"      back-propagate through the state trajectory and the tangent recursion (the author's choice).
    "detached"  the state trajectory is computed without gradient; the gradient flows only through the Jacobians'
                explicit parameter dependence and the tangent recursion. Bounded in chaotic nets, but biased.
"""
from __future__ import annotations

import torch

from .rng import sample

__all__ = ["lyapunov_spectrum", "tangent_step", "check_finite_parameters", "prepare_inputs"]

GRADIENT_MODES = ("full", "detached")


def tangent_step(model, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
    """One step of the state and its tangent vectors: ``(h_next, J_t Q)``.

    Uses the model's ``step_tangent`` when it has one; otherwise Jacobian-vector products of ``model.step`` from
    ``torch.func`` (one jvp per tangent vector, vectorized with vmap), which stay differentiable with respect to the
    model's parameters. h (E, B, S), x (E, B, I), Q (E, B, S, K) -> (E, B, S), (E, B, S, K).
    """
    if hasattr(model, "step_tangent"):
        return model.step_tangent(h, x, Q)
    return jvp_tangent_step(model, h, x, Q)


def jvp_tangent_step(model, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
    """``tangent_step`` through ``torch.func.jvp`` on ``model.step`` alone (any cell)."""

    def push(q):  # q (E, B, S)
        return torch.func.jvp(lambda hh: model.step(hh, x), (h,), (q,))

    h_next, JQ = torch.func.vmap(push, in_dims=-1, out_dims=(None, -1))(Q)  # (E, B, S), (E, B, S, K)
    return h_next, JQ


def check_finite_parameters(model) -> None:
    """Raise ValueError naming every parameter of ``model`` that holds NaN or inf."""
    bad = [name for name, p in model.named_parameters() if not bool(torch.isfinite(p).all())]
    if bad:
        raise ValueError(f"model parameters contain non-finite values (NaN or inf): {', '.join(bad)}")


def prepare_inputs(model, inputs: torch.Tensor | None, *, n_steps: int | None = None, batch: int = 1):
    """Validate inputs and return them as (E, B, T, I).

    ``inputs`` is (E, B, T, I) (one batch per network) or (B, T, I) (the same batch for every network). With
    ``inputs=None``, ``n_steps`` zero-input steps for ``batch`` trajectories per network are used.
    """
    E, I = model.n_networks, model.input_size
    p = next(model.parameters())
    if inputs is None:
        if n_steps is None:
            raise ValueError("give either inputs of shape (E, B, T, I) or n_steps for zero input")
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"n_steps must be a positive int, got {n_steps!r}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be a positive int, got {batch!r}")
        return torch.zeros(E, batch, n_steps, I, dtype=p.dtype, device=p.device)
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    if n_steps is not None and n_steps != inputs.shape[-2]:
        raise ValueError(f"n_steps={n_steps} disagrees with the inputs' time dimension {inputs.shape[-2]}")
    if inputs.dim() == 3:
        inputs = inputs.unsqueeze(0).expand(E, -1, -1, -1)
    if inputs.dim() != 4 or inputs.shape[0] != E or inputs.shape[-1] != I:
        raise ValueError(f"inputs must have shape (E, B, T, I) = ({E}, B, T, {I}) or (B, T, {I}), "
                         f"got {tuple(inputs.shape)}")
    if inputs.shape[1] < 1 or inputs.shape[2] < 1:
        raise ValueError(f"inputs need at least one trajectory and one time step, got {tuple(inputs.shape)}")
    if not bool(torch.isfinite(inputs).all()):
        raise ValueError("inputs contain non-finite values (NaN or inf)")
    return inputs.to(dtype=p.dtype, device=p.device)


def _qr_schedule(T: int, n_transient: int, t_ons: int) -> list[bool]:
    """For each step t (0-based), whether a QR follows it: every t_ons steps in the transient, at its end, every
    t_ons steps after it, and at the last step."""
    qr_after = [False] * T
    for t in range(T):
        in_transient = t < n_transient
        since = (t + 1) if in_transient else (t + 1 - n_transient)
        qr_after[t] = since % t_ons == 0 or t == n_transient - 1 or t == T - 1
    return qr_after


def setup_spectrum(model, inputs, k, *, n_steps, batch, n_transient, h0, Q0, generator, gradient, reduce, check):
    """The argument checks shared by the spectrum engines (same order, same messages); returns inputs (E, B, T, I),
    n_transient, the initial state h0 (E, B, S) and the orthonormalized initial basis Q (E, B, S, k)."""
    if check:
        check_finite_parameters(model)
    S = model.state_size
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= S:
        raise ValueError(f"k must be an int with 1 <= k <= state size {S}, got {k!r}")
    if gradient not in GRADIENT_MODES:
        raise ValueError(f"gradient must be one of {GRADIENT_MODES}, got {gradient!r}")
    if reduce not in ("mean", "none"):
        raise ValueError(f"reduce must be 'mean' or 'none', got {reduce!r}")
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    E, B, T, _ = inputs.shape
    if n_transient is None:
        n_transient = T // 4
    if isinstance(n_transient, bool) or not isinstance(n_transient, int) or n_transient < 0:
        raise ValueError(f"n_transient must be an int >= 0, got {n_transient!r}")
    if T <= n_transient:
        raise ValueError(f"the sequence ({T} steps) must be longer than the transient ({n_transient} steps)")
    p = next(model.parameters())
    if h0 is None:
        h0 = model.initial_state(B, generator)
    if h0.shape != (E, B, S):
        raise ValueError(f"h0 must have shape (E, B, S) = {(E, B, S)}, got {tuple(h0.shape)}")
    if check and not bool(torch.isfinite(h0).all()):
        raise ValueError("h0 contains non-finite values (NaN or inf)")
    if Q0 is None:
        Q0 = sample(torch.randn, E, B, S, k, dtype=p.dtype, device=p.device, generator=generator)
    elif Q0.shape != (E, B, S, k):
        raise ValueError(f"Q0 must have shape (E, B, S, k) = {(E, B, S, k)}, got {tuple(Q0.shape)}")
    Q, _ = torch.linalg.qr(Q0.to(dtype=p.dtype, device=p.device))  # (E, B, S, k)
    return inputs, n_transient, h0, Q


def lyapunov_spectrum(model, inputs: torch.Tensor | None, k: int, *, n_steps: int | None = None, batch: int = 1,
                      t_ons: int = 1, n_transient: int | None = None, h0: torch.Tensor | None = None,
                      Q0: torch.Tensor | None = None, generator: torch.Generator | None = None,
                      gradient: str = "full", reduce: str = "mean", check: bool = True,
                      method: str = "reference") -> torch.Tensor:
    """The first k Lyapunov exponents of every network of an ensemble, in nats per time step.

    Main arguments:
        model: a TanhRNN (or any cell of the protocol in ``floss_core.models``) holding E networks.
        inputs: (E, B, T, I), or (B, T, I) shared by all networks, or None for zero input (then give ``n_steps``).
            The exponents are those of the input-driven dynamics.
        k: how many exponents, 1 <= k <= state size S.

    Other arguments (keyword-only):
        n_steps, batch: with ``inputs=None``, T zero-input steps for ``batch`` trajectories per network.
        t_ons: re-orthonormalize (QR) every t_ons steps; 1 is exact, larger is cheaper but the basis may collapse
            when (lambda_1 - lambda_k) * t_ons is large.
        n_transient: steps at the start that align the basis and the state but are not averaged (default T // 4).
            The exponents average over the remaining T - n_transient steps, which must be at least 1.
        h0: initial state (E, B, S). Default: a random start ``model.initial_state`` drawn from ``generator``
            (a zero-input network started at its fixed point would stay there forever).
        Q0: initial tangent basis (E, B, S, k), orthonormalized here. Default: random orthonormal from ``generator``.
        generator: torch.Generator for the random start and basis (same generator state, same numbers).
        gradient: "full" (through the state trajectory, default) or "detached" (see the module docstring).
        reduce: "mean" averages the exponents over the B trajectories of each network -> (E, k);
            "none" returns one spectrum per trajectory -> (E, B, k).
        check: True (default) raises on non-finite parameters or exponents; False returns NaN/inf for the affected
            networks and leaves the others untouched (training uses this so one diverging network cannot stop
            the ensemble).
        method: "reference" (this loop, autograd through every QR) or "fast" (``floss_core.fast``: Cholesky QR from
            batched matmuls with an orthogonality guard and a hand-written backward; the same exponents and gradients
            up to roundoff, TanhRNN only, other cells fall back to the reference; also accepts ``t_ons="auto"``).

    Returns the exponents sorted as the QR produces them (descending for a converged spectrum), differentiable with
    respect to the model's parameters. Raises ValueError on bad input, and on exponents that stop being finite,
    naming the step.
    """
    if method == "fast":
        from .fast import fast_lyapunov_spectrum  # lazy: fast.py imports this module

        return fast_lyapunov_spectrum(model, inputs, k, n_steps=n_steps, batch=batch, t_ons=t_ons,
                                      n_transient=n_transient, h0=h0, Q0=Q0, generator=generator,
                                      gradient=gradient, reduce=reduce, check=check)
    if method != "reference":
        raise ValueError(f"method must be 'reference' or 'fast', got {method!r}")
    if isinstance(t_ons, bool) or not isinstance(t_ons, int) or t_ons < 1:
        raise ValueError(f"t_ons must be an int >= 1, got {t_ons!r}")
    inputs, n_transient, h0, Q = setup_spectrum(model, inputs, k, n_steps=n_steps, batch=batch,
                                                n_transient=n_transient, h0=h0, Q0=Q0, generator=generator,
                                                gradient=gradient, reduce=reduce, check=check)
    E, B, T, _ = inputs.shape
    p = next(model.parameters())
    h = h0.to(dtype=p.dtype, device=p.device)  # (E, B, S)
    detached = gradient == "detached"
    if detached:
        h = h.detach()
    xs = inputs.unbind(2)  # T x (E, B, I): unbind once, never index inside the loop
    qr_after = _qr_schedule(T, n_transient, t_ons)
    log_r = []  # per QR after the transient: (E, B, k)
    states = []  # (E, B, S) per step, kept only to locate non-finite values
    for t in range(T):
        if detached:
            with torch.no_grad():
                h_next = model.step(h, xs[t])
            _, Q = tangent_step(model, h, xs[t], Q)
            h = h_next
        else:
            h, Q = tangent_step(model, h, xs[t], Q)
        states.append(h)
        if qr_after[t]:
            Q, R = torch.linalg.qr(Q)  # (E, B, S, k), (E, B, k, k)
            if t >= n_transient:
                log_r.append(torch.diagonal(R, dim1=-2, dim2=-1).abs().log())  # (E, B, k)
    lam = torch.stack(log_r).sum(0) / (T - n_transient)  # (E, B, k)
    if check and not bool(torch.isfinite(lam).all()):
        _raise_non_finite(states, log_r, qr_after, n_transient)
    return lam.mean(1) if reduce == "mean" else lam


def _raise_non_finite(states, log_r, qr_after, n_transient):
    """Name the first step where the state or the exponents stopped being finite."""
    for t, h in enumerate(states):
        bad = ~torch.isfinite(h).flatten(1).all(1)  # (E,)
        if bool(bad.any()):
            nets = bad.nonzero().flatten().tolist()
            raise ValueError(f"the state became non-finite at step {t} in network(s) {nets}: "
                             "the dynamics diverged (check the weights' scale and the inputs)")
    qr_steps = [t for t, q in enumerate(qr_after) if q and t >= n_transient]
    for t, lr in zip(qr_steps, log_r):
        bad = ~torch.isfinite(lr).flatten(1).all(1)
        if bool(bad.any()):
            nets = bad.nonzero().flatten().tolist()
            raise ValueError(f"the exponents stopped being finite at step {t} in network(s) {nets}: the tangent "
                             "basis overflowed or collapsed (log|R_ii| = -inf); try a smaller t_ons or float64")
    raise ValueError("the exponents are not finite")
