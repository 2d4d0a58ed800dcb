"""Gate statistics of gated cells along a trajectory: what flossing does to the gates.

Flossing k exponents of a gated cell to zero can reach lambda = 0 by saturating its gates instead of balancing its
dynamics: an LSTM whose forget gates go to 1 integrates (its cell state |c| grows), a GRU whose update gates go to 1
freezes its state; either stops learning. ``gate_statistics`` measures that: the mean of every gate of the cell's
``gate_values`` over a trajectory, per network (and the mean |c| of the LSTM's cell state).
"""
from __future__ import annotations

import torch

from ..spectrum import check_finite_parameters, prepare_inputs
from .gradients import initial_state

__all__ = ["gate_statistics"]


def gate_statistics(model, inputs: torch.Tensor | None, *, n_steps: int | None = None, batch: int = 1,
                    h0: torch.Tensor | None = None, generator=None) -> dict:
    """Mean gate values along the trajectory driven by ``inputs``: {gate name: (E,)}, plus "abs_cell" (E,) for
    cells with a cell state.

    model: a gated cell with ``gate_values(h, x)`` (``floss_core.LSTM``, ``GRU``). inputs: (E, B, T, I) or
    (B, T, I), or None with ``n_steps`` for zero input. h0: (E, B, S), default a random start from ``generator``.
    Means run over trajectories, steps and units."""
    if not hasattr(model, "gate_values"):
        raise ValueError(f"{type(model).__name__} has no gates (gate_statistics takes an LSTM or a GRU)")
    check_finite_parameters(model)
    inputs = prepare_inputs(model, inputs, n_steps=n_steps, batch=batch)  # (E, B, T, I)
    p = next(model.parameters())
    h = initial_state(model, h0, inputs.shape[1], generator, p)  # (E, B, S)
    sums = {}
    with torch.no_grad():
        for x in inputs.unbind(2):
            gates = model.gate_values(h, x)  # name -> (E, B, H)
            for name, value in gates.items():
                key = "abs_cell" if name == "cell" else name
                v = value.abs() if name == "cell" else value
                sums[key] = sums.get(key, 0) + v.mean((1, 2))  # (E,)
            h = model.step(h, x)
    T = inputs.shape[2]
    return {name: (total / T).cpu() for name, total in sums.items()}
