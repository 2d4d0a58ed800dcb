"""The one error report of the spectrum engines: where the state or the exponents stopped being finite."""
from __future__ import annotations

import torch

__all__ = ["bad_networks", "raise_non_finite"]


def bad_networks(x: torch.Tensor) -> torch.Tensor:
    """(E,) bool: networks whose slice of x (E, ...) holds a NaN or inf."""
    return ~torch.isfinite(x).flatten(1).all(1)


def raise_non_finite(state_bad: torch.Tensor, exponent_bad: torch.Tensor):
    """Raise ValueError naming the first step where some network's state, else its exponents, stopped being finite.

    state_bad (T, E) bool: the state after step t is not finite; exponent_bad (T, E) bool: log|R_ii| of the QR after
    step t (after the transient) is not finite (False at steps without one)."""
    for bad, what, hint in ((state_bad, "the state became non-finite",
                             "the dynamics diverged (check the weights' scale and the inputs)"),
                            (exponent_bad, "the exponents stopped being finite",
                             "the tangent basis collapsed (log|R_ii| = -inf): a step Jacobian is singular to the "
                             "precision (e.g. saturated units); in float32, try float64")):
        steps = bad.any(1).nonzero().flatten()
        if steps.numel():
            t = int(steps[0])
            nets = bad[t].nonzero().flatten().tolist()
            raise ValueError(f"{what} at step {t} in network(s) {nets}: {hint}")
    raise ValueError("the exponents are not finite")
