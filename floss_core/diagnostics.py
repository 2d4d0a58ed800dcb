"""Diagnostics of trained and untrained RNN ensembles: gradient norms, long-term Jacobians, training success.

Exploding and vanishing gradients are a statement about the long-term Jacobian ``P_tau = J_tau ... J_1`` (with
``J_t = dh_t / dh_{t-1}``): a loss at time t reaches the state tau steps earlier through ``P^T``, so gradients grow or
shrink like the singular values of P, ``sigma_i(tau) ~ exp(tau * lambda_i)`` with the Lyapunov exponents lambda_i.
Gradient flossing pushes the first exponents to zero, which keeps P well conditioned. This module measures that:

    gradient_norm_profile               ||d loss(t) / d h_{t - tau}|| for every lag tau, in one backward pass.
    long_term_jacobian_singular_values  log sigma_1..k of P_tau for every tau = 1..T, computed in log space, so
                                        horizons whose singular values over- or underflow any float are fine.
    condition_number                    log(sigma_1 / sigma_k) from those.
    steps_to_criterion, success         when a training run reached (and kept) a target accuracy.

Method for the long-term Jacobian. Push a full orthonormal basis (Q_0 = I) through the Jacobians with QR,
``J_tau Q_{tau-1} = Q_tau R_tau``, so that ``P_tau = Q_tau R_tau ... R_1``: P has the singular values of the upper
triangular product ``R_tau ... R_1``. That product overflows, so it is kept *row graded*,

    R_tau ... R_1 = diag(exp(c)) M          c (S,) log row scales, M (S, S) upper triangular with unit-norm rows,

and updated with a log-sum-exp style shift (row i of ``R diag(exp(c)) M`` only mixes rows j >= i, each scaled by
``exp(c_j - max_{j' >= i} c_j') <= 1``). Because the QR iteration orders its stretching factors, c is (eventually)
descending and M stays well conditioned: M carries the directions, c the magnitudes. (While c is out of order, by
d nats at most, rounding in row i is relative to the larger rows below it: a loss of about exp(d) * eps; the QR
transients seen in practice keep d to a few nats.) The singular values of the graded matrix are then computed by a
one-sided (Hestenes) Jacobi SVD that rotates pairs of rows and never leaves log space: the rotation of rows
``exp(c_i) m_i`` and ``exp(c_j) m_j`` depends only on ``c_j - c_i`` and ``m_i . m_j``, and every coefficient is
evaluated in a bounded form (never ``exp`` of a large positive number). One-sided Jacobi is
relatively accurate for graded matrices (Demmel & Veselic 1992): each sigma_i comes out to a relative error of about
``eps * (cond(M) + max_t cond(J_t))``, not ``eps * sigma_1 / sigma_i`` as from an SVD of the explicit product (the
second term is the rounding of the products J Q, relative to ||J_t||; it grows when tanh units saturate). Checked
against 100-digit arithmetic: ~1e-11 relative for sigma_1 / sigma_S ~ e^95 with cond(J_t) ~ 1e6. (Do *not* use the
running sums of log|R_ii| as singular values: they agree with log sigma_i only up to an O(1) term that does not
vanish, i.e. only log sigma_i / tau converges to lambda_i.)
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from .rng import sample

from .lyapunov import check_finite_parameters, prepare_inputs, tangent_step

__all__ = ["gradient_norm_profile", "long_term_jacobian_singular_values", "condition_number",
           "steps_to_criterion", "success"]


def _check_int(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low} <= {name}" + (f" <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be an int with {bound}, got {value!r}")
    return value


def _initial_state(model, h0, B: int, generator, like: torch.Tensor) -> torch.Tensor:
    """h0 checked against (E, B, S), or a random start ``model.initial_state`` drawn from generator."""
    E, S = model.n_networks, model.state_size
    if h0 is None:
        h0 = model.initial_state(B, generator)
    if not isinstance(h0, torch.Tensor) or h0.shape != (E, B, S):
        shape = tuple(h0.shape) if isinstance(h0, torch.Tensor) else type(h0).__name__
        raise ValueError(f"h0 must have shape (E, B, S) = {(E, B, S)}, got {shape}")
    if not bool(torch.isfinite(h0).all()):
        raise ValueError("h0 contains non-finite values (NaN or inf)")
    return h0.to(dtype=like.dtype, device=like.device)


# -- gradient norms --------------------------------------------------------------------------------------------------

def gradient_norm_profile(model, inputs: torch.Tensor | None, *, n_steps: int | None = None, batch: int = 1,
                          t_loss: int | None = None, h0: torch.Tensor | None = None,
                          generator: torch.Generator | None = None,
                          loss: str | Callable[[torch.Tensor], torch.Tensor] = "readout") -> torch.Tensor:
    """How strongly a loss at time t_loss depends on the state tau steps earlier, for every tau, per network.

    The states are ``h_t = model.step(h_{t-1}, x_t)`` for t = 0..t_loss (h_{-1} = h0); the result is

        profile[e, tau] = || d loss_e / d h_{t_loss - tau} ||        (Frobenius norm over batch and state)

    for tau = 0..t_loss, all from one backward pass. The gradient with respect to h_t includes every path through
    the later states, i.e. it is ``P^T g`` with the long-term Jacobian P from t to t_loss and g = d loss / d h_t_loss.

    Main arguments:
        model: a TanhRNN (or any cell of the protocol in ``floss_core.models``) holding E networks.
        inputs: (E, B, T, I), or (B, T, I) shared by all networks, or None for zero input (then give ``n_steps``).

    Other arguments (keyword-only):
        n_steps, batch: with ``inputs=None``, T zero-input steps for ``batch`` trajectories per network.
        t_loss: the step whose state the loss reads, 0 <= t_loss <= T - 1 (default T - 1); later inputs are unused.
        h0: initial state (E, B, S). Default: a random start ``model.initial_state`` drawn from ``generator``.
        generator: torch.Generator for the readout direction and the random start (in that order).
        loss: "readout" (default): ``loss_e = sum_b u . readout(h_t_loss)[e, b]`` with a random unit vector u of
            size O, the first draw of ``generator`` (``torch.randn(O)`` normalized, shared by all networks), so the
            profile does not depend on any targets. Or a callable mapping the state at t_loss (E, B, S) to the
            per-network losses (E,) (a scalar, their sum, is accepted too).

    Returns the profile (E, t_loss + 1), indexed by tau, detached (a diagnostic, not a training loss). Raises
    ValueError on bad input and when the profile is not finite.
    """
    check_finite_parameters(model)
    if not (loss == "readout" or callable(loss)):
        raise ValueError(f"loss must be 'readout' or a callable (E, B, S) -> (E,), got {loss!r}")
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    E, B, T, _ = inputs.shape
    if t_loss is None:
        t_loss = T - 1
    _check_int("t_loss", t_loss, 0, T - 1)
    p = next(model.parameters())
    u = None
    if loss == "readout":
        u = sample(torch.randn, model.output_size, dtype=p.dtype, device=p.device, generator=generator)  # (O,)
        u = u / u.norm()
    h = _initial_state(model, h0, B, generator, p).detach()  # (E, B, S)

    with torch.enable_grad():
        h = h.requires_grad_(True)  # so the graph exists even for a model whose parameters need no gradient
        xs = inputs.unbind(2)  # T x (E, B, I)
        states = []  # (E, B, S) per step, each a node of the graph
        for t in range(t_loss + 1):
            h = model.step(h, xs[t])
            states.append(h)
        if u is not None:
            losses = (model.readout(h) @ u).sum(1)  # (E,)
        else:
            losses = loss(h)
            if not isinstance(losses, torch.Tensor) or losses.shape not in ((E,), ()):
                shape = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
                raise ValueError(f"the loss callable must return a tensor of shape (E,) = ({E},), got {shape}")
        grads = torch.autograd.grad(losses.sum(), states, allow_unused=True)  # (t_loss + 1) x (E, B, S)
    grads = [torch.zeros_like(s) if g is None else g for g, s in zip(grads, states)]
    norms = torch.stack(grads, 1).flatten(2).norm(dim=-1)  # (E, t_loss + 1), indexed by t
    profile = norms.flip(1).detach()  # (E, t_loss + 1), indexed by tau = t_loss - t
    if not bool(torch.isfinite(profile).all()):
        raise ValueError("the gradient norms are not finite: the dynamics or the backward pass overflowed "
                         "(try float64, a shorter horizon, or check the weights' scale)")
    return profile


# -- long-term Jacobian ----------------------------------------------------------------------------------------------

def _graded_update(c: torch.Tensor, M: torch.Tensor, R: torch.Tensor):
    """``R diag(exp(c)) M`` back in the graded form ``diag(exp(c')) M'`` (unit rows), never forming exp(c).

    c (..., S), M (..., S, S) upper triangular with unit (or zero) rows, R (..., S, S) upper triangular.
    """
    S = c.shape[-1]
    shift = c.flip(-1).cummax(-1).values.flip(-1)  # (..., S): max_{j >= i} c_j
    upper = torch.ones(S, S, dtype=torch.bool, device=c.device).triu()  # (S, S)
    expo = (c.unsqueeze(-2) - shift.unsqueeze(-1)).masked_fill(~upper, -math.inf)  # (..., S, S): c_j - shift_i <= 0
    M = (R.triu() * expo.exp()) @ M  # (..., S, S)
    return _normalize_rows(shift, M)


def _normalize_rows(c: torch.Tensor, M: torch.Tensor):
    """Move the row norms of M into c (log); zero rows stay zero with c unchanged (no NaN from log 0)."""
    norm = M.norm(dim=-1)  # (..., S)
    alive = norm > 0
    c = torch.where(alive, c + norm.clamp_min(torch.finfo(norm.dtype).tiny).log(), c)
    M = M / torch.where(alive, norm, torch.ones_like(norm)).unsqueeze(-1)
    return c, M


def _round_robin(S: int, device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Disjoint pairs (p, q) for the S - 1 (S even) or S (S odd) rounds of a sweep, covering every pair once."""
    n = S + S % 2  # an odd S gets a dummy player n - 1 = S, whose pairs are dropped
    players = list(range(n))
    rounds = []
    for _ in range(n - 1):
        pairs = [(players[i], players[n - 1 - i]) for i in range(n // 2)]
        pairs = [(min(a, b), max(a, b)) for a, b in pairs if a < S and b < S]
        rounds.append((torch.tensor([a for a, _ in pairs], device=device),
                       torch.tensor([b for _, b in pairs], device=device)))
        players = [players[0], players[-1]] + players[1:-1]
    return rounds


def _graded_log_singular_values(c: torch.Tensor, M: torch.Tensor, *, max_sweeps: int = 40) -> torch.Tensor:
    """Log singular values, descending, of ``diag(exp(c)) M`` by one-sided Jacobi on rows, in log space.

    c (..., S), M (..., S, S) with unit (or zero) rows -> (..., S). Rows are rotated pairwise until every pair of
    rows is orthogonal to ``S * eps``; then the row norms ``exp(c_i)`` are the singular values.
    """
    S = c.shape[-1]
    eps = torch.finfo(M.dtype).eps
    off_diag = ~torch.eye(S, dtype=torch.bool, device=M.device)
    rounds = _round_robin(S, M.device)
    for _ in range(max_sweeps):
        if S == 1 or float((M @ M.transpose(-1, -2)).abs().masked_fill(~off_diag, 0).amax()) <= S * eps:
            break
        for p, q in rounds:
            Mi, Mj = M[..., p, :], M[..., q, :]  # (..., P, S)
            ci, cj = c[..., p], c[..., q]  # (..., P)
            mu = (Mi * Mj).sum(-1)  # (..., P): cosine of the two rows
            delta = cj - ci
            sgn = torch.where(delta >= 0, 1.0, -1.0).to(M.dtype)
            ad = delta.abs()
            # The rotation tangent t solves t^2 + 2 zeta t - 1 = 0 with zeta = sinh(delta) / mu (smaller root):
            # t = sgn * mu / (|sinh delta| + sqrt(mu^2 + sinh^2 delta)); numerator and denominator times exp(-|delta|).
            a = -0.5 * torch.expm1(-2 * ad)  # |sinh delta| exp(-|delta|), in [0, 1/2)
            m = mu * torch.exp(-ad)
            den = a + torch.sqrt(m * m + a * a)
            ok = den > 0  # den = 0 only for delta = 0 and mu = 0: no rotation needed
            den = torch.where(ok, den, torch.ones_like(den))
            t = torch.where(ok, sgn * m / den, torch.zeros_like(den))
            cos = torch.rsqrt(1 + t * t)
            # rows exp(c_i) m_i, exp(c_j) m_j -> exp(c_i) (cos m_i - sin e^delta m_j),
            #                                   exp(c_j) (cos m_j + sin e^-delta m_i),
            # sin e^delta and sin e^-delta evaluated directly (both below 2 |mu|; never exp(+large) * 0)
            sin_up = torch.where(ok, cos * sgn * mu * torch.exp(delta - ad) / den, torch.zeros_like(den))
            sin_down = torch.where(ok, cos * sgn * mu * torch.exp(-delta - ad) / den, torch.zeros_like(den))
            Ni = cos.unsqueeze(-1) * Mi - sin_up.unsqueeze(-1) * Mj
            Nj = cos.unsqueeze(-1) * Mj + sin_down.unsqueeze(-1) * Mi
            ci, Ni = _normalize_rows(ci, Ni)
            cj, Nj = _normalize_rows(cj, Nj)
            M, c = M.clone(), c.clone()
            M[..., p, :], M[..., q, :] = Ni, Nj
            c[..., p], c[..., q] = ci, cj
    log_sv = torch.where(M.norm(dim=-1) > 0, c, torch.full_like(c, -math.inf))  # a zero row: sigma = 0
    return log_sv.sort(dim=-1, descending=True).values


def long_term_jacobian_singular_values(model, inputs: torch.Tensor | None, k: int, *, n_steps: int | None = None,
                                       batch: int = 1, t_ons: int = 1, h0: torch.Tensor | None = None,
                                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The first k log singular values of the long-term Jacobian ``P_tau = J_tau ... J_1`` for every horizon tau.

    ``J_t = dh_t / dh_{t-1}`` along the trajectory from h0 (the same convention as ``lyapunov_spectrum``), so
    ``log_sv[..., tau - 1, i] / tau -> lambda_i`` for large tau. Computed entirely in log space (see the module
    docstring for the method), so chaotic and strongly contracting networks over long horizons give finite values;
    each sigma_i is relatively accurate to about ``eps * (cond(M) + max_t cond(J_t))``, however large
    sigma_1 / sigma_i is.

    Main arguments:
        model: a TanhRNN (or any cell of the protocol in ``floss_core.models``) holding E networks.
        inputs: (E, B, T, I), or (B, T, I) shared by all networks, or None for zero input (then give ``n_steps``).
        k: how many singular values, 1 <= k <= state size S (all S tangent directions are tracked regardless).

    Other arguments (keyword-only):
        n_steps, batch: with ``inputs=None``, T zero-input steps for ``batch`` trajectories per network.
        t_ons: re-orthonormalize (QR) every t_ons steps and report the singular values only there: at
            tau = t_ons, 2 t_ons, ... and at tau = T. 1 (default) reports every step. Larger is cheaper, but the
            tangent basis must not collapse within t_ons steps (keep (lambda_1 - lambda_S) * t_ons below ~30).
        h0: initial state (E, B, S). Default: a random start ``model.initial_state`` drawn from ``generator``.
        generator: torch.Generator for the random start.

    Returns log sigma_1 >= ... >= log sigma_k, shape (E, B, T, k) for t_ons = 1 (index tau - 1), in general
    (E, B, ceil(T / t_ons), k). Natural log; an exactly singular product gives -inf. Not differentiable (computed
    without gradient). Raises ValueError on bad input and when the state stops being finite.
    """
    check_finite_parameters(model)
    S = model.state_size
    _check_int("k", k, 1, S)
    _check_int("t_ons", t_ons, 1)
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    E, B, T, _ = inputs.shape
    p = next(model.parameters())
    h = _initial_state(model, h0, B, generator, p)  # (E, B, S)
    eye = torch.eye(S, dtype=p.dtype, device=p.device)
    Q = eye.expand(E, B, S, S)  # (E, B, S, S): Q_0 = I, the full basis
    c = torch.zeros(E, B, S, dtype=p.dtype, device=p.device)  # (E, B, S): log row scales of R_tau ... R_1
    M = Q.clone()  # (E, B, S, S): its unit-norm rows
    chunk = max(1, (1 << 21) // (E * B * S * S))  # horizons per batched Jacobi SVD (bounds the memory)
    pending, out = [], []
    xs = inputs.unbind(2)  # T x (E, B, I)
    with torch.no_grad():
        for t in range(T):
            h, Q = tangent_step(model, h, xs[t], Q)  # (E, B, S), (E, B, S, S)
            if not ((t + 1) % t_ons == 0 or t == T - 1):
                continue
            if not bool(torch.isfinite(h).all()) or not bool(torch.isfinite(Q).all()):
                raise ValueError(f"the state or the tangent basis became non-finite at step {t}: the dynamics diverged "
                                 "or the basis overflowed (try a smaller t_ons, float64, or check the weights)")
            Q, R = torch.linalg.qr(Q)  # (E, B, S, S), (E, B, S, S)
            c, M = _graded_update(c, M, R)
            pending.append((c, M))
            if len(pending) == chunk or t == T - 1:
                cs = torch.stack([a for a, _ in pending], 2)  # (E, B, chunk, S)
                Ms = torch.stack([b for _, b in pending], 2)  # (E, B, chunk, S, S)
                out.append(_graded_log_singular_values(cs, Ms)[..., :k])  # (E, B, chunk, k)
                pending = []
    return torch.cat(out, 2)  # (E, B, n_reports, k)


def condition_number(log_sv: torch.Tensor, k: int | None = None) -> torch.Tensor:
    """log of the condition number ``kappa = sigma_1 / sigma_k`` from log singular values (descending, last dim).

    log_sv: e.g. the output of ``long_term_jacobian_singular_values``, (E, B, T, K). k: 1 <= k <= K, default K.
    Returns ``log_sv[..., 0] - log_sv[..., k - 1]``, shape (E, B, T); kept in log space because kappa itself
    overflows for long horizons (log kappa / tau -> lambda_1 - lambda_k). 0 means perfectly conditioned.
    """
    if not isinstance(log_sv, torch.Tensor) or log_sv.dim() < 1 or log_sv.shape[-1] < 1:
        raise ValueError("log_sv must be a tensor with the singular values in a non-empty last dimension")
    K = log_sv.shape[-1]
    if k is None:
        k = K
    _check_int("k", k, 1, K)
    return log_sv[..., 0] - log_sv[..., k - 1]


# -- training outcome ------------------------------------------------------------------------------------------------

def steps_to_criterion(accuracy, threshold: float = 0.95) -> torch.Tensor:
    """The first training step from which the accuracy stays >= threshold until the end, per network.

    accuracy: (E, n_steps), one accuracy per network and training step (a NaN counts as below the threshold).
    threshold: in (0, 1].
    Returns a long tensor (E,): the step index, or -1 where the final accuracy is below the threshold.
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"threshold must be a number in (0, 1], got {threshold!r}")
    accuracy = torch.as_tensor(accuracy)
    if accuracy.dim() != 2 or accuracy.shape[1] < 1:
        raise ValueError(f"accuracy must have shape (E, n_steps) with n_steps >= 1, got {tuple(accuracy.shape)}")
    n = accuracy.shape[1]
    below = ~(accuracy >= threshold)  # (E, n_steps)
    steps = torch.arange(n, device=accuracy.device)
    first = torch.where(below, steps, -1).amax(1) + 1  # (E,): one past the last step below the threshold
    return torch.where(first < n, first, -1).long()


def success(accuracy, threshold: float = 0.95) -> torch.Tensor:
    """Whether each network ends above the threshold (``steps_to_criterion >= 0``): bool (E,)."""
    return steps_to_criterion(accuracy, threshold) >= 0
