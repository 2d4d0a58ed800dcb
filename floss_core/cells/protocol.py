"""The cell protocol: what ``lyapunov_spectrum``, flossing, training and the diagnostics need from a model.

An *ensemble* holds E independent networks whose parameters carry a leading network dimension, so seeds and
conditions run as one batched computation. Shapes used throughout the package:

    E  networks        B  trajectories (batch) per network     T  time steps
    S  state size      I  input channels                       O  output channels     K  tangent vectors

Any ``nn.Module`` with the members of ``Cell`` works with ``lyapunov_spectrum`` and the diagnostics; ``train`` also
needs those of ``TrainableCell``. ``step_tangent`` is optional: without it, Jacobian-vector products of ``step`` from
``torch.func`` are used (exact and differentiable, about 2-3x slower).
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

__all__ = ["Cell", "TrainableCell", "TangentCell"]


@runtime_checkable
class Cell(Protocol):
    """What a spectrum needs. ``step`` must use torch ops only and no in-place writes (torch.func differentiates it)."""

    n_networks: int
    state_size: int  # S
    input_size: int  # I

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step: h (E, B, S), x (E, B, I) -> (E, B, S)."""

    def initial_state(self, batch: int, generator=None) -> torch.Tensor:
        """A random start for spectra: (E, batch, S)."""


@runtime_checkable
class TangentCell(Cell, Protocol):
    def step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The step and ``J Q``: h (E, B, S), x (E, B, I), Q (E, B, S, K) -> (E, B, S), (E, B, S, K)."""


@runtime_checkable
class TrainableCell(Cell, Protocol):
    """What ``train`` needs besides: a readout, the (trainable) initial state, and parameters with a leading E
    dimension named as in ``FlossConfig.params`` (default W, U, b)."""

    output_size: int  # O

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits: (E, B, S) -> (E, B, O)."""

    def train_state(self, batch: int) -> torch.Tensor:
        """The initial state of training: (E, batch, S)."""


def unroll(model, inputs: torch.Tensor, h0: torch.Tensor) -> list[torch.Tensor]:
    """The state after every step, ``h_t = model.step(h_{t-1}, x_t)``: inputs (E, B, T, I), h0 (E, B, S) ->
    T tensors (E, B, S), each a node of the autograd graph. The one time loop of training and the diagnostics."""
    h, states = h0, []
    for x in inputs.unbind(2):  # unbind once: indexing inside the loop makes the backward quadratic
        h = model.step(h, x)  # (E, B, S)
        states.append(h)
    return states
