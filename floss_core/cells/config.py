"""``ModelConfig``: which cell, how many units, and how its weights are drawn (the author's example run by default)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..checks import check_choice, check_dtype, check_int, check_number
from .gated import GRU, LSTM
from .tanh import TanhRNN

__all__ = ["ModelConfig", "CELLS"]

CELLS = {"tanh": TanhRNN, "lstm": LSTM, "gru": GRU}


@dataclass(frozen=True)
class ModelConfig:
    cell: str = "tanh"  # "tanh" (the paper's vanilla RNN), "lstm" or "gru"
    n_hidden: int = 80  # N, units
    gain: float = 1.0  # g, W_ij ~ N(0, g^2 / N)
    init: str = "gaussian"  # "gaussian" or "orthogonal" recurrent weights
    input_std: float = 1.0  # U ~ N(0, input_std^2)
    readout_std: float = 1.0  # V ~ N(0, readout_std^2)
    bias_max: float = 0.1  # b ~ U[0, bias_max)
    dtype: str = "float32"  # parameter dtype, "float32" or "float64"
    memory_bias: float = 0.0  # gated cells: added to the forget-gate (LSTM) / update-gate (GRU) bias; 0: PyTorch's

    def __post_init__(self):
        check_choice("ModelConfig.cell", self.cell, tuple(CELLS))
        check_int("ModelConfig.n_hidden", self.n_hidden, 1)
        check_number("ModelConfig.gain", self.gain, 0)
        check_choice("ModelConfig.init", self.init, ("gaussian", "orthogonal"))
        for name in ("input_std", "readout_std", "bias_max"):
            check_number(f"ModelConfig.{name}", getattr(self, name), 0)
        check_dtype("ModelConfig.dtype", self.dtype)
        check_number("ModelConfig.memory_bias", self.memory_bias)
        if self.memory_bias and self.cell == "tanh":
            raise ValueError("ModelConfig.memory_bias applies to gated cells ('lstm', 'gru'), not to 'tanh'")

    def build(self, n_in: int, n_out: int, *, n_networks: int = 1, generator=None, device=None):
        """An ensemble of ``n_networks`` networks with these settings (gated cells use their own PyTorch-like
        initialization; only ``gain`` and ``memory_bias`` apply to them)."""
        dtype: torch.dtype = check_dtype("ModelConfig.dtype", self.dtype)
        if self.cell != "tanh":
            return CELLS[self.cell](n_in, self.n_hidden, n_out, gain=self.gain, n_networks=n_networks,
                                    memory_bias=self.memory_bias, generator=generator, dtype=dtype, device=device)
        return TanhRNN(n_in, self.n_hidden, n_out, gain=self.gain, n_networks=n_networks, init=self.init,
                       input_std=self.input_std, readout_std=self.readout_std, bias_max=self.bias_max,
                       generator=generator, dtype=dtype, device=device)
