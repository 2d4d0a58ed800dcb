"""Stacked (num_layers > 1) torch.nn.RNN / LSTM / GRU in the adapters: the joint state's step against the module's own
forward, the layer-by-layer tangent step against torch.func, the spectrum against an independent dense-Jacobian QR
loop built on torch's own cells, the decoupled stack against its layers, gradients, start-state formats and the
refusals. Float64 throughout."""
import math

import pytest
import torch
from helpers import F64, gen
from torch import nn

from floss_core.adapters import TorchCell, flossing_loss_of, from_torch, spectrum
from floss_core.spectrum import jvp_tangent_step

KINDS = {"RNN": (nn.RNN, {}), "RNN-relu": (nn.RNN, {"nonlinearity": "relu"}), "LSTM": (nn.LSTM, {}),
         "GRU": (nn.GRU, {}), "GRU-nobias": (nn.GRU, {"bias": False})}
CELL_OF = {nn.RNN: nn.RNNCell, nn.LSTM: nn.LSTMCell, nn.GRU: nn.GRUCell}


def _module(name, I, H, L, *, seed, gain=1.0, **kw):
    """A float64 module whose parameters are drawn from an explicit generator (U(-1/sqrt(H), 1/sqrt(H)) as torch's
    init; the recurrent weights times gain)."""
    cls, extra = KINDS[name]
    m = cls(I, H, num_layers=L, **extra, **kw).double()
    g, bound = gen(seed), 1 / math.sqrt(H)
    with torch.no_grad():
        for pname, p in m.named_parameters():
            p.copy_((2 * torch.rand(p.shape, generator=g, dtype=F64) - 1) * bound * (gain if "hh" in pname else 1))
    return m


def _torch_cells(m):
    """One torch.nn.*Cell per layer sharing the module's parameters: torch's own cell equations, layer by layer."""
    cells = []
    for l in range(m.num_layers):
        kw = {"nonlinearity": m.nonlinearity} if isinstance(m, nn.RNN) else {}
        cell = CELL_OF[type(m)](m.input_size if l == 0 else m.hidden_size, m.hidden_size, bias=m.bias, **kw)
        for name in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if m.bias else ()):
            setattr(cell, name, getattr(m, f"{name}_l{l}"))
        cells.append(cell)
    return cells


def _joint_step(cells, lstm: bool, s, x):
    """The stack's step as a plain function of the flat joint state: s (S,), x (I,) -> (S,); layout [h_1, c_1, ...]
    (LSTM) or [h_1, ...], each layer reading the previous layer's new h."""
    H = cells[0].hidden_size
    w = 2 * H if lstm else H
    out, inp = [], x
    for l, cell in enumerate(cells):
        part = s[l * w:(l + 1) * w]
        if lstm:
            h, c = cell(inp, (part[:H], part[H:]))
            out += [h, c]
        else:
            h = cell(inp, part)
            out.append(h)
        inp = h
    return torch.cat(out)


def _dense_qr_spectrum(m, x, h0, Q0, n_transient):
    """Independent reference: the dense step Jacobian (torch.func.jacrev of ``_joint_step``) at every step, one
    torch.linalg.qr per step, log|diag R| averaged after the transient, then over trajectories.
    x (B, T, I), h0 (B, S), Q0 (B, S, k) -> (k,)."""
    cells, lstm = _torch_cells(m), isinstance(m, nn.LSTM)
    B, T, _ = x.shape
    lams = []
    for b in range(B):
        s, (Q, _) = h0[b], torch.linalg.qr(Q0[b])
        acc = torch.zeros(Q.shape[1], dtype=F64)
        for t in range(T):
            J = torch.func.jacrev(lambda v: _joint_step(cells, lstm, v, x[b, t]))(s)  # (S, S)
            s = _joint_step(cells, lstm, s, x[b, t])
            Q, R = torch.linalg.qr(J @ Q)
            if t >= n_transient:
                acc = acc + torch.diagonal(R).abs().log()
        lams.append(acc / (T - n_transient))
    return torch.stack(lams).mean(0)


def _flat(hn, L):
    """The module's (L, B, H) state (or (h, c) of those) in the documented flat layout (B, S), written out layer by
    layer: [h_1, c_1, h_2, c_2, ...] or [h_1, h_2, ...]."""
    if isinstance(hn, tuple):
        return torch.cat([torch.cat([hn[0][l], hn[1][l]], -1) for l in range(L)], -1)
    return torch.cat([hn[l] for l in range(L)], -1)


def _start(m, B, seed, scale=0.5):
    """A start in the module's own format and, independently, the documented flat layout: (hx, flat (B, S))."""
    L, H, g = m.num_layers, m.hidden_size, gen(seed)
    if isinstance(m, nn.LSTM):
        hx = tuple(scale * torch.randn(L, B, H, generator=g, dtype=F64) for _ in range(2))
    else:
        hx = scale * torch.randn(L, B, H, generator=g, dtype=F64)
    return hx, _flat(hx, L)


def _seq(x, batch_first):
    """x (B, T, I) in the module's layout."""
    return x if batch_first else x.transpose(0, 1)


# -- the map ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", ["RNN", "RNN-relu", "LSTM", "GRU", "GRU-nobias"])
def test_joint_step_reproduces_the_modules_own_forward_and_final_state(name, L, batch_first):
    I, H, B, T = 3, 4, 2, 25
    m = _module(name, I, H, L, seed=1, batch_first=batch_first)
    cell = TorchCell(m)
    x = torch.randn(B, T, I, generator=gen(2), dtype=F64)
    hx, flat = _start(m, B, seed=3)
    out, hn = m(_seq(x, batch_first), hx)
    out = _seq(out, batch_first)  # (B, T, H): the last layer's h at every step
    s, w = cell.flat_state(hx), cell.state_size // L
    torch.testing.assert_close(s[0], flat, atol=0, rtol=0)
    for t in range(T):
        s = cell.step(s, x[None, :, t])
        torch.testing.assert_close(s[0, :, (L - 1) * w:(L - 1) * w + H], out[:, t], atol=1e-13, rtol=0)
    torch.testing.assert_close(s[0], _flat(hn, L), atol=1e-13, rtol=0)
    back = cell.module_state(s)
    for a, b in zip(back if isinstance(hn, tuple) else (back,), hn if isinstance(hn, tuple) else (hn,)):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=0)


@pytest.mark.parametrize("L", [1, 2, 3])
@pytest.mark.parametrize("name", list(KINDS))
def test_layer_by_layer_tangent_step_equals_torch_func_jvp_and_its_parameter_gradients(name, L):
    I, H, B, K = 3, 4, 3, 5
    m = _module(name, I, H, L, seed=4, gain=2.0)
    cell = TorchCell(m)
    assert cell.num_layers == L and hasattr(cell, "step_tangent") == (L > 1)  # single layers keep the jvp path
    S = cell.state_size
    h = torch.randn(1, B, S, generator=gen(5), dtype=F64)
    x = torch.randn(1, B, I, generator=gen(6), dtype=F64)
    Q = torch.randn(1, B, S, K, generator=gen(7), dtype=F64)
    probe = torch.randn(1, B, S, K, generator=gen(8), dtype=F64)
    h_a, JQ_a = cell.analytic_step_tangent(h, x, Q)
    h_j, JQ_j = jvp_tangent_step(cell, h, x, Q)
    torch.testing.assert_close(h_a, h_j, atol=1e-15, rtol=0)
    torch.testing.assert_close(JQ_a, JQ_j, atol=1e-14, rtol=0)
    assert JQ_a.abs().max() > 0.1
    params = list(m.parameters())
    g_a = torch.autograd.grad((JQ_a * probe).sum() + h_a.sum(), params)
    g_j = torch.autograd.grad((JQ_j * probe).sum() + h_j.sum(), params)
    for a, b in zip(g_a, g_j):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=0)
    if L > 1:
        _, JQ_s = cell.step_tangent(h, x, Q)
        assert torch.equal(JQ_s, JQ_a)


# -- spectra ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("L", [2, 3])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_stacked_spectrum_equals_dense_jacobian_qr_reference(name, L, batch_first):
    I, H, B, T, n_tr = 2, 3, 2, 40, 10
    m = _module(name, I, H, L, seed=10 + L, gain=2.0, batch_first=batch_first)
    S = TorchCell(m).state_size
    k = S - 1
    x = torch.randn(B, T, I, generator=gen(11), dtype=F64)
    _, flat = _start(m, B, seed=12)
    Q0 = torch.randn(B, S, k, generator=gen(13), dtype=F64)
    lam = spectrum(m, _seq(x, batch_first), k, h0=flat, Q0=Q0, n_transient=n_tr)
    ref = _dense_qr_spectrum(m, x, flat, Q0, n_tr)
    assert lam.shape == (k,)
    torch.testing.assert_close(lam, ref, atol=1e-9, rtol=0)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_zero_inter_layer_weights_give_the_union_of_the_layers_spectra(name):
    """weight_ih_l1.. = 0 makes the step Jacobian block diagonal, so the stack's full spectrum (k = S) is the union of
    the spectra of its layers, each a single-layer module driven by the layer below's outputs as in the stack.

    With a block-diagonal start basis (layer l's basis in layer l's rows and columns) every QR stays block diagonal
    and the union is exact at any T: the stack's exponents are the layers' ones, in block order. With a random basis
    the columns sort themselves by exponent only as T grows (slowly where exponents nearly coincide, as the LSTM's
    and GRU's here do), but their sum, the mean log|det J_t|, is the union's sum at any T. Both sides run on the
    reference engine (a QR every step), so that they differ by roundoff only."""
    I, H, L, B, T, n_tr = 2, 3, 3, 2, 60, 10
    m = _module(name, I, H, L, seed=20, gain=1.5, batch_first=True)
    with torch.no_grad():
        for l in range(1, L):
            getattr(m, f"weight_ih_l{l}").zero_()
    cell = TorchCell(m)
    S, w = cell.state_size, cell.state_size // L
    x = torch.randn(B, T, I, generator=gen(21), dtype=F64)
    _, flat = _start(m, B, seed=22)
    bases = [torch.randn(B, w, w, generator=gen(23 + l), dtype=F64) for l in range(L)]  # (B, w, w) per layer
    parts, inp = [], x
    for l in range(L):
        layer = _module(name, I if l == 0 else H, H, 1, seed=0, batch_first=True)
        with torch.no_grad():
            for pname, p in layer.named_parameters():
                p.copy_(getattr(m, pname.replace("_l0", f"_l{l}")))
        h_l = flat[:, l * w:(l + 1) * w]  # (B, w): this layer's part of the start
        parts.append(spectrum(layer, inp, w, h0=h_l, Q0=bases[l], n_transient=n_tr, method="reference"))
        start = (h_l[None, :, :H].contiguous(), h_l[None, :, H:].contiguous()) if name == "LSTM" else h_l[None]
        inp = layer(inp, start)[0].detach()  # (B, T, H): what the next layer reads
    union = torch.cat(parts)  # (S,), block order
    block_q0 = torch.stack([torch.block_diag(*(q[b] for q in bases)) for b in range(B)])  # (B, S, S)
    stack = spectrum(m, x, S, h0=flat, Q0=block_q0, n_transient=n_tr, method="reference")
    assert stack.shape == union.shape == (S,)
    torch.testing.assert_close(stack, union, atol=1e-12, rtol=0)
    torch.testing.assert_close(stack.sort().values, union.sort().values, atol=1e-12, rtol=0)
    assert (union[:w].sort().values - union[w:2 * w].sort().values).abs().max() > 1e-3  # distinct layers
    rand = spectrum(m, x, S, h0=flat, n_transient=n_tr, generator=gen(30))
    torch.testing.assert_close(rand.sum(), union.sum(), atol=1e-11, rtol=0)
    assert (rand - stack).abs().max() > 1e-6  # a different basis: only the sum is basis-free at finite T


@pytest.mark.parametrize("name, L", [("LSTM", 2), ("GRU", 3), ("RNN", 2)])
def test_flossing_loss_gradient_reaches_every_layer_and_equals_finite_differences(name, L):
    I, H, B, T, k = 2, 3, 2, 20, 3
    m = _module(name, I, H, L, seed=30, gain=1.5, batch_first=True)
    S = TorchCell(m).state_size
    x = torch.randn(B, T, I, generator=gen(31), dtype=F64)
    _, flat = _start(m, B, seed=32)
    Q0 = torch.randn(B, S, k, generator=gen(33), dtype=F64)

    def loss():
        return flossing_loss_of(m, x, k, h0=flat, Q0=Q0, n_transient=5, target=-0.2)

    named = dict(m.named_parameters())
    grads = dict(zip(named, torch.autograd.grad(loss(), list(named.values()))))
    for pname, g in grads.items():
        assert bool(torch.isfinite(g).all()) and g.abs().sum() > 0, pname
    assert {f"weight_hh_l{l}" for l in range(L)} <= set(grads) and {f"weight_ih_l{l}" for l in range(L)} <= set(grads)
    eps = 1e-6
    for pname in (f"weight_ih_l{L - 1}", "weight_hh_l0", f"bias_hh_l{L - 1}", f"weight_hh_l{L - 1}"):
        p = named[pname]
        for idx in ((0, 0), (p.shape[0] - 1, p.shape[-1] - 1)) if p.dim() == 2 else ((0,), (p.shape[0] - 1,)):
            with torch.no_grad():
                keep = p[idx].item()
                p[idx] = keep + eps
                up = loss().item()
                p[idx] = keep - eps
                down = loss().item()
                p[idx] = keep
            fd = (up - down) / (2 * eps)
            assert abs(fd - grads[pname][idx].item()) <= 1e-7 + 1e-6 * abs(fd), (pname, idx, fd)


@pytest.mark.parametrize("name", ["RNN", "LSTM", "GRU"])
def test_start_state_formats_give_the_same_spectrum(name):
    I, H, L, B, T, k = 2, 3, 2, 2, 30, 4
    m = _module(name, I, H, L, seed=40, batch_first=False)
    S = TorchCell(m).state_size
    x = torch.randn(T, B, I, generator=gen(41), dtype=F64)  # (T, B, I): batch_first=False
    hx, flat = _start(m, B, seed=42)
    Q0 = torch.randn(B, S, k, generator=gen(43), dtype=F64)
    ref = spectrum(m, x, k, h0=flat, Q0=Q0)
    assert torch.equal(spectrum(m, x, k, h0=hx, Q0=Q0), ref)  # the module's own (L, B, H) / (h0, c0)
    assert torch.equal(spectrum(m, x, k, h0=flat[None], Q0=Q0[None]), ref)  # (1, B, S), (1, B, S, k)
    # one unbatched sequence: the module's (L, H) against the flat (S,)
    one = tuple(t[:, 0] for t in hx) if isinstance(hx, tuple) else hx[:, 0]
    a = spectrum(m, x[:, 0], k, h0=one, Q0=Q0[:1])
    b = spectrum(m, x[:, 0], k, h0=flat[0], Q0=Q0[:1])
    assert torch.equal(a, b)
    assert not torch.equal(a, ref)


# -- refusals --------------------------------------------------------------------------------------------------------

def test_dropout_in_training_mode_raises_and_eval_mode_gives_the_deterministic_map():
    m = _module("LSTM", 2, 3, 2, seed=50, dropout=0.3)
    plain = _module("LSTM", 2, 3, 2, seed=50)  # same weights, no dropout
    x = torch.randn(2, 15, 2, generator=gen(51), dtype=F64)
    with pytest.raises(ValueError, match=r"dropout=0\.3 .*training mode.*module\.eval\(\).*dropout=0"):
        spectrum(m, x, 2, generator=gen(52))
    with pytest.raises(ValueError, match="dropout"):
        TorchCell(m).step(torch.zeros(1, 15, 12, dtype=F64), torch.zeros(1, 15, 2, dtype=F64))
    m.eval()
    assert torch.equal(spectrum(m, x, 2, generator=gen(52)), spectrum(plain, x, 2, generator=gen(52)))
    m.train()
    with pytest.raises(ValueError, match="dropout"):
        flossing_loss_of(m, x, 2, generator=gen(52))


@pytest.mark.parametrize("module, match", [
    (lambda: nn.GRU(2, 4, num_layers=2, bidirectional=True), "bidirectional"),
    (lambda: nn.LSTM(2, 4, num_layers=3, proj_size=2), "proj_size=2"),
])
def test_unsupported_stacked_modules_raise(module, match):
    with pytest.raises(ValueError, match=match):
        spectrum(module(), torch.zeros(10, 2), 1)


@pytest.mark.parametrize("name, h0, match", [
    ("GRU", torch.zeros(3, 2, 4), r"h0 must be \(L, B, H\) or \(L, H\) with L = 2, H = 4.*got shape \(3, 2, 4\)"),
    ("GRU", torch.zeros(2, 2, 5), r"h0 must .*S = 8.*got shape \(2, 2, 5\)"),
    ("GRU", (torch.zeros(2, 2, 4), torch.zeros(2, 2, 4)), r"tuple h0 = \(h0, c0\) is only for LSTMs"),
    ("LSTM", torch.zeros(2, 2, 4), r"h0 must be \(h0, c0\) each \(L, B, H\).*S = 16.*got shape \(2, 2, 4\)"),
    ("LSTM", (torch.zeros(2, 2, 4), torch.zeros(2, 3, 4)), r"same shape, got \(2, 2, 4\) and \(2, 3, 4\)"),
    ("LSTM", (torch.zeros(2, 4), torch.zeros(1, 2, 4)), r"h0\[1\] must have shape \(L, B, H\).*got shape \(1, 2, 4\)"),
    ("LSTM", (torch.zeros(2, 2, 4),), r"tuple h0 = \(h0, c0\) is only for LSTMs.*length 1"),
])
def test_wrong_start_state_shapes_raise_naming_h0_and_both_shapes(name, h0, match):
    m = _module(name, 2, 4, 2, seed=60)
    with pytest.raises(ValueError, match=match):
        spectrum(m, torch.zeros(10, 2, 2, dtype=F64), 1, h0=h0)


def test_from_torch_of_a_stacked_module_raises_and_says_what_to_use():
    with pytest.raises(ValueError, match=r"num_layers=2.*single-layer.*adapters\.spectrum / flossing_loss_of"):
        from_torch(nn.GRU(2, 4, num_layers=2))
    assert from_torch(nn.GRU(2, 4, num_layers=1)).hidden_size == 4  # a single layer still copies


@pytest.mark.parametrize("kind", ["LSTM", "RNN_TANH", "RNN_RELU"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bias", [True, False])
def test_the_step_with_torchs_cell_op_has_the_bits_of_the_layer_by_layer_step(kind, dtype, bias):
    """stacked_step runs the LSTM and the tanh / relu RNN with torch's own cell op; on the CPU it gives the bits of
    the written-out layer step that the tangent step uses (so the reference and the fast engine see one trajectory)."""
    from floss_core.cells.stacked import _layer, stacked_step
    g, (G, H, I, B, L) = gen(70), (4 if kind == "LSTM" else 1, 64, 3, 16, 2)
    width = (2 if kind == "LSTM" else 1) * H
    layers = [(torch.randn(G * H, I if l == 0 else H, generator=g, dtype=dtype) / 2,
               torch.randn(G * H, H, generator=g, dtype=dtype) / 8,
               torch.randn(G * H, generator=g, dtype=dtype) if bias else None,
               torch.randn(G * H, generator=g, dtype=dtype) if bias else None) for l in range(L)]
    h, x = torch.randn(B, L * width, generator=g, dtype=dtype), torch.randn(B, I, generator=g, dtype=dtype)
    inp, written = x, []
    for l, weights in enumerate(layers):
        s_new, inp, _ = _layer(kind, weights, inp, h[:, l * width:(l + 1) * width])
        written.append(s_new)
    assert torch.equal(stacked_step(kind, layers, h, x), torch.cat(written, dim=-1))
