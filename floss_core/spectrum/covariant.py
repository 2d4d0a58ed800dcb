"""Covariant Lyapunov vectors (CLVs) of RNN ensembles by Ginelli's method, for any cell of the protocol.

The Gram-Schmidt (QR) basis of ``lyapunov_spectrum`` depends on the order of orthonormalization; the covariant
vectors do not: ``v_i(t)`` is carried by the dynamics onto ``v_i(t + 1)``, ``J_t v_i(t) = c v_i(t + 1)``, and grows
on average at the rate ``lambda_i``. They show the geometry of the tangent space: the angles between the expanding and
contracting directions (near-tangencies are departures from hyperbolicity).

Ginelli et al. (PRL 99, 130601, 2007): push a basis Q (E, B, S, k) through the step Jacobians with a QR every step,
``J_t Q_t = Q_(t+1) R_t`` (k <= S); the CLVs are ``v(t) = Q_t C_t`` for the upper triangular C_t obtained backwards
from any upper triangular start, ``C_t = R_t^(-1) C_(t+1)`` with unit columns after every step. Three stretches of
the trajectory:

    n_transient     forward steps that align Q with the Gram-Schmidt vectors (discarded);
    n_steps         the steps whose CLVs are returned (every ``store_every``-th of them);
    n_future        forward steps whose R factors, iterated backwards, align C with the CLVs' coefficients.

Both alignments converge like exp(-(lambda_i - lambda_(i+1)) n), so nearly degenerate exponents need long ones.

Memory (float64 entries): the R factors of the last ``n_steps + n_future`` steps,
``(n_steps + n_future) E B k^2``; the stored bases and states, ``T' E B S (k + 1)`` with
``T' = ceil(n_steps / store_every)``; the growth rates, ``n_steps E B k``. With S = 80, k = 32, E B = 8 and
n_steps = n_future = 1000 in float64: 131 MB of R factors and 170 MB of vectors at store_every = 1 (17 MB at 10).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_int
from ..rng import check_generator, sample
from .inputs import prepare_inputs
from .qr import cholesky_qr
from .tangent import tangent_step

__all__ = ["CovariantVectors", "covariant_vectors", "clv_angles", "subspace_angle"]


@dataclass
class CovariantVectors:
    """The result of ``covariant_vectors``.

    vectors (E, B, T', S, k): the CLVs, unit columns (each up to its sign), at the stored times (float64, like every
        tensor here but ``states``: the QR factors and the backward iteration run in float64 whatever the model's
        dtype).
    states (E, B, T', S): the state each vector sits at, before the step (``J_t`` is the Jacobian at ``states``).
    times (T',): the stored steps, counted from the start of the inputs (0-based; step t maps states[t] to the next).
    exponents (E, k): the Gram-Schmidt exponents over the same n_steps window (mean over trajectories): the growth
        along the CLVs, ``clv_exponents``, differs from them by boundary terms of order 1 / n_steps.
    log_growth (E, B, n_steps, k): log ||J_t v_i(t)|| at every step of the n_steps window (stored or not); their mean
        over time is ``lambda_i``.
    """
    vectors: torch.Tensor
    states: torch.Tensor
    times: torch.Tensor
    exponents: torch.Tensor
    log_growth: torch.Tensor

    @property
    def clv_exponents(self) -> torch.Tensor:
        """(E, k): the mean growth rate along each CLV over the n_steps window and the trajectories."""
        return self.log_growth.mean((1, 2))


def covariant_vectors(model, inputs: torch.Tensor | None, k: int, *, n_steps: int, batch: int = 1,
                      n_transient: int | None = None, n_future: int | None = None, generator=None,
                      h0: torch.Tensor | None = None, Q0: torch.Tensor | None = None,
                      store_every: int = 1) -> CovariantVectors:
    """The first k covariant Lyapunov vectors of every network along its trajectories (Ginelli's method).

    Arguments:
        model: any cell of the protocol (``cells.protocol``), E networks with state size S.
        inputs: (E, B, T, I) or (B, T, I) with T >= n_transient + n_steps + n_future (the first of them drive the
            run), or None for zero input.
        k: how many vectors, 1 <= k <= S.
        n_steps: the steps whose vectors are returned (every ``store_every``-th); n_transient (default n_steps) and
            n_future (default n_steps, >= 1) the forward and backward alignments (module docstring).
        batch: trajectories per network with ``inputs=None``.
        generator, h0 (E, B, S), Q0 (E, B, S, k): the random start and basis, as for ``lyapunov_spectrum``.
        store_every: keep the vectors of every this many steps of the window (memory: module docstring).
    Runs without gradient. Returns a ``CovariantVectors``. Raises ValueError naming the argument, its bound and
    its value.
    """
    S = model.state_size
    check_int("k", k, 1, S, note=" (the state size)")
    check_int("n_steps", n_steps, 1)
    n_transient = check_int("n_transient", n_steps if n_transient is None else n_transient, 0)
    n_future = check_int("n_future", n_steps if n_future is None else n_future, 1)
    check_int("store_every", store_every, 1)
    check_generator(generator, model.n_networks)
    total = n_transient + n_steps + n_future
    if inputs is not None and isinstance(inputs, torch.Tensor) and inputs.dim() in (3, 4):
        if inputs.shape[-2] < total:
            raise ValueError(f"inputs need T >= n_transient + n_steps + n_future = {total} steps, got "
                             f"{inputs.shape[-2]}")
        inputs = inputs[..., :total, :]
    inputs = prepare_inputs(model, inputs, n_steps=total if inputs is None else None, batch=batch)  # (E, B, T, I)
    E, B = inputs.shape[:2]
    p = next(model.parameters())
    with torch.no_grad():
        h = model.initial_state(B, generator) if h0 is None else h0
        if Q0 is None:
            Q0 = sample(torch.randn, E, B, S, k, dtype=p.dtype, device=p.device, generator=generator)
        if tuple(h.shape) != (E, B, S) or tuple(Q0.shape) != (E, B, S, k):
            raise ValueError(f"h0 and Q0 must have shapes (E, B, S) = {(E, B, S)} and (E, B, S, k) = {(E, B, S, k)}, "
                             f"got {tuple(h.shape)} and {tuple(Q0.shape)}")
        h = h.to(dtype=p.dtype, device=p.device)
        Q, _ = _qr64(Q0.to(device=p.device))
        keep = set(range(n_transient, n_transient + n_steps, store_every))
        Rs, states, bases, log_r = [], [], [], 0
        for t, x in enumerate(inputs.unbind(2)):
            if t in keep:
                states.append(h)
                bases.append(Q)
            h, Y = tangent_step(model, h, x, Q.to(p.dtype))  # (E, B, S), J_t Q_t (E, B, S, k)
            Q, R = _qr64(Y)  # J_t Q_t = Q_(t+1) R_t, in float64
            if t >= n_transient:
                Rs.append(R)
            if n_transient <= t < n_transient + n_steps:
                log_r = log_r + torch.diagonal(R, dim1=-2, dim2=-1).abs().log()
        # backwards: C_t = R_t^(-1) C_(t+1), unit columns, from C = I after the last step
        C = torch.eye(k, dtype=torch.float64, device=p.device).expand(E, B, k, k)
        coefs, growth = {}, []
        for i in range(len(Rs) - 1, -1, -1):
            C = torch.linalg.solve_triangular(Rs[i], C, upper=True)
            norms = C.norm(dim=-2, keepdim=True)  # (E, B, 1, k)
            C = C / norms
            t = n_transient + i
            if i < n_steps:
                growth.append(-norms.squeeze(-2).log())  # log ||J_t v_i(t)||, (E, B, k)
                if t in keep:
                    coefs[t] = C
        times = sorted(keep)
        vectors = torch.stack([Qt @ coefs[t] for Qt, t in zip(bases, times)], 2)  # (E, B, T', S, k)
        vectors = vectors / vectors.norm(dim=-2, keepdim=True)
        return CovariantVectors(vectors=vectors, states=torch.stack(states, 2), times=torch.tensor(times),
                                exponents=(log_r / n_steps).mean(1),
                                log_growth=torch.stack(growth[::-1], 2))


def _qr64(Y: torch.Tensor):
    """Q, R of Y (E, B, S, k) in float64: the guarded Cholesky QR of the fast engine (``spectrum.qr``), Householder
    where its guard fails."""
    Y = Y.double()
    Q, R, ok = cholesky_qr(Y.reshape(-1, *Y.shape[-2:]))
    if not bool(ok.all()):
        bad = (~ok).nonzero().flatten()
        Qh, Rh = torch.linalg.qr(Y.reshape(-1, *Y.shape[-2:])[bad])
        Q, R = Q.index_copy(0, bad, Qh), R.index_copy(0, bad, Rh)
    return Q.reshape(Y.shape), R.reshape(*Y.shape[:-2], Y.shape[-1], Y.shape[-1])


def clv_angles(vectors: torch.Tensor) -> torch.Tensor:
    """The angles (radians, in [0, pi/2]) between every pair of vectors: (..., S, k) -> (..., k, k)."""
    unit = vectors / vectors.norm(dim=-2, keepdim=True)
    cos = (unit.mT @ unit).abs().clamp(max=1.0)
    return torch.arccos(cos)


def subspace_angle(vectors: torch.Tensor, j: int) -> torch.Tensor:
    """The smallest principal angle (radians) between the span of the first j vectors and the span of the others:
    (..., S, k) -> (...). Near 0: the two subspaces nearly touch (a near-tangency, a departure from hyperbolicity
    between the first j directions and the rest)."""
    k = vectors.shape[-1]
    check_int("j", j, 1, k - 1, note=" (the number of vectors minus one)")
    first, _ = torch.linalg.qr(vectors[..., :j])
    rest, _ = torch.linalg.qr(vectors[..., j:])
    sigma = torch.linalg.svdvals(first.mT @ rest)[..., 0].clamp(max=1.0)  # the cosine of the smallest angle
    return torch.arccos(sigma)
