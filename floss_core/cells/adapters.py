"""Unmodified PyTorch recurrent modules in the cell protocol (``TorchCell``), and ``from_torch``.

(``floss_core.adapters`` adds their spectra and flossing loss.)

Supported: ``torch.nn.RNNCell`` (tanh or relu), ``LSTMCell``, ``GRUCell``, and unidirectional ``torch.nn.RNN``
(tanh or relu) / ``LSTM`` / ``GRU`` with any ``num_layers`` and no projections (``batch_first`` either way).
Everything stays differentiable with respect to the module's OWN parameters, so the flossing loss drops into an
existing training loop::

    lstm = torch.nn.LSTM(3, 64, num_layers=2, batch_first=True)
    ...
    loss = task_loss + 0.1 * flossing_loss_of(lstm, x, k=8)      # x (B, T, 3), as the module takes it
    loss.backward(); optimizer.step()                             # gradients reach lstm.weight_hh_l0, _l1 etc.

How: ``TorchCell(module)`` wraps the module in the cell protocol of ``floss_core.cells.protocol`` with one network
(E = 1). The state is (1, B, S), the joint state of all L layers, layer by layer (L = 1 for cells):

    LSTM:       [h_1, c_1, ..., h_L, c_L]     S = 2 H L     (L = 1: [h, c])
    RNN, GRU:   [h_1, ..., h_L]               S = H L

Its ``step`` writes out the module's equations on its own ``weight_ih_l*``, ``weight_hh_l*``, ``bias_ih_l*``,
``bias_hh_l*`` (``weight_ih`` etc. for cells), layer l reading layer l-1's new h of the same step as torch does,
with the gate equations of ``floss_core.cells.gated`` (one set of equations for both); the layer-by-layer equations
and their tangent map are in ``floss_core.cells.stacked``. A multi-layer TorchCell has a ``step_tangent`` that
applies the block lower-triangular step Jacobian to the tangent vectors layer by layer without forming it; a
single-layer one has none, and where the reference engine runs it (``lyapunov_spectrum`` says which engine takes
which cell) its tangent vectors go through ``torch.func`` Jacobian-vector products of ``step``
(``floss_core.spectrum.jvp_tangent_step``). The layer-by-layer tangent map, ``analytic_step_tangent`` for any L,
equals those products to roundoff, parameter gradients included, and the spectra equal a dense-Jacobian QR loop on
torch's own cells (tests/test_adapters_stacked.py). A TorchCell has no readout, so it cannot be passed to
``floss_core.train``; keep your own readout and training loop.

Dropout: torch applies a module's ``dropout`` between layers in training mode only, which makes the map random; a
multi-layer module with ``dropout > 0`` in training mode is refused (ValueError, checked at every step): call
``module.eval()`` (the spectrum of the deterministic map, the one evaluation runs) or set ``dropout=0``. A
single-layer module has no layer to drop between, so its ``dropout`` is ignored as torch ignores it.

Inputs are given as the module takes them: ``(T, I)`` for one unbatched sequence, ``(B, T, I)`` for cells and
``batch_first=True`` modules, ``(T, B, I)`` for ``batch_first=False`` modules (the PyTorch default). A start state
``h0`` (``TorchCell.flat_state``) may be the module's own format: for nn.RNN / GRU a tensor (L, B, H) or unbatched
(L, H); for nn.LSTM a tuple (h0, c0) of those; for cells and L = 1 also (B, H) / (H,) (a tuple (h, c) of those for
an LSTM); or a flat joint state (1, B, S) / (B, S) / (S,). The default is a random start ``N(0, 1)`` per entry from
``generator``. Tangent bases ``Q0`` are (1, B, S, k) or (B, S, k) in the joint state's order.
``TorchCell.module_state`` turns a joint state back into the module's format ((h_n, c_n) or h_n).

``from_torch(module)`` instead copies the weights into a 1-network ``floss_core`` model (LSTM, GRU, or TanhRNN for a
tanh RNN), with a new readout, for use with ``floss`` and ``train``. Those models are single-layer ensembles, so a
module with ``num_layers > 1`` raises ValueError there: take its spectrum and flossing loss with
``floss_core.adapters.spectrum`` / ``flossing_loss_of`` on the module itself. The TanhRNN is the *voltage* form
``x_t = W tanh(x_{t-1}) + b + U s_t`` while nn.RNN is the *rate* form ``h_t = tanh(W h_{t-1} + b + U s_t)``: with the
same inputs (no shift), ``x_t`` is the rate network's pre-activation and ``h_t = tanh(x_t)``, if the TanhRNN starts
at ``x_{-1} = atanh(h_{-1})``. The step Jacobians differ (``W D_{t-1}`` against ``D_t W``, with
``D_t = diag(1 - h_t^2)``) only by where the diagonal factor sits, so the long-term Jacobians agree up to one
factor at either end and the exponents agree up to O(1 / T).
"""
from __future__ import annotations

import torch
from torch import nn

from ..rng import sample
from .gated import GRU, LSTM
from .stacked import stacked_step, stacked_step_tangent, state_factor
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
        if module.bidirectional:
            raise ValueError(f"bidirectional {name} is not supported (bidirectional=True): a spectrum needs a "
                             "forward-in-time map; use bidirectional=False")
        if getattr(module, "proj_size", 0):
            raise ValueError(f"{name} with proj_size={module.proj_size} is not supported: only proj_size=0")
        return module.mode
    raise ValueError(f"unsupported module {type(module).__name__}: expected one of torch.nn.RNNCell, LSTMCell, "
                     "GRUCell, or a unidirectional torch.nn.RNN, LSTM, GRU")


class TorchCell(nn.Module):
    """A torch.nn recurrent module in the cell protocol of ``floss_core.cells.protocol`` (one network, E = 1).

    State (1, B, S), layer by layer: [h_1, ..., h_L] (S = H L), or [h_1, c_1, ..., h_L, c_L] (S = 2 H L) for an
    LSTM; L = ``num_layers`` (1 for cells). Gradients of anything computed from ``step`` reach
    ``module.parameters()`` (the wrapper holds no parameters of its own). No readout: ``readout``, ``train_state``
    and ``output_size`` raise TypeError.

    Attributes: ``module``, ``kind`` ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"), ``is_cell``, ``batch_first``,
    ``hidden_size`` (H, per layer), ``num_layers`` (L), ``state_size`` (S), ``input_size``.
    """

    n_networks = 1

    def __init__(self, module: nn.Module):
        super().__init__()
        self.kind = _kind(module)
        self.module = module
        self.is_cell = isinstance(module, _CELLS)
        self.batch_first = True if self.is_cell else bool(module.batch_first)
        self.hidden_size = module.hidden_size
        self.num_layers = 1 if self.is_cell else int(module.num_layers)
        self._input_size = module.input_size

    @property
    def state_size(self) -> int:
        return state_factor(self.kind) * self.hidden_size * self.num_layers

    @property
    def input_size(self) -> int:
        return self._input_size

    @property
    def output_size(self) -> int:
        raise TypeError(self._no_readout())

    def _weights(self, layer: int = 0):
        """``(weight_ih, weight_hh, bias_ih or None, bias_hh or None)`` of layer ``layer`` (0-based; cells: 0)."""
        m = self.module
        if not (isinstance(layer, int) and 0 <= layer < self.num_layers):
            raise ValueError(f"layer must be an int in [0, {self.num_layers - 1}] (num_layers={self.num_layers}), "
                             f"got {layer!r}")
        if self.is_cell:
            return m.weight_ih, m.weight_hh, m.bias_ih, m.bias_hh
        sfx = f"_l{layer}"
        w_ih, w_hh = getattr(m, "weight_ih" + sfx), getattr(m, "weight_hh" + sfx)
        if not m.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(m, "bias_ih" + sfx), getattr(m, "bias_hh" + sfx)

    def _layers(self) -> list:
        return [self._weights(layer) for layer in range(self.num_layers)]

    def check_deterministic(self) -> None:
        """ValueError if the module's map is random: dropout > 0 between layers in training mode."""
        dropout = getattr(self.module, "dropout", 0.0)
        if self.num_layers > 1 and dropout and self.module.training:
            raise ValueError(f"{type(self.module).__name__} with num_layers={self.num_layers} has dropout={dropout} "
                             "> 0 in training mode, which makes its map random (dropout between layers): call "
                             "module.eval() to take the spectrum of the deterministic map, or set dropout=0")

    def step(self, h: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """One step of the module: h (1, B, S), x (1, B, I) -> (1, B, S).

        The module's own equations written out with its own weights, layer by layer (not its fused kernels: CUDA's
        fused LSTM/GRU cells have no forward-mode derivative, which the torch.func Jacobian-vector products need)."""
        self.check_deterministic()
        return stacked_step(self.kind, self._layers(), h[0], x[0]).unsqueeze(0)

    def analytic_step_tangent(self, h: torch.Tensor, x: torch.Tensor, Q: torch.Tensor):
        """The step and ``J Q`` from the layer-by-layer equations of ``floss_core.cells.stacked`` (any L), without
        the dense Jacobian: h (1, B, S), x (1, B, I), Q (1, B, S, K) -> (1, B, S), (1, B, S, K)."""
        self.check_deterministic()
        h_next, JQ = stacked_step_tangent(self.kind, self._layers(), h[0], x[0], Q[0])
        return h_next.unsqueeze(0), JQ.unsqueeze(0)

    @property
    def step_tangent(self):
        """``analytic_step_tangent``, the protocol's optional tangent step, for multi-layer modules only.

        A single-layer TorchCell has no ``step_tangent`` (``hasattr`` is False): its tangent vectors go through
        ``torch.func`` Jacobian-vector products of ``step``, as they always have."""
        if self.num_layers == 1:
            raise AttributeError("step_tangent")
        return self.analytic_step_tangent

    def flat_state(self, h0) -> torch.Tensor:
        """A start state in the module's own format, or flat, -> the joint state (1, B, S).

        Accepted: (h0, c0) for an LSTM, each (L, B, H) or unbatched (L, H) (for cells and L = 1 also (B, H) or
        (H,)); (L, B, H) or (L, H) for an RNN / GRU; flat (1, B, S), (B, S) or (S,) for any module. ValueError
        naming h0, the expected and the given shapes otherwise."""
        L, H, S = self.num_layers, self.hidden_size, self.state_size
        per_layer = "(B, H)" if self.is_cell else "(L, B, H) or (L, H)"
        if L == 1 and not self.is_cell:
            per_layer += " or (B, H)"
        flat = f"(1, B, S), (B, S) or (S,) with S = {S}"
        if isinstance(h0, (tuple, list)):
            if self.kind != "LSTM" or len(h0) != 2:
                raise ValueError(f"a tuple h0 = (h0, c0) is only for LSTMs (h0 of this {type(self.module).__name__} "
                                 f"is one tensor {per_layer} with L = {L}, H = {H}, or flat {flat}), got a "
                                 f"{type(h0).__name__} of length {len(h0)}")
            parts = [self._per_layer(t, f"h0[{j}]", per_layer) for j, t in enumerate(h0)]  # 2 x (L, B, H)
            if parts[0].shape != parts[1].shape:
                raise ValueError(f"h0 = (h0, c0) must have two tensors of the same shape, got "
                                 f"{tuple(h0[0].shape)} and {tuple(h0[1].shape)}")
            B = parts[0].shape[1]
            return torch.stack(parts, 1).permute(2, 0, 1, 3).reshape(1, B, S)  # (L, 2, B, H) -> (1, B, S)
        if not isinstance(h0, torch.Tensor):
            raise ValueError(f"h0 must be a torch.Tensor{' or a tuple (h0, c0)' if self.kind == 'LSTM' else ''}, "
                             f"got {type(h0).__name__}")
        if L > 1 and self.kind != "LSTM" and h0.dim() in (2, 3) and h0.shape[0] == L and h0.shape[-1] == H:
            hl = self._per_layer(h0, "h0", per_layer)  # (L, B, H)
            return hl.permute(1, 0, 2).reshape(1, hl.shape[1], S)
        state = h0
        while state.dim() < 3:
            state = state.unsqueeze(0)
        if state.dim() != 3 or state.shape[0] != 1 or state.shape[-1] != S:
            own = f"(h0, c0) each {per_layer}" if self.kind == "LSTM" else per_layer
            raise ValueError(f"h0 must be {own} with L = {L}, H = {H}, or flat {flat}; got shape "
                             f"{tuple(h0.shape)}")
        return state

    def _per_layer(self, t, name: str, per_layer: str) -> torch.Tensor:
        """One tensor of the module's own h0 format -> (L, B, H); ValueError naming ``name`` otherwise."""
        L, H = self.num_layers, self.hidden_size
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"{name} must be a torch.Tensor of shape {per_layer}, got {type(t).__name__}")
        if L == 1 and t.dim() in (1, 2) and t.shape[-1] == H:  # (H,) or (B, H): cells and single-layer modules
            return t.reshape(1, -1, H)
        if t.dim() == 2 and t.shape == (L, H):
            return t.unsqueeze(1)  # unbatched
        if t.dim() == 3 and t.shape[0] == L and t.shape[-1] == H:
            return t
        raise ValueError(f"{name} must have shape {per_layer} with L = {L}, H = {H}; got shape {tuple(t.shape)}")

    def module_state(self, h: torch.Tensor):
        """A joint state (1, B, S) or (B, S) -> the module's format: (h, c) for an LSTM, h otherwise, each (L, B, H)
        ((B, H) for cells), as the module's h_n / c_n."""
        L, H = self.num_layers, self.hidden_size
        flat = h.reshape(-1, self.state_size)  # (B, S)
        B, f = flat.shape[0], state_factor(self.kind)
        parts = flat.reshape(B, L, f, H).permute(2, 1, 0, 3)  # (f, L, B, H)
        if self.is_cell:
            parts = parts[:, 0]  # (f, B, H)
        return (parts[0], parts[1]) if self.kind == "LSTM" else parts[0]

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
        return f"kind={self.kind!r}, num_layers={self.num_layers}, state_size={self.state_size}"


def from_torch(module: nn.Module, n_out: int = 1, *, generator: torch.Generator | None = None):
    """A 1-network floss_core model with the recurrent weights of a torch module (copies, not shared).

    nn.LSTMCell / nn.LSTM -> ``floss_core.LSTM`` (b = b_ih + b_hh); nn.GRUCell / nn.GRU -> ``GRU`` (b = b_ih,
    b_h = b_hh); tanh nn.RNNCell / nn.RNN -> ``TanhRNN`` (W = weight_hh, U = weight_ih, b = b_ih + b_hh; the voltage
    form, see the module docstring). A relu RNN raises ValueError. The readout (n_out channels) is new, drawn from
    ``generator``; h0 is zero. Dtype and device follow the module's parameters.

    floss_core's LSTM, GRU and TanhRNN are single-layer ensembles: a module with ``num_layers > 1`` raises
    ValueError (its layers cannot be copied into one of them); use ``floss_core.adapters.spectrum`` /
    ``flossing_loss_of`` on the module itself instead.
    """
    cell = TorchCell(module)
    if cell.num_layers > 1:
        raise ValueError(f"from_torch cannot copy {type(module).__name__} with num_layers={cell.num_layers}: "
                         "floss_core's LSTM, GRU and TanhRNN are single-layer (num_layers must be 1). Take the "
                         "spectrum and flossing loss of the module itself with floss_core.adapters.spectrum / "
                         "flossing_loss_of (they run all its layers), and keep your own training loop")
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
