"""Checking and preparing the arguments of a spectrum: inputs, transient, start state and basis, QR schedule."""
from __future__ import annotations

import math

import torch

from ..checks import check_choice, check_int
from ..rng import check_generator, sample

__all__ = ["GRADIENT_MODES", "check_finite_parameters", "prepare_inputs", "qr_schedule", "setup_spectrum",
           "window_collapsed", "window_limits"]

GRADIENT_MODES = ("full", "detached")


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
        check_int("n_steps", n_steps, 1)
        check_int("batch", batch, 1)
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


def qr_schedule(T: int, n_transient: int, t_ons: int) -> list[bool]:
    """For each step t (0-based), whether a QR follows it: every t_ons steps in the transient, at its end, every
    t_ons steps after it, and at the last step."""
    qr_after = [False] * T
    for t in range(T):
        in_transient = t < n_transient
        since = (t + 1) if in_transient else (t + 1 - n_transient)
        qr_after[t] = since % t_ons == 0 or t == n_transient - 1 or t == T - 1
    return qr_after


def window_limits(dtype: torch.dtype) -> tuple[float, float]:
    """(spread, scale) in nats for a window of steps without QR: the most the log|R_ii| of its QR may spread
    (0.5 log(1/eps): beyond, the basis' smallest directions are lost to roundoff) and the most any of them may grow
    or shrink (0.5 log(max float): beyond, the basis nears overflow or underflow)."""
    info = torch.finfo(dtype)
    return 0.5 * math.log(1 / info.eps), 0.5 * math.log(info.max)


def window_collapsed(log_r: torch.Tensor, dtype: torch.dtype) -> bool:
    """Whether a window's log|R_ii| (..., k) show a basis too stretched for the precision (``window_limits``) or
    over/underflowed (an infinite entry). NaN entries (a diverged network) are ignored."""
    spread_max, scale = window_limits(dtype)
    ld = log_r.detach().nan_to_num(0.0, posinf=math.inf, neginf=-math.inf)
    if bool(torch.isinf(ld).any()):
        return True
    return float((ld.amax(-1) - ld.amin(-1)).amax()) > spread_max or float(ld.abs().amax()) > scale


def setup_spectrum(model, inputs, k, *, n_steps, batch, n_transient, h0, Q0, generator, gradient, reduce, check):
    """The argument checks of ``lyapunov_spectrum`` (done once, for every engine); returns inputs (E, B, T, I),
    n_transient, the initial state h0 (E, B, S) and the orthonormalized initial basis Q (E, B, S, k)."""
    check_generator(generator, model.n_networks)
    if check:
        check_finite_parameters(model)
    S = model.state_size
    check_int("k", k, 1, S, note=" (the state size)")
    check_choice("gradient", gradient, GRADIENT_MODES)
    check_choice("reduce", reduce, ("mean", "none"))
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    E, B, T, _ = inputs.shape
    if n_transient is None:
        n_transient = T // 4
    check_int("n_transient", n_transient, 0)
    if T <= n_transient:
        raise ValueError(f"the sequence ({T} steps) must be longer than the transient ({n_transient} steps)")
    p = next(model.parameters())
    if h0 is None:
        h0 = model.initial_state(B, generator)
    _check_start("h0", h0, (E, B, S), "(E, B, S)", check)
    if Q0 is None:
        Q0 = sample(torch.randn, E, B, S, k, dtype=p.dtype, device=p.device, generator=generator)
    else:
        _check_start("Q0", Q0, (E, B, S, k), "(E, B, S, k)", check)
    Q, _ = torch.linalg.qr(Q0.to(dtype=p.dtype, device=p.device))  # (E, B, S, k)
    return inputs, n_transient, h0, Q


def _check_start(name: str, x, shape: tuple, dims: str, check: bool) -> None:
    """ValueError unless ``x`` is a floating tensor of ``shape`` (and, with ``check``, finite)."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must have shape {dims} = {shape} (a floating torch.Tensor), got a "
                         f"{type(x).__name__}")
    if tuple(x.shape) != shape or not x.is_floating_point():
        raise ValueError(f"{name} must have shape {dims} = {shape} and a floating dtype, got shape "
                         f"{tuple(x.shape)} and dtype {x.dtype}")
    if check and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
