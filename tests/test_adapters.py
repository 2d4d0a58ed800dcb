"""Spectra and flossing losses of unmodified torch.nn recurrent modules, checked against the floss_core models with
the same weights, against each other, against torch.func and finite differences; gradients reach the module."""
import pytest
import torch
from helpers import F64, gen
from torch import nn

from floss_core import TanhRNN, TaskConfig, lyapunov_spectrum, train
from floss_core.adapters import TorchCell, flossing_loss_of, from_torch, spectrum
from floss_core.cells import GRU, LSTM


def _torch_module(cls, *args, seed=0, **kw):
    torch.manual_seed(seed)  # nn modules draw their init from the global generator
    return cls(*args, **kw).double()


@pytest.mark.parametrize("cell_cls, floss_cls", [(nn.LSTMCell, LSTM), (nn.GRUCell, GRU)])
def test_cell_spectrum_equals_floss_core_model_with_the_same_weights(cell_cls, floss_cls):
    I, H, B, T, k = 2, 5, 3, 80, 4
    cell = _torch_module(cell_cls, I, H)
    m = floss_cls(I, H, 1, dtype=F64)
    with torch.no_grad():  # the documented mapping, written out here independently of from_torch
        m.W.copy_(cell.weight_hh[None])
        m.U.copy_(cell.weight_ih[None])
        if floss_cls is LSTM:
            m.b.copy_((cell.bias_ih + cell.bias_hh)[None])
        else:
            m.b.copy_(cell.bias_ih[None])
            m.b_h.copy_(cell.bias_hh[None])
    S = m.state_size
    x = torch.randn(B, T, I, generator=gen(1), dtype=F64)
    h0 = torch.randn(B, S, generator=gen(2), dtype=F64)
    Q0 = torch.randn(B, S, k, generator=gen(3), dtype=F64)
    a = spectrum(cell, x, k, h0=h0, Q0=Q0)
    b = lyapunov_spectrum(m, x, k, h0=h0[None], Q0=Q0[None])[0]
    assert a.shape == (k,)
    # the module's step (F.linear on its own weights) and the ensemble's (baddbmm) round differently: the same
    # exponents to roundoff accumulated over T steps (measured up to 4e-12), not the same bits
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    # from_torch builds the same model
    built = from_torch(cell)
    assert isinstance(built, floss_cls) and built.n_networks == 1
    for name in ("W", "U", "b"):
        torch.testing.assert_close(getattr(built, name), getattr(m, name), atol=1e-15, rtol=0)
    assert from_torch(cell).state_size == S  # one from_torch (the classmethods are gone)


@pytest.mark.parametrize("layer_cls, cell_cls", [(nn.LSTM, nn.LSTMCell), (nn.GRU, nn.GRUCell), (nn.RNN, nn.RNNCell)])
@pytest.mark.parametrize("batch_first", [True, False])
def test_rnn_layer_equals_its_cell_with_the_same_weights(layer_cls, cell_cls, batch_first):
    I, H, B, T, k = 2, 4, 2, 60, 3
    layer = _torch_module(layer_cls, I, H, batch_first=batch_first)
    cell = _torch_module(cell_cls, I, H)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(layer, name + "_l0"))
    S = TorchCell(cell).state_size
    x = torch.randn(B, T, I, generator=gen(4), dtype=F64)  # batch first
    h0 = 0.5 * torch.randn(B, S, generator=gen(5), dtype=F64)
    Q0 = torch.randn(B, S, k, generator=gen(6), dtype=F64)
    a = spectrum(cell, x, k, h0=h0, Q0=Q0)
    b = spectrum(layer, x if batch_first else x.transpose(0, 1), k, h0=h0, Q0=Q0)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    # the layer's trajectory is the one the module itself computes
    hx = (h0[None, :, :H].contiguous(), h0[None, :, H:].contiguous()) if layer_cls is nn.LSTM else h0[None]
    out, _ = layer(x if batch_first else x.transpose(0, 1), hx)
    out = out if batch_first else out.transpose(0, 1)  # (B, T, H)
    wrapped, h, states = TorchCell(layer), h0[None], []
    for t in range(T):
        h = wrapped.step(h, x[None, :, t])
        states.append(h[0, :, :H])
    torch.testing.assert_close(torch.stack(states, 1), out, atol=1e-12, rtol=0)


@pytest.mark.parametrize("module", [
    lambda: _torch_module(nn.RNNCell, 2, 4), lambda: _torch_module(nn.RNNCell, 2, 4, nonlinearity="relu"),
    lambda: _torch_module(nn.LSTMCell, 2, 4), lambda: _torch_module(nn.GRUCell, 2, 4),
    lambda: _torch_module(nn.LSTM, 2, 4, batch_first=True), lambda: _torch_module(nn.GRU, 2, 4, bias=False),
], ids=["RNNCell", "RNNCell-relu", "LSTMCell", "GRUCell", "LSTM", "GRU-nobias"])
def test_jvp_tangent_path_equals_jacrev_of_the_module_step(module):
    from floss_core.spectrum import jvp_tangent_step
    cell = TorchCell(module())
    assert not hasattr(cell, "step_tangent")  # the torch.func jvp path is used
    S, B = cell.state_size, 3
    h = torch.randn(1, B, S, generator=gen(7), dtype=F64)
    x = torch.randn(1, B, 2, generator=gen(8), dtype=F64)
    Q = torch.randn(1, B, S, 4, generator=gen(9), dtype=F64)
    _, JQ = jvp_tangent_step(cell, h, x, Q)
    for b in range(B):
        J = torch.func.jacrev(lambda hh: cell.step(hh[None, None], x[:, b:b + 1])[0, 0])(h[0, b])  # (S, S)
        torch.testing.assert_close(JQ[0, b], J @ Q[0, b], atol=1e-13, rtol=0)


class _SpectrumOf(nn.Module):
    """So that torch.func.functional_call can swap the torch module's own parameters for gradcheck."""

    def __init__(self, module, k):
        super().__init__()
        self.module, self.k = module, k

    def forward(self, x, h0, Q0):
        return spectrum(self.module, x, self.k, h0=h0, Q0=Q0, n_transient=5)


@pytest.mark.parametrize("module", [
    lambda: _torch_module(nn.LSTMCell, 1, 2), lambda: _torch_module(nn.GRU, 1, 2, batch_first=True),
    lambda: _torch_module(nn.RNNCell, 1, 3),
], ids=["LSTMCell", "GRU", "RNNCell"])
def test_spectrum_gradient_reaches_module_parameters_and_matches_finite_differences(module):
    mod = module()
    cell = TorchCell(mod)
    S, k = cell.state_size, 2
    x = torch.randn(2, 15, 1, generator=gen(10), dtype=F64)
    h0 = torch.randn(2, S, generator=gen(11), dtype=F64)
    Q0 = torch.randn(2, S, k, generator=gen(12), dtype=F64)
    lam = spectrum(mod, x, k, h0=h0, Q0=Q0, n_transient=5)
    grads = torch.autograd.grad(lam.sum(), list(mod.parameters()))
    assert all(g.abs().sum() > 0 for g in grads)  # every weight and bias of the module gets a gradient
    wrapped = _SpectrumOf(mod, k)
    names = [n for n, _ in mod.named_parameters()]

    def spectrum_of(*params):
        return torch.func.functional_call(wrapped, {f"module.{n}": p for n, p in zip(names, params)}, (x, h0, Q0))

    params = tuple(p.detach().clone().requires_grad_() for p in mod.parameters())
    assert torch.autograd.gradcheck(spectrum_of, params, eps=1e-6, atol=1e-7)


def test_user_training_loop_with_flossing_loss():
    torch.manual_seed(0)
    lstm = nn.LSTM(1, 8, batch_first=True)
    head = nn.Linear(8, 1)
    opt = torch.optim.Adam([*lstm.parameters(), *head.parameters()], lr=0.03)
    x = torch.randn(4, 40, 1, generator=gen(13))  # (B, T, I), as the LSTM takes it
    y = torch.roll(x, 2, dims=1)  # recall the input 2 steps back
    first = None
    for _ in range(15):
        out, _ = lstm(x)
        task_loss = (head(out) - y).pow(2).mean()
        floss_loss = flossing_loss_of(lstm, x, k=2, generator=gen(14))
        first = floss_loss.item() if first is None else first
        opt.zero_grad()
        (task_loss + floss_loss).backward()
        opt.step()
    assert flossing_loss_of(lstm, x, k=2, generator=gen(14)).item() < 0.3 * first
    assert lstm.weight_hh_l0.grad is not None


def test_flossing_loss_of_is_the_mean_squared_distance_to_the_target():
    cell = _torch_module(nn.GRUCell, 1, 4)
    x = torch.randn(30, 1, generator=gen(15), dtype=F64)  # (T, I): one unbatched sequence
    lam = spectrum(cell, x, 2, generator=gen(16))
    loss = flossing_loss_of(cell, x, 2, target=-0.1, generator=gen(16))
    assert loss.dim() == 0
    torch.testing.assert_close(loss, (lam + 0.1).pow(2).mean())


def test_lstm_start_state_in_the_modules_own_format_equals_the_flat_one():
    cell = _torch_module(nn.LSTMCell, 1, 3)
    x = torch.randn(2, 20, 1, generator=gen(17), dtype=F64)
    h, c = torch.randn(2, 3, generator=gen(18), dtype=F64), torch.randn(2, 3, generator=gen(19), dtype=F64)
    a = spectrum(cell, x, 2, h0=(h, c), generator=gen(20))
    b = spectrum(cell, x, 2, h0=torch.cat([h, c], -1)[None], generator=gen(20))
    assert torch.equal(a, b)
    zero = spectrum(cell, None, 2, n_steps=20, batch=2, h0=(h, c), reduce="none", generator=gen(20))
    assert zero.shape == (2, 2)


def test_tanh_rnn_cell_and_its_voltage_form_twin_have_the_same_exponents():
    """nn.RNNCell (rate form) and the TanhRNN from from_torch (voltage form): same trajectory, with x = atanh(h),
    and exponents equal up to O(1/T) (the Jacobians differ only by one diagonal factor at either end)."""
    cell = _torch_module(nn.RNNCell, 2, 8)
    m = from_torch(cell)
    assert isinstance(m, TanhRNN)
    T = 1000  # 750 steps averaged: the end factors shift the exponents by ~1/750 at most here
    x = torch.randn(2, T, 2, generator=gen(21), dtype=F64)
    h0 = 0.8 * (2 * torch.rand(2, 8, generator=gen(22), dtype=F64) - 1)
    Q0 = torch.randn(2, 8, 3, generator=gen(23), dtype=F64)
    a = spectrum(cell, x, 3, h0=h0, Q0=Q0)
    b = lyapunov_spectrum(m, x, 3, h0=torch.atanh(h0)[None], Q0=Q0[None])[0]
    torch.testing.assert_close(a, b, atol=2e-3, rtol=0)
    with torch.no_grad():  # same inputs, no shift: tanh(voltage) is the rate state
        v = m.step(torch.atanh(h0)[None], x[None, :, 0])
        torch.testing.assert_close(torch.tanh(v[0]), cell(x[:, 0], h0), atol=1e-14, rtol=0)


# -- bad input -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("module, match", [
    (lambda: nn.LSTM(2, 4, num_layers=2, dropout=0.5), "dropout=0.5"),  # stacked: only a random map is refused
    (lambda: nn.GRU(2, 4, bidirectional=True), "bidirectional"),
    (lambda: nn.LSTM(2, 4, proj_size=2), "proj_size"),
    (lambda: nn.Linear(2, 4), "unsupported module"),
])
def test_unsupported_modules_raise(module, match):
    with pytest.raises(ValueError, match=match):
        spectrum(module(), torch.zeros(10, 2), 1)


def test_wrong_input_size_raises():
    with pytest.raises(ValueError, match="input_size=2"):
        spectrum(nn.GRUCell(2, 4), torch.zeros(3, 10, 3), 1)
    with pytest.raises(ValueError, match="shape"):
        spectrum(nn.GRUCell(2, 4), torch.zeros(1, 3, 10, 2), 1)


@pytest.mark.parametrize("k", [0, 9])
def test_k_outside_1_to_state_size_raises(k):
    with pytest.raises(ValueError, match="k must"):
        flossing_loss_of(nn.LSTMCell(1, 4), torch.zeros(10, 1), k)  # S = 8


def test_torch_cell_has_no_readout():
    cell = TorchCell(nn.GRUCell(1, 4))
    with pytest.raises(TypeError, match="no readout"):
        cell.readout(torch.zeros(1, 1, 4))
    with pytest.raises(TypeError, match="no readout"):
        cell.output_size
    with pytest.raises(TypeError, match="no readout"):
        train(cell, TaskConfig(name="copy", delay=2, seq_len=10, batch=2), progress=False)


def test_relu_rnn_has_no_floss_core_twin():
    with pytest.raises(ValueError, match="relu"):
        from_torch(nn.RNNCell(1, 4, nonlinearity="relu"))
