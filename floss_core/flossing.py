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

import warnings
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from .checks import check_choice, check_int, check_number
from .ensemble import frozen_step, nonfinite_networks
from .rng import check_generator, draw
from .spectrum import DEFAULT_METHOD, GRADIENT_MODES, METHODS, lyapunov_spectrum
from .tasks import InputEncoding, bit_signal, random_bits

__all__ = ["FlossConfig", "flossing_loss", "flossing_inputs", "flossing_spectrum", "flossed_parameters", "floss",
           "FlossResult"]


@dataclass(frozen=True)
class FlossConfig:
    """One flossing step. Defaults: the author's example run (k = 75 of N = 80, a 55-step trajectory of which the
    first 16 are not averaged, batch 1, QR every step, Adam lr 1e-3, the full gradient, W, U and b flossed)."""
    k: int = 75  # number of exponents flossed (the first k)
    target: float = 0.0  # target exponent, nats per step
    seq_len: int = 55  # flossing trajectory length, steps (transient included)
    n_transient: int = 16  # steps not averaged at the start of the trajectory
    batch: int = 1  # trajectories per network per flossing step
    t_ons: int | str = 1  # QR every t_ons steps, or "auto" (see lyapunov_spectrum)
    lr: float = 1e-3  # Adam learning rate of flossing
    lr_final: float | None = None  # if set, lr decays geometrically to this over each flossing call (None: constant)
    gradient: str = "full"  # "full" (through the state trajectory) or "detached"
    method: str = DEFAULT_METHOD  # spectrum engine, "fast" or "reference" (the same numbers up to roundoff)
    params: tuple = ("W", "U", "b")  # which parameters flossing updates
    input: str = "task"  # flossing inputs: "task" (random bits, encoded like the task's) or "zero"
    encoding: InputEncoding = InputEncoding()  # how "task" inputs are encoded (train and the sweeps: the task's)

    def __post_init__(self):
        check_int("FlossConfig.k", self.k, 1)
        check_number("FlossConfig.target", self.target)
        check_int("FlossConfig.seq_len", self.seq_len, 1)
        check_int("FlossConfig.n_transient", self.n_transient, 0, self.seq_len - 1, note=" (seq_len - 1)")
        check_int("FlossConfig.batch", self.batch, 1)
        if self.t_ons != "auto":
            check_int("FlossConfig.t_ons (or 'auto')", self.t_ons, 1)
        check_number("FlossConfig.lr", self.lr, 0, low_open=True)
        check_number("FlossConfig.lr_final", self.lr_final, 0, low_open=True, none=True)
        check_choice("FlossConfig.gradient", self.gradient, GRADIENT_MODES)
        check_choice("FlossConfig.method", self.method, METHODS)
        if isinstance(self.params, str) or not isinstance(self.params, (tuple, list)) or not self.params \
                or not all(isinstance(n, str) for n in self.params):
            raise ValueError(f"FlossConfig.params must be a non-empty tuple of parameter names, got {self.params!r}")
        object.__setattr__(self, "params", tuple(self.params))
        check_choice("FlossConfig.input", self.input, ("task", "zero"))
        if not isinstance(self.encoding, InputEncoding):
            raise ValueError(f"FlossConfig.encoding must be an InputEncoding, got {self.encoding!r}")


def flossing_loss(exponents: torch.Tensor, target: float = 0.0) -> torch.Tensor:
    """``mean_i (lambda_i - target)^2`` per network: exponents (E, k) -> (E,)."""
    if exponents.dim() < 1:
        raise ValueError(f"exponents must have a last dimension k, got shape {tuple(exponents.shape)}")
    return (exponents - target).pow(2).mean(-1)


def flossing_inputs(model, config: FlossConfig, generator=None) -> torch.Tensor:
    """Inputs of one flossing step: (E, batch, seq_len, I), random bits encoded like the tasks' or zeros."""
    E, I = model.n_networks, model.input_size
    p = next(model.parameters())
    shape = (config.batch, config.seq_len, I)
    if config.input == "zero":
        return torch.zeros(E, *shape, dtype=p.dtype, device=p.device)
    bits = random_bits(E, *shape, generator=generator, device=p.device)  # (E, batch, seq_len, I)
    return bit_signal(bits, config.encoding, dtype=p.dtype, device=p.device)


def flossing_spectrum(model, config: FlossConfig = FlossConfig(), *, generator=None, k: int | None = None,
                      check: bool = False) -> torch.Tensor:
    """The first k exponents (E, k) on one fresh flossing trajectory (inputs, start and basis from ``generator``,
    a torch.Generator or a list of one per network). With ``check=False`` diverging networks give NaN. The start
    states and bases are drawn in float32 (whatever torch's default dtype) and cast to the model's dtype."""
    check_generator(generator, model.n_networks)
    k = config.k if k is None else k
    S = model.state_size
    p = next(model.parameters())
    inputs = flossing_inputs(model, config, generator)  # (E, B, T, I)
    B = config.batch

    def randn(*shape):
        return lambda n, g: torch.randn(n, *shape, generator=g, dtype=torch.float32,
                                        device=g.device if g is not None else "cpu")

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


def flossed_parameters(model, config: FlossConfig) -> list:
    """The parameters named in ``config.params``; ValueError naming any the model does not have."""
    named = dict(model.named_parameters())
    missing = [n for n in config.params if n not in named]
    if missing:
        raise ValueError(f"the model has no parameter named {missing} (FlossConfig.params={config.params}; its "
                         f"parameters: {sorted(named)})")
    return [named[n] for n in config.params]


def check_floss_k(model, config: FlossConfig) -> None:
    """FlossConfig.k must not exceed the model's state size."""
    check_int("FlossConfig.k", config.k, 1, model.state_size, note=" (the state size)")


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
        optimizer: an optimizer over the flossed parameters to continue (default: a new Adam). Its state and
            settings are kept, but its learning rate is set at every step: config.lr (decaying to config.lr_final).
        failed: (E,) bool of networks already failed (kept frozen; updated in place).
        progress: show a tqdm progress bar.
    """
    check_int("n_steps", n_steps, 0)
    if not isinstance(config, FlossConfig):
        raise ValueError(f"config must be a FlossConfig, got {type(config).__name__}")
    check_floss_k(model, config)
    check_generator(generator, model.n_networks)
    params = flossed_parameters(model, config)
    opt = optimizer or torch.optim.Adam(params, lr=config.lr)
    E = model.n_networks
    if failed is None:
        failed = torch.zeros(E, dtype=torch.bool, device=params[0].device)
    elif not isinstance(failed, torch.Tensor) or failed.dtype != torch.bool or tuple(failed.shape) != (E,) \
            or failed.device != params[0].device:
        shape = tuple(failed.shape) if isinstance(failed, torch.Tensor) else type(failed).__name__
        raise ValueError(f"failed must be a bool tensor of shape (E,) = ({E},) on {params[0].device} (it is updated "
                         f"in place), got {shape}" + (f", {failed.dtype} on {failed.device}"
                                                      if isinstance(failed, torch.Tensor) else ""))
    exps, losses = [], []
    decay = (config.lr_final / config.lr) ** (1 / max(n_steps - 1, 1)) if config.lr_final is not None else 1.0
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
    if n_steps and E and bool(failed.all()):
        warnings.warn(f"all {E} networks have failed (non-finite exponents or gradients): flossing changed nothing; "
                      "check the weights' scale, FlossConfig.lr and the gradient mode", RuntimeWarning, stacklevel=2)
    k = config.k
    p = params[0]
    return FlossResult(
        exponents=torch.stack(exps).cpu() if exps else torch.empty(0, E, k, dtype=p.dtype),
        loss=torch.stack(losses).cpu() if losses else torch.empty(0, E, dtype=p.dtype),
        failed=failed.clone().cpu(),
    )
