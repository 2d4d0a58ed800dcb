"""Gradient norms over long lags: how strongly a late loss depends on the state tau steps earlier.

The gradient of a loss at time t with respect to the state tau steps earlier is ``P^T g``, with the long-term
Jacobian ``P = J_t ... J_{t - tau + 1}``: it grows or shrinks like ``exp(tau lambda_i)``. Gradient flossing pushes the
first exponents to zero, which keeps it flat in tau.
"""
from __future__ import annotations

from typing import Callable

import torch

from ..cells.protocol import unroll
from ..checks import check_int
from ..rng import sample
from ..spectrum import check_finite_parameters, prepare_inputs

__all__ = ["gradient_norm_profile", "initial_state"]


def initial_state(model, h0, B: int, generator, like: torch.Tensor) -> torch.Tensor:
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
        model: a TanhRNN (or any cell of the protocol in ``floss_core.cells.protocol``) holding E networks.
        inputs: (E, B, T, I), or (B, T, I) shared by all networks, or None for zero input (then give ``n_steps``).

    Other arguments (keyword-only):
        n_steps, batch: with ``inputs=None``, T zero-input steps for ``batch`` trajectories per network.
        t_loss: the step whose state the loss reads, 0 <= t_loss <= T - 1 (default T - 1); later inputs are unused.
        h0: initial state (E, B, S). Default: a random start ``model.initial_state`` drawn from ``generator``.
        generator: torch.Generator for the readout direction and the random start (in that order), or a list of one
            per network (then each network gets its own direction, as it would alone).
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
    check_int("t_loss", t_loss, 0, T - 1)
    p = next(model.parameters())
    u = None
    if loss == "readout":
        if isinstance(generator, (list, tuple)):  # one direction per network, from its own generator
            u = sample(torch.randn, E, model.output_size, dtype=p.dtype, device=p.device, generator=generator)
            u = (u / u.norm(dim=-1, keepdim=True)).unsqueeze(1)  # (E, 1, O)
        else:
            u = sample(torch.randn, model.output_size, dtype=p.dtype, device=p.device, generator=generator)  # (O,)
            u = u / u.norm()
    h = initial_state(model, h0, B, generator, p).detach()  # (E, B, S)

    with torch.enable_grad():
        h = h.requires_grad_(True)  # so the graph exists even for a model whose parameters need no gradient
        states = unroll(model, inputs[:, :, :t_loss + 1], h)  # (E, B, S) per step, each a node of the graph
        h = states[-1]
        if u is not None:
            losses = (model.readout(h) @ u).sum(1) if u.dim() == 1 else (model.readout(h) * u).sum((1, 2))  # (E,)
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
