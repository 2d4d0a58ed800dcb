"""The long-term Jacobian ``P_tau = J_tau ... J_1``: its singular values for every horizon tau, in log space, and its
condition number. ``sigma_i(tau) ~ exp(tau * lambda_i)`` with the Lyapunov exponents lambda_i; flossing k exponents
to zero keeps ``kappa_k = sigma_1 / sigma_k`` bounded.

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

import torch

from ..checks import check_int
from ..spectrum import check_finite_parameters, prepare_inputs, tangent_step
from .gradients import initial_state

__all__ = ["long_term_jacobian_singular_values", "condition_number"]


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
        model: a TanhRNN (or any cell of the protocol in ``floss_core.cells.protocol``) holding E networks.
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
    check_int("k", k, 1, S)
    check_int("t_ons", t_ons, 1)
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    E, B, T, _ = inputs.shape
    p = next(model.parameters())
    h = initial_state(model, h0, B, generator, p)  # (E, B, S)
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
    check_int("k", k, 1, K)
    return log_sv[..., 0] - log_sv[..., k - 1]
