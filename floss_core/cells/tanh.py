"""Ensembles of vanilla tanh RNNs, the paper's model.

The paper's network (voltage form) is

    x_t = W tanh(x_{t-1}) + b + U s_t          readout  r_t = V x_t + c   (a logit)

with step Jacobian ``J_t = dx_t / dx_{t-1} = W diag(1 - tanh(x_{t-1})^2)``.

An ensemble holds E networks with a leading network dimension on every parameter (shapes: ``cells.protocol``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..checks import check_choice, check_number
from ..rng import sample
from .base import EnsembleRNN, Sizes

__all__ = ["TanhRNN", "voltage_step"]


def voltage_step(r: torch.Tensor, x: torch.Tensor, W: torch.Tensor, U: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``W r + b + U x`` with r = tanh(h_{t-1}) (E, B, N), x (E, B, I), W (E, N, N), U (E, N, I), b (E, N): (E, B, N).

    The one place the step is written: ``TanhRNN.step`` and the fast spectrum engine both call it (same bits)."""
    drive = torch.baddbmm(b.unsqueeze(1), x, U.transpose(1, 2))  # (E, B, N): b + U x
    return torch.baddbmm(drive, r, W.transpose(1, 2))  # (E, B, N)


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
        z = Sizes.check(n_in, n_hidden, n_out, n_networks, gain, dtype, generator)
        check_choice("init", init, ("gaussian", "orthogonal"))
        input_std, readout_std = check_number("input_std", input_std, 0), check_number("readout_std", readout_std, 0)
        bias_max = check_number("bias_max", bias_max, 0)
        E, N, I, O = z.n_networks, z.n_hidden, z.n_in, z.n_out
        kw = dict(dtype=z.dtype, device=device, generator=generator)
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
    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step ``x_t = W tanh(x_{t-1}) + b + U s_t``: h (E, B, N), x (E, B, I) -> (E, B, N)."""
        return voltage_step(torch.tanh(h), x, self.W, self.U, self.b)  # (E, B, N)

    def step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
        """The step and ``J_t Q`` with ``J_t = W diag(1 - tanh(h)^2)`` (rows of Q scaled, no dense Jacobian).

        h (E, B, N), x (E, B, I), Q (E, B, N, K) -> h_next (E, B, N), JQ (E, B, N, K).
        """
        r = torch.tanh(h)  # (E, B, N)
        h_next = voltage_step(r, x, self.W, self.U, self.b)  # (E, B, N)
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
