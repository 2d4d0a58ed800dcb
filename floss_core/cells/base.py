"""The ensemble base shared by every cell of the package (TanhRNN, LSTM, GRU): sizes, constructor checks, a random
start for spectra, the trainable initial state and the flossed parameters.

Parameters are laid out as W (E, G*H, H), U (E, G*H, I), V (E, O, H) with G gates (1 for the tanh RNN) and H units;
the state has S = state_factor * H entries (2H for the LSTM's [h, c]). Network e of an ensemble is exactly the single
network built from the e-th slices of every parameter.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..checks import check_dtype, check_int, check_number
from ..rng import check_generator, sample

__all__ = ["EnsembleRNN", "Sizes"]


@dataclass(frozen=True)
class Sizes:
    """Checked constructor arguments: n_in (I), n_hidden (H), n_out (O), n_networks (E), gain, dtype."""
    n_in: int
    n_hidden: int
    n_out: int
    n_networks: int
    gain: float
    dtype: torch.dtype

    @classmethod
    def check(cls, n_in, n_hidden, n_out, n_networks, gain, dtype, generator) -> "Sizes":
        check_generator(generator, check_int("n_networks", n_networks, 1))
        return cls(check_int("n_in", n_in, 1), check_int("n_hidden", n_hidden, 1), check_int("n_out", n_out, 1),
                   n_networks, check_number("gain", gain, 0), check_dtype("dtype", dtype))


class EnsembleRNN(nn.Module):
    """What every ensemble of the package shares (see the module docstring)."""

    state_factor: int = 1

    @property
    def n_networks(self) -> int:
        return self.W.shape[0]

    @property
    def hidden_size(self) -> int:
        """H, the number of units."""
        return self.W.shape[-1]

    @property
    def state_size(self) -> int:
        return self.state_factor * self.W.shape[-1]

    @property
    def input_size(self) -> int:
        return self.U.shape[-1]

    @property
    def output_size(self) -> int:
        return self.V.shape[-2]

    def initial_state(self, batch: int, generator=None) -> torch.Tensor:
        """A random start for spectra, every state entry ~ N(0, 1): shape (E, batch, S).

        (A zero-input network started at its fixed point would stay there forever.)"""
        return sample(torch.randn, self.n_networks, batch, self.state_size, dtype=self.W.dtype,
                      device=self.W.device, generator=generator)

    def train_state(self, batch: int) -> torch.Tensor:
        """The (trainable) initial state h0 broadcast to a batch: (E, batch, S)."""
        return self.h0.unsqueeze(1).expand(-1, batch, -1)

    def flossed_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters flossing updates by default (the paper's W, U, b)."""
        return {"W": self.W, "U": self.U, "b": self.b}
