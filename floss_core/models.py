"""Ensembles of vanilla tanh RNNs, and the cell protocol every model follows.

The paper's network (voltage form) is

    x_t = W tanh(x_{t-1}) + b + U s_t          readout  r_t = V x_t + c   (a logit)

with step Jacobian ``J_t = dx_t / dx_{t-1} = W diag(1 - tanh(x_{t-1})^2)``.

An *ensemble* holds E independent networks whose parameters carry a leading network dimension, so seeds and
conditions run as one batched computation. Shapes used throughout the package:

    E  networks        B  trajectories (batch) per network     T  time steps
    S  state size      I  input channels                       O  output channels     K  tangent vectors

The cell protocol (what ``lyapunov_spectrum``, flossing, training and the diagnostics need from a model):

    n_networks, state_size, input_size, output_size     ints
    step(h, x) -> h_next                    (E, B, S), (E, B, I) -> (E, B, S)
    readout(h) -> logits                    (E, B, S) -> (E, B, O)
    initial_state(batch, generator) -> h0   (E, B, S), a random start for spectra
    step_tangent(h, x, Q) -> (h_next, J Q)  optional: (E, B, S, K) tangent vectors pushed through the step
                                            Jacobian; without it, Jacobian-vector products from torch.func are used.
    train_state(batch) -> h0                (E, batch, S), the (trainable) initial state; needed by ``train`` only,
                                            which also needs parameters with a leading E dimension named as in
                                            ``FlossConfig.params`` (default W, U, b).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .rng import sample

__all__ = ["EnsembleRNN", "TanhRNN"]


def _check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class EnsembleRNN(nn.Module):
    """What every ensemble of the package shares: sizes read off the parameters (W (E, G*H, H), U (E, G*H, I),
    V (E, O, H)), a random start for spectra, the trainable initial state ``h0`` (E, S) and the flossed parameters.
    The state has S = state_factor * H entries (2H for the LSTM's [h, c])."""

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

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
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


class TanhRNN(EnsembleRNN):
    """An ensemble of E independent vanilla tanh RNNs (the paper's model, voltage form).

    Main arguments:
        n_in: input channels I.
        n_hidden: units N (the state size S = N).
        n_out: readout channels O.

    Other arguments (keyword-only):
        gain: g; recurrent weights W_ij ~ N(0, g^2 / N), or g times a random orthogonal matrix.
        n_networks: E, the number of independent networks in the ensemble.
        init: "gaussian" or "orthogonal" for W.
        input_std, readout_std: standard deviations of U and V (the author's run: 1 and 1).
        bias_max: b ~ U[0, bias_max) (the author's run: 0.1).
        generator: a torch.Generator for the initial parameters (same generator state, same networks).
        dtype, device: of the parameters.

    Parameters (public, set them directly, e.g. ``model.W.data.copy_(...)``):
        W (E, N, N) recurrent weights, U (E, N, I) input weights, b (E, N) bias,
        V (E, O, N) readout weights, c (E, O) readout bias,
        h0 (E, N) the initial state used by training (zeros; trainable by default).

    Network e of the ensemble is exactly the single network built from ``W[e], U[e], b[e], V[e], c[e]``.
    """

    def __init__(self, n_in: int, n_hidden: int, n_out: int, *, gain: float = 1.0, n_networks: int = 1,
                 init: str = "gaussian", input_std: float = 1.0, readout_std: float = 1.0, bias_max: float = 0.1,
                 generator: torch.Generator | None = None, dtype: torch.dtype | None = None,
                 device: torch.device | str | None = None):
        super().__init__()
        _check_positive_int("n_in", n_in)
        _check_positive_int("n_hidden", n_hidden)
        _check_positive_int("n_out", n_out)
        _check_positive_int("n_networks", n_networks)
        if not math.isfinite(gain) or gain < 0:
            raise ValueError(f"gain must be a finite non-negative number, got {gain!r}")
        if init not in ("gaussian", "orthogonal"):
            raise ValueError(f"init must be 'gaussian' or 'orthogonal', got {init!r}")
        E, N, I, O = n_networks, n_hidden, n_in, n_out
        kw = dict(dtype=dtype or torch.get_default_dtype(), device=device, generator=generator)
        if init == "gaussian":
            W = sample(torch.randn, E, N, N, **kw) * (gain / math.sqrt(N))  # (E, N, N)
        else:
            Q, R = torch.linalg.qr(sample(torch.randn, E, N, N, **kw))
            W = gain * Q * torch.sign(torch.diagonal(R, dim1=-2, dim2=-1)).unsqueeze(-2)  # Haar-distributed
        self.W = nn.Parameter(W)
        self.U = nn.Parameter(sample(torch.randn, E, N, I, **kw) * input_std)  # (E, N, I)
        self.b = nn.Parameter(sample(torch.rand, E, N, **kw) * bias_max)  # (E, N)
        self.V = nn.Parameter(sample(torch.randn, E, O, N, **kw) * readout_std)  # (E, O, N)
        self.c = nn.Parameter(torch.zeros(E, O, dtype=kw["dtype"], device=device))  # (E, O)
        self.h0 = nn.Parameter(torch.zeros(E, N, dtype=kw["dtype"], device=device))  # (E, N)
        self.gain, self.init = gain, init

    # -- dynamics ------------------------------------------------------------------------------------------------
    def _drive(self, x: torch.Tensor) -> torch.Tensor:
        """b + U s, shape (E, B, N), from inputs x (E, B, I)."""
        return torch.baddbmm(self.b.unsqueeze(1), x, self.U.transpose(1, 2))  # (E, B, N)

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step ``x_t = W tanh(x_{t-1}) + b + U s_t``: h (E, B, N), x (E, B, I) -> (E, B, N)."""
        return torch.baddbmm(self._drive(x), torch.tanh(h), self.W.transpose(1, 2))  # (E, B, N)

    def step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
        """The step and ``J_t Q`` with ``J_t = W diag(1 - tanh(h)^2)`` (rows of Q scaled, no dense Jacobian).

        h (E, B, N), x (E, B, I), Q (E, B, N, K) -> h_next (E, B, N), JQ (E, B, N, K).
        """
        r = torch.tanh(h)  # (E, B, N)
        h_next = torch.baddbmm(self._drive(x), r, self.W.transpose(1, 2))  # (E, B, N)
        JQ = self.W.unsqueeze(1) @ ((1 - r * r).unsqueeze(-1) * Q)  # (E, B, N, K)
        return h_next, JQ

    def jacobian(self, h: torch.Tensor, x: torch.Tensor | None = None) -> torch.Tensor:
        """The dense step Jacobian ``dx_t / dx_{t-1}`` at states h (E, B, N): shape (E, B, N, N).

        It does not depend on the input; x is accepted for symmetry with other cells."""
        return self.W.unsqueeze(1) * (1 - torch.tanh(h) ** 2).unsqueeze(-2)  # (E, B, N, N)

    def readout(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``V x + c``: h (E, B, N) -> (E, B, O)."""
        return torch.baddbmm(self.c.unsqueeze(1), h, self.V.transpose(1, 2))  # (E, B, O)

    def extra_repr(self) -> str:
        return (f"n_networks={self.n_networks}, n_in={self.input_size}, n_hidden={self.state_size}, "
                f"n_out={self.output_size}, gain={self.gain}, init={self.init!r}")
