"""Lyapunov spectra and the flossing loss of unmodified PyTorch recurrent modules (``torch.nn.RNNCell``, ``LSTMCell``,
``GRUCell``, unidirectional ``nn.RNN`` (tanh, relu) / ``LSTM`` / ``GRU`` with any ``num_layers``, no projections)::

    lstm = torch.nn.LSTM(3, 64, num_layers=2, batch_first=True)
    loss = task_loss + 0.1 * flossing_loss_of(lstm, x, k=8)      # x (B, T, 3), as the module takes it
    loss.backward(); optimizer.step()                             # gradients reach lstm.weight_hh_l0, _l1 etc.

The module is wrapped in the cell protocol by ``floss_core.cells.adapters.TorchCell`` (one network, E = 1). The
exponents are those of the joint state of all L layers, layer by layer: [h_1, c_1, ..., h_L, c_L] for an LSTM
(S = 2 H L; L = 1: [h, c]), [h_1, ..., h_L] otherwise (S = H L). ``h0`` may be in the module's format ((h0, c0) each
(L, B, H) for an LSTM, (L, B, H) otherwise, or the unbatched (L, H)) or flat ((1, B, S) / (B, S)); ``Q0`` is
(B, S, k) or (1, B, S, k) in the joint state's order. A multi-layer module with ``dropout > 0`` must be in eval mode
(in training mode dropout makes its map random: call ``module.eval()`` or set ``dropout=0``). ``from_torch`` copies
a single-layer module's weights into a floss_core model for ``floss`` and ``train`` (num_layers > 1 raises
ValueError: floss_core's models are single-layer). See that module for the conventions (input layouts, start states,
the rate vs voltage form of the tanh RNN).
"""
from __future__ import annotations

import torch

from .cells.adapters import TorchCell, from_torch
from .flossing import flossing_loss
from .spectrum import lyapunov_spectrum

__all__ = ["TorchCell", "spectrum", "flossing_loss_of", "from_torch"]


def _as_cell(module) -> TorchCell:
    return module if isinstance(module, TorchCell) else TorchCell(module)


def _sequence(cell: TorchCell, inputs) -> torch.Tensor | None:
    """Inputs in the module's layout -> (1, B, T, I) for lyapunov_spectrum."""
    if inputs is None:
        return None
    if not isinstance(inputs, torch.Tensor):
        raise ValueError(f"inputs must be a torch.Tensor, got {type(inputs).__name__}")
    layout = "(B, T, I)" if cell.batch_first else "(T, B, I)"
    if inputs.dim() not in (2, 3):
        raise ValueError(f"inputs must have shape (T, I) or {layout} for this module, got {tuple(inputs.shape)}")
    if inputs.shape[-1] != cell.input_size:
        raise ValueError(f"inputs have {inputs.shape[-1]} channels (last dimension) but the module has "
                         f"input_size={cell.input_size}")
    if inputs.dim() == 2:
        inputs = inputs.unsqueeze(0)  # (1, T, I)
    elif not cell.batch_first:
        inputs = inputs.transpose(0, 1)  # (T, B, I) -> (B, T, I)
    return inputs.unsqueeze(0)  # (1, B, T, I)


def _state(cell: TorchCell, h0):
    """A start state in the module's format (or flat) -> (1, B, S) (``TorchCell.flat_state``)."""
    return None if h0 is None else cell.flat_state(h0)


def spectrum(module, inputs: torch.Tensor | None, k: int, **kw) -> torch.Tensor:
    """The first k Lyapunov exponents (nats per step) of a torch recurrent module driven by ``inputs``: (k,).

    Main arguments:
        module: an nn.RNNCell, LSTMCell, GRUCell, a unidirectional nn.RNN, LSTM, GRU (any num_layers; with
            dropout > 0 and num_layers > 1 in eval mode), or a TorchCell.
        inputs: as the module takes them: (T, I), or (B, T, I) for cells and batch_first modules, or (T, B, I) for
            batch_first=False modules; None for zero input (then give ``n_steps=`` and optionally ``batch=``).
        k: how many exponents, 1 <= k <= S (S = H L, or 2 H L for an LSTM; L = num_layers, 1 for cells).

    Keyword arguments go to ``floss_core.lyapunov_spectrum`` (n_transient, t_ons, generator, gradient, Q0 as
    (1, B, S, k) or (B, S, k) in the joint state's order, ...); ``h0`` may be in the module's format ((h0, c0) each
    (L, B, H) for an LSTM, (L, B, H) otherwise; see the module docstring) or flat (1, B, S) / (B, S). With
    ``reduce="none"`` the result is (B, k). Differentiable with respect to ``module.parameters()`` (every layer's).
    """
    cell = _as_cell(module)
    cell.check_deterministic()
    if "h0" in kw:
        kw["h0"] = _state(cell, kw["h0"])
    if kw.get("Q0") is not None and kw["Q0"].dim() == 3:
        kw["Q0"] = kw["Q0"].unsqueeze(0)
    return lyapunov_spectrum(cell, _sequence(cell, inputs), k, **kw)[0]


def flossing_loss_of(module, inputs: torch.Tensor | None, k: int, *, target: float = 0.0, **kw) -> torch.Tensor:
    """The flossing loss ``mean_i (lambda_i - target)^2`` of the first k exponents of ``module``: a scalar.

    Arguments as for ``spectrum``. Add it (weighted) to your task loss: its gradient reaches the module's own
    parameters. (With ``reduce="none"``, the loss of each trajectory's spectrum, averaged over trajectories.)
    """
    return flossing_loss(spectrum(module, inputs, k, **kw), target).mean()
