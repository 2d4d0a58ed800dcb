"""Gradient flossing: drive the first k Lyapunov exponents toward a target by gradient descent.

The flossing loss of one network is ``mean_i (lambda_i - target)^2`` over its first k exponents, computed by
``lyapunov_spectrum`` and back-propagated through the QR steps. Exponents near zero mean perturbations (and hence
back-propagated errors) neither grow nor shrink exponentially along those k directions, so gradients of a task loss
flow across long time lags without exploding or vanishing.

``floss`` runs a number of flossing steps (Adam on W, U, b by default, as in the paper), each on fresh inputs drawn
like the task's. In an ensemble the per-network losses are summed, so each network gets its own gradient and its own
Adam state; a network whose exponents stop being finite is frozen and reported as failed.

Gradient modes (``FlossConfig.gradient``): "full" back-propagates through the state trajectory (the author's
choice, faithful; in chaotic nets its norm grows like exp(lambda_1 T) over long windows), "detached" stops the
gradient through the states (bounded, but ignores how the trajectory itself moves).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .config import FlossConfig
from .ensemble import draw, frozen_step, nonfinite_networks
from .lyapunov import lyapunov_spectrum

__all__ = ["flossing_loss", "flossing_spectrum", "floss", "FlossResult"]


def flossing_loss(exponents: torch.Tensor, target: float = 0.0) -> torch.Tensor:
    """``mean_i (lambda_i - target)^2`` per network: exponents (E, k) -> (E,)."""
    if exponents.dim() < 1:
        raise ValueError(f"exponents must have a last dimension k, got shape {tuple(exponents.shape)}")
    return (exponents - target).pow(2).mean(-1)


def flossing_inputs(model, config: FlossConfig, generator=None) -> torch.Tensor:
    """Inputs of one flossing step: (E, batch, seq_len, I), random +-1 bits like the tasks' or zeros."""
    E, I = model.n_networks, model.input_size
    p = next(model.parameters())
    shape = (config.batch, config.seq_len, I)
    if config.input == "zero":
        return torch.zeros(E, *shape, dtype=p.dtype, device=p.device)
    if config.input != "task":
        raise ValueError(f"FlossConfig.input must be 'task' or 'zero', got {config.input!r}")

    def bits(n, g):
        return torch.randint(0, 2, (n, *shape), generator=g, device=g.device if g is not None else "cpu")

    return (2 * draw(bits, generator, E) - 1).to(dtype=p.dtype, device=p.device)


def flossing_spectrum(model, config: FlossConfig = FlossConfig(), *, generator=None, k: int | None = None,
                      check: bool = False) -> torch.Tensor:
    """The first k exponents (E, k) on one fresh flossing trajectory (inputs, start and basis from ``generator``,
    a torch.Generator or a list of one per network). With ``check=False`` diverging networks give NaN."""
    k = config.k if k is None else k
    S = model.state_size
    p = next(model.parameters())
    inputs = flossing_inputs(model, config, generator)  # (E, B, T, I)
    B = config.batch

    def randn(*shape):
        return lambda n, g: torch.randn(n, *shape, generator=g, device=g.device if g is not None else "cpu")

    h0 = draw(randn(B, S), generator, model.n_networks).to(dtype=p.dtype, device=p.device)  # (E, B, S)
    Q0 = draw(randn(B, S, k), generator, model.n_networks).to(dtype=p.dtype, device=p.device)  # (E, B, S, k)
    return lyapunov_spectrum(model, inputs, k, t_ons=config.t_ons, n_transient=config.n_transient, h0=h0, Q0=Q0,
                             gradient=config.gradient, check=check, method=config.method)


@dataclass
class FlossResult:
    """What ``floss`` did. exponents (n_steps, E, k) and loss (n_steps, E) are measured before each update;
    failed (E,) marks networks frozen because their exponents or gradients stopped being finite."""
    exponents: torch.Tensor
    loss: torch.Tensor
    failed: torch.Tensor


def _parameters(model, names):
    try:
        return [getattr(model, n) for n in names]
    except AttributeError as err:
        raise ValueError(f"the model has no parameter named in FlossConfig.params={tuple(names)}: {err}") from None


def floss(model, n_steps: int, *, config: FlossConfig = FlossConfig(), generator=None,
          optimizer: torch.optim.Optimizer | None = None, failed: torch.Tensor | None = None,
          progress: bool = False) -> FlossResult:
    """Run ``n_steps`` flossing steps on every network of ``model``, in place.

    Main arguments:
        model: a TanhRNN ensemble (or any cell of the protocol whose parameters are named in ``config.params``).
        n_steps: number of flossing (Adam) steps, each on a fresh trajectory.

    Other arguments:
        config: FlossConfig (k, target, trajectory length, transient, batch, lr, gradient mode, parameters).
        generator: torch.Generator, or a list of one per network, for inputs, start states and bases.
        optimizer: an optimizer over the flossed parameters to continue (default: a new Adam with config.lr).
        failed: (E,) bool of networks already failed (kept frozen; updated in place).
        progress: show a tqdm progress bar.
    """
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 0:
        raise ValueError(f"n_steps must be an int >= 0, got {n_steps!r}")
    if not 1 <= config.k <= model.state_size:
        raise ValueError(f"FlossConfig.k must satisfy 1 <= k <= state size {model.state_size}, got {config.k}")
    params = _parameters(model, config.params)
    opt = optimizer or torch.optim.Adam(params, lr=config.lr)
    E = model.n_networks
    if failed is None:
        failed = torch.zeros(E, dtype=torch.bool, device=params[0].device)
    exps, losses = [], []
    decay = (config.lr_final / config.lr) ** (1 / max(n_steps - 1, 1)) if config.lr_final else 1.0
    for i in tqdm(range(n_steps), disable=not progress, desc="flossing", leave=False):
        for group in opt.param_groups:
            group["lr"] = config.lr * decay ** i
        opt.zero_grad(set_to_none=True)
        lam = flossing_spectrum(model, config, generator=generator)  # (E, k)
        loss = flossing_loss(lam, config.target)  # (E,)
        bad = ~torch.isfinite(loss) | failed
        torch.where(bad, torch.zeros_like(loss), loss).sum().backward()
        failed |= nonfinite_networks(torch.where(failed, torch.zeros_like(loss), loss), params)
        frozen_step(opt, params, failed)
        exps.append(lam.detach())
        losses.append(loss.detach())
    k = config.k
    p = params[0]
    return FlossResult(
        exponents=torch.stack(exps).cpu() if exps else torch.empty(0, E, k, dtype=p.dtype),
        loss=torch.stack(losses).cpu() if losses else torch.empty(0, E, dtype=p.dtype),
        failed=failed.clone().cpu(),
    )
