"""Unmodified PyTorch recurrent modules in the cell protocol (``TorchCell``), and ``from_torch``.

(``floss_core.adapters`` adds their spectra and flossing loss.)

Supported: ``torch.nn.RNNCell`` (tanh or relu), ``LSTMCell``, ``GRUCell``, and single-layer, unidirectional
``torch.nn.RNN`` / ``LSTM`` / ``GRU`` without projections (``batch_first`` either way). Everything stays
differentiable with respect to the module's OWN parameters, so the flossing loss drops into an existing training
loop::

    lstm = torch.nn.LSTM(3, 64, batch_first=True)
    ...
    loss = task_loss + 0.1 * flossing_loss_of(lstm, x, k=8)      # x (B, T, 3), as the module takes it
    loss.backward(); optimizer.step()                             # gradients reach lstm.weight_hh_l0 etc.

How: ``TorchCell(module)`` wraps the module in the cell protocol of ``floss_core.cells.protocol`` with one network
(E = 1): the state is (1, B, S) with S = H, or S = 2H for an LSTM (h and c concatenated, [h, c]). Its ``step``
writes out the module's equations on its own ``weight_ih``, ``weight_hh``, ``bias_ih``, ``bias_hh`` (``*_l0`` for
``nn.RNN/LSTM/GRU``), with the gate equations of ``floss_core.cells.gated`` (one set of equations for both). It has
no ``step_tangent``: the tangent vectors go through ``torch.func`` Jacobian-vector products of ``step``
(``floss_core.spectrum.jvp_tangent_step``), checked against ``torch.func.jacrev`` and finite differences for every
supported module. A TorchCell has no readout, so it cannot be passed to ``floss_core.train``; keep your own readout
and training loop.

Inputs are given as the module takes them: ``(T, I)`` for one unbatched sequence, ``(B, T, I)`` for cells and
``batch_first=True`` modules, ``(T, B, I)`` for ``batch_first=False`` modules (the PyTorch default). A start state
``h0`` may be the module's own format (a tensor (B, H) / (1, B, H) / (H,), a tuple (h, c) of those for an LSTM) or
a flat (1, B, S) / (B, S) state; the default is a random start ``N(0, 1)`` per entry from ``generator``.

``from_torch(module)`` instead copies the weights into a 1-network ``floss_core`` model (LSTM, GRU, or TanhRNN for a
tanh RNN), with a new readout, for use with ``floss`` and ``train``. The TanhRNN is the *voltage* form
``x_t = W tanh(x_{t-1}) + b + U s_t`` while nn.RNN is the *rate* form ``h_t = tanh(W h_{t-1} + b + U s_t)``: with the
same inputs (no shift), ``x_t`` is the rate network's pre-activation and ``h_t = tanh(x_t)``, if the TanhRNN starts
at ``x_{-1} = atanh(h_{-1})``. The step Jacobians differ (``W D_{t-1}`` against ``D_t W``, with
``D_t = diag(1 - h_t^2)``) only by where the diagonal factor sits, so the long-term Jacobians agree up to one
factor at either end and the exponents agree up to O(1 / T).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..rng import sample
from .gated import GRU, LSTM, gru_gates, lstm_gates
from .tanh import TanhRNN

__all__ = ["TorchCell", "from_torch"]

_CELLS = (nn.RNNCell, nn.LSTMCell, nn.GRUCell)
_LAYERS = (nn.RNN, nn.LSTM, nn.GRU)


def _kind(module) -> str:
    """"RNN_TANH", "RNN_RELU", "LSTM" or "GRU"; ValueError for anything not supported."""
    if isinstance(module, nn.LSTMCell):
        return "LSTM"
    if isinstance(module, nn.GRUCell):
        return "GRU"
    if isinstance(module, nn.RNNCell):
        return {"tanh": "RNN_TANH", "relu": "RNN_RELU"}[module.nonlinearity]
    if isinstance(module, _LAYERS):
        name = type(module).__name__
        if module.num_layers != 1:
            raise ValueError(f"{name} with num_layers={module.num_layers} is not supported: only single-layer "
                             "modules (stack single-layer modules and take the spectrum of each)")
        if module.bidirectional:
            raise ValueError(f"bidirectional {name} is not supported: a spectrum needs a forward-in-time map")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{name} with proj_size={module.proj_size} is not supported")
        return module.mode
    raise ValueError(f"unsupported module {type(module).__name__}: expected one of torch.nn.RNNCell, LSTMCell, "
                     "GRUCell, or a single-layer unidirectional torch.nn.RNN, LSTM, GRU")


class TorchCell(nn.Module):
    """A torch.nn recurrent module in the cell protocol of ``floss_core.cells.protocol`` (one network, E = 1).

    State (1, B, S): h (S = H), or [h, c] (S = 2H) for an LSTM. Gradients of anything computed from ``step`` reach
    ``module.parameters()`` (the wrapper holds no parameters of its own). No readout: ``readout``, ``train_state``
    and ``output_size`` raise TypeError.
    """

    n_networks = 1

    def __init__(self, module: nn.Module):
        super().__init__()
        self.kind = _kind(module)
        self.module = module
        self.is_cell = isinstance(module, _CELLS)
        self.batch_first = True if self.is_cell else bool(module.batch_first)
        self.hidden_size = module.hidden_size
        self._input_size = module.input_size

    @property
    def state_size(self) -> int:
        return (2 if self.kind == "LSTM" else 1) * self.hidden_size

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def output_size(self) -> int:
        raise TypeError(self._no_readout())

    def _weights(self):
        m = self.module
        if self.is_cell:
            return m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh
        bias = m.bias
        return (m.weight_ih_l0, m.weight_hh_l0, m.bias_ih_l0 if bias else None, m.bias_hh_l0 if bias else None)

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step of the module: h (1, B, S), x (1, B, I) -> (1, B, S).

        The module's own equations written out with its own weights (not its fused kernels: CUDA's fused LSTM/GRU
        cells have no forward-mode derivative, which the torch.func Jacobian-vector products need)."""
        hh, xx = h[0], x[0]  # (B, S), (B, I)
        H = self.hidden_size
        w_ih, w_hh, b_ih, b_hh = self._weights()
        gx = F.linear(xx, w_ih, b_ih)  # (B, G*H)
        if self.kind == "LSTM":
            h, c, _ = lstm_gates(gx + F.linear(hh[:, :H], w_hh, b_hh), hh[:, H:])  # (B, H) each
            return torch.cat([h, c], dim=-1).unsqueeze(0)
        gh = F.linear(hh, w_hh, b_hh)  # (B, G*H)
        if self.kind == "GRU":
            return gru_gates(gx, gh, hh)[0].unsqueeze(0)
        act = torch.tanh if self.kind == "RNN_TANH" else torch.relu
        return act(gx + gh).unsqueeze(0)

    def initial_state(self, batch: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """A random start for spectra, every entry ~ N(0, 1): (1, batch, S)."""
        p = next(self.module.parameters())
        return sample(torch.randn, 1, batch, self.state_size, dtype=p.dtype, device=p.device, generator=generator)

    def _no_readout(self) -> str:
        return (f"TorchCell({type(self.module).__name__}) wraps only the recurrent core and has no readout: it "
                "cannot be trained by floss_core.train. Add flossing_loss_of(...) to the loss of your own training "
                "loop, or build a floss_core model with from_torch(module)")

    def readout(self, h):
        raise TypeError(self._no_readout())

    def train_state(self, batch):
        raise TypeError(self._no_readout())

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, state_size={self.state_size}"


def from_torch(module: nn.Module, n_out: int = 1, *, generator: torch.Generator | None = None):
    """A 1-network floss_core model with the recurrent weights of a torch module (copies, not shared).

    nn.LSTMCell / nn.LSTM -> ``floss_core.LSTM`` (b = b_ih + b_hh); nn.GRUCell / nn.GRU -> ``GRU`` (b = b_ih,
    b_h = b_hh); tanh nn.RNNCell / nn.RNN -> ``TanhRNN`` (W = weight_hh, U = weight_ih, b = b_ih + b_hh; the voltage
    form, see the module docstring). A relu RNN raises ValueError. The readout (n_out channels) is new, drawn from
    ``generator``; h0 is zero. Dtype and device follow the module's parameters.
    """
    cell = TorchCell(module)
    w_ih, w_hh, b_ih, b_hh = (t.detach() if t is not None else None for t in cell._weights())
    H, I = cell.hidden_size, cell.input_size
    kw = dict(n_networks=1, generator=generator, dtype=w_hh.dtype, device=w_hh.device)
    zeros = torch.zeros(w_hh.shape[0], dtype=w_hh.dtype, device=w_hh.device)
    b_ih = zeros if b_ih is None else b_ih
    b_hh = zeros if b_hh is None else b_hh
    if cell.kind == "LSTM":
        model = LSTM(I, H, n_out, **kw)
        values = {"W": w_hh, "U": w_ih, "b": b_ih + b_hh}
    elif cell.kind == "GRU":
        model = GRU(I, H, n_out, **kw)
        values = {"W": w_hh, "U": w_ih, "b": b_ih, "b_h": b_hh}
    elif cell.kind == "RNN_TANH":
        model = TanhRNN(I, H, n_out, **kw)
        values = {"W": w_hh, "U": w_ih, "b": b_ih + b_hh}
    else:
        raise ValueError("a relu RNN has no floss_core counterpart (TanhRNN is tanh); use spectrum() on it instead")
    with torch.no_grad():
        for name, v in values.items():
            getattr(model, name).copy_(v.unsqueeze(0))
    return model
