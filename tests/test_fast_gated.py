"""The fast engine for LSTM and GRU (floss_core cells and single-layer torch.nn modules in a TorchCell) against the
reference: exponents, gradients, both tangent maps, schedules, guards, sub-batches and the API around it."""
import copy
import functools
import math

import pytest
import torch
from helpers import F64, GATED_CELLS, gen

from floss_core import FlossConfig, floss, lyapunov_spectrum
from floss_core.cells import GRU, LSTM
from floss_core.cells.adapters import TorchCell
from floss_core.spectrum import api, supports_fast
from floss_core.spectrum import gated_cells

CASES = ("LSTM", "GRU", "nn.LSTM", "nn.GRU", "nn.LSTMCell", "nn.GRUCell")
cases = pytest.mark.parametrize("case", CASES)
reference = functools.partial(lyapunov_spectrum, method="reference", t_ons=1)


def build(case, *, H=5, I=2, E=2, gain=1.0, dtype=F64, seed=0, bias=True):
    """(model, the parameters its spectrum depends on): a floss_core ensemble of E networks, or a TorchCell around a
    torch.nn module (E = 1) whose weights are drawn from an explicit generator, weight_hh scaled by ``gain``."""
    g = gen(seed)
    if case in ("LSTM", "GRU"):
        m = dict(GATED_CELLS)[case](I, H, 1, E, g, dtype, gain=gain)
        return m, [getattr(m, n) for n in ("W", "U", "b", "b_h") if hasattr(m, n)]
    cls = getattr(torch.nn, case[3:])
    kw = {} if case.endswith("Cell") else dict(batch_first=case == "nn.LSTM")
    module = cls(I, H, bias=bias, **kw).to(dtype)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_((2 * torch.rand(p.shape, generator=g, dtype=dtype) - 1) / math.sqrt(H))
            if "weight_hh" in name:
                p.mul_(gain)
    return TorchCell(module), list(module.parameters())


def start(model, k, *, B=2, T=40, I=2, amp=1.0, seed=1):
    """Inputs (E, B, T, I) of amplitude ``amp``, a start state (E, B, S) and a basis (E, B, S, k)."""
    g = gen(seed)
    dtype = next(model.parameters()).dtype
    E, S = model.n_networks, model.state_size
    x = amp * torch.randn(E, B, T, I, generator=g, dtype=dtype)
    return x, torch.randn(E, B, S, generator=g, dtype=dtype), torch.randn(E, B, S, k, generator=g, dtype=dtype)


def spectrum_and_grads(model, params, x, k, h0, Q0, **kw):
    """Exponents (E, B, k) and the gradients of a loss that weighs every exponent differently, with respect to the
    parameters, the inputs and the start state (None where the spectrum does not depend on them)."""
    xr, hr = x.clone().requires_grad_(), h0.clone().requires_grad_()
    lam = lyapunov_spectrum(model, xr, k, h0=hr, Q0=Q0, reduce="none", **kw)
    c = torch.linspace(0.5, 1.5, lam.numel(), dtype=lam.dtype).view(lam.shape)
    grads = torch.autograd.grad((c * lam).sum() + lam.square().sum(), [*params, xr, hr], allow_unused=True)
    return lam.detach(), grads


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def assert_matches(got, want, lam_tol, grad_rtol):
    (lam, grads), (ref, ref_grads) = got, want
    assert (lam - ref).abs().max().item() <= lam_tol
    for a, b in zip(grads, ref_grads):
        assert (a is None) == (b is None)
        if b is not None:
            assert rel(a, b) <= grad_rtol, rel(a, b)


# -- which cells take the engine ----------------------------------------------------------------------------------

class ScaledGRU(GRU):
    def step(self, h, x):
        return 0.5 * super().step(h, x)


class OwnTangentLSTM(LSTM):
    def step_tangent(self, h, x, Q):
        return super().step_tangent(h, x, Q)


def test_gated_cells_and_single_layer_torch_modules_take_the_fast_engine_and_others_do_not():
    for case in CASES:
        assert supports_fast(build(case)[0]), case
    assert not supports_fast(ScaledGRU(1, 3, 1)) and not supports_fast(OwnTangentLSTM(1, 3, 1))
    assert not supports_fast(TorchCell(torch.nn.RNN(1, 3)))  # the tanh RNN module: the reference
    assert not supports_fast(TorchCell(torch.nn.LSTM(1, 3, num_layers=2)))  # stacked: the reference


@cases
def test_lyapunov_spectrum_runs_the_fast_engine_by_default(case, monkeypatch):
    model, _ = build(case)
    x, h0, Q0 = start(model, 3, T=20)

    def no_reference(*a, **k):
        raise AssertionError("the reference engine ran")

    monkeypatch.setattr(api, "reference_spectrum", no_reference)
    info = {}
    lam = lyapunov_spectrum(model, x, 3, h0=h0, Q0=Q0, info=info)
    assert lam.shape == (model.n_networks, 3) and torch.isfinite(lam).all() and info["n_qr"] >= 2


# -- equality with the reference (float64) ------------------------------------------------------------------------

@cases
@pytest.mark.parametrize("gain", [0.5, 1.5, 3.0])
def test_exponents_and_gradients_equal_the_reference_with_a_qr_every_step(case, gain):
    model, params = build(case, gain=gain)
    for k in (1, 3, model.state_size):
        x, h0, Q0 = start(model, k)
        want = spectrum_and_grads(model, params, x, k, h0, Q0, method="reference", t_ons=1)
        got = spectrum_and_grads(model, params, x, k, h0, Q0, t_ons=1)
        assert_matches(got, want, 1e-10, 1e-7)


@cases
def test_strongly_driven_networks_equal_the_reference(case):
    model, params = build(case, gain=2.0, seed=3)
    x, h0, Q0 = start(model, 4, amp=4.0, seed=4)
    want = spectrum_and_grads(model, params, x, 4, h0, Q0, method="reference", t_ons=1)
    assert_matches(spectrum_and_grads(model, params, x, 4, h0, Q0, t_ons=1), want, 1e-10, 1e-7)


@cases
@pytest.mark.parametrize("t_ons", [5, "auto"])
def test_windows_without_qr_give_the_t_ons_1_reference_up_to_their_roundoff(case, t_ons):
    model, params = build(case, gain=1.5, seed=5)
    x, h0, Q0 = start(model, 4, T=60, seed=6)
    want = spectrum_and_grads(model, params, x, 4, h0, Q0, method="reference", t_ons=1)
    info = {}
    got = spectrum_and_grads(model, params, x, 4, h0, Q0, t_ons=t_ons, info=info)
    assert info["n_qr"] < 60  # windows of several steps were taken
    assert_matches(got, want, 1e-9, 1e-6)


@pytest.mark.parametrize("case", ["LSTM", "nn.LSTM", "nn.GRU"])
def test_at_k_equal_s_what_is_left_is_the_cholesky_qrs_tolerance(case):
    """At k = S with strong input the accepted Cholesky factors' orthogonality error (default tol 1e-7, measured
    here up to ~4e-10 in the exponents) is what separates the engines; with a tight tolerance they agree to
    roundoff, so the Jacobians and the backward are exact."""
    model, params = build(case, gain=0.5, seed=33)
    k = model.state_size
    x, h0, Q0 = start(model, k, T=60, amp=4.0, seed=34)
    want = spectrum_and_grads(model, params, x, k, h0, Q0, method="reference", t_ons=1)
    assert_matches(spectrum_and_grads(model, params, x, k, h0, Q0, t_ons=1), want, 1e-9, 1e-6)
    assert_matches(spectrum_and_grads(model, params, x, k, h0, Q0, t_ons=1, tol=1e-12), want, 1e-11, 1e-9)


@pytest.mark.parametrize("case", ["LSTM", "GRU"])
@pytest.mark.parametrize("mode", ["dense", "factored"])
def test_both_tangent_maps_equal_the_reference_for_every_k(case, mode, monkeypatch):
    """The Jacobians stored whole ("dense") or as scalings of W Q ("factored"), whichever k: same numbers."""
    for cls in (gated_cells.LSTMKernel, gated_cells.GRUKernel):
        monkeypatch.setattr(cls, "dense_min_k", 1 if mode == "dense" else 10 ** 6)
    model, params = build(case, H=3, gain=2.0, seed=7)
    for k in range(1, model.state_size + 1):
        x, h0, Q0 = start(model, k, T=30, seed=k)
        want = spectrum_and_grads(model, params, x, k, h0, Q0, method="reference", t_ons=1)
        assert_matches(spectrum_and_grads(model, params, x, k, h0, Q0, t_ons=1), want, 1e-10, 1e-7)


@cases
def test_detached_gradient_equals_the_reference_detached_gradient(case):
    """gradient="detached": no gradient through the state trajectory (none for h0), but the Jacobians' coefficients
    still depend on the parameters and the inputs through the gates, as in the reference."""
    model, params = build(case, gain=1.5, seed=8)
    x, h0, Q0 = start(model, 3, seed=9)
    want = spectrum_and_grads(model, params, x, 3, h0, Q0, method="reference", t_ons=1, gradient="detached")
    got = spectrum_and_grads(model, params, x, 3, h0, Q0, t_ons=1, gradient="detached")
    assert got[1][-1] is None and got[1][-2] is not None  # h0 none, inputs some
    assert_matches(got, want, 1e-10, 1e-7)


@pytest.mark.parametrize("case, H, gain", [("LSTM", 8, 10.0), ("GRU", 8, 10.0), ("nn.LSTM", 8, 20.0),
                                           ("nn.GRUCell", 16, 10.0)])
def test_a_long_chaotic_trajectory_has_the_references_exponents(case, H, gain):
    """T = 300 at a large gain: the state trajectory is the reference's bit for bit, so even chaotic exponents agree
    (a trajectory off by roundoff would move them by ~1e-2)."""
    model, params = build(case, H=H, gain=gain, seed=10)
    x, h0, Q0 = start(model, 4, B=1, T=300, seed=11)
    with torch.no_grad():
        ref = reference(model, x, 4, h0=h0, Q0=Q0, reduce="none")
        lam = lyapunov_spectrum(model, x, 4, h0=h0, Q0=Q0, reduce="none", t_ons=1)
    assert ref[..., 0].max() > 0.05  # chaotic
    torch.testing.assert_close(lam, ref, atol=1e-10, rtol=0)


def test_the_start_basis_gets_the_references_gradient():
    model, params = build("LSTM", gain=1.5, seed=12)
    x, h0, Q0 = start(model, 3, seed=13)
    grads = []
    for method in ("reference", "fast"):
        Qr = Q0.clone().requires_grad_()
        lam = lyapunov_spectrum(model, x, 3, h0=h0, Q0=Qr, t_ons=1, method=method)
        grads.append(torch.autograd.grad(lam.square().sum(), Qr)[0])
    assert rel(grads[1], grads[0]) < 1e-7


# -- torch.nn modules ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["nn.LSTM", "nn.GRU", "nn.LSTMCell", "nn.GRUCell"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradients_reach_the_modules_own_parameters(case, bias):
    model, params = build(case, bias=bias, seed=14)
    assert len(params) == (4 if bias else 2)
    x, h0, Q0 = start(model, 3, seed=15)
    lam = lyapunov_spectrum(model, x, 3, h0=h0, Q0=Q0)
    lam.square().sum().backward()
    for p in params:
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    ref = spectrum_and_grads(model, params, x, 3, h0, Q0, method="reference", t_ons=1)
    assert_matches(spectrum_and_grads(model, params, x, 3, h0, Q0, t_ons=1), ref, 1e-10, 1e-7)


# -- float32 --------------------------------------------------------------------------------------------------------

@cases
def test_float32_is_close_to_float64(case):
    model64, params64 = build(case, gain=1.0, seed=16)
    model32 = copy.deepcopy(model64).float()
    params32 = [p for p in model32.parameters()]
    params32 = params32 if case.startswith("nn.") else [getattr(model32, n) for n in ("W", "U", "b", "b_h")
                                                        if hasattr(model32, n)]
    x, h0, Q0 = start(model64, 4, seed=17)
    exact = spectrum_and_grads(model64, params64, x, 4, h0, Q0, method="reference", t_ons=1)
    lam, grads = spectrum_and_grads(model32, params32, x.float(), 4, h0.float(), Q0.float())
    assert lam.dtype == torch.float32
    assert (lam.double() - exact[0]).abs().max() < 1e-4
    for a, b in zip(grads, exact[1]):
        assert rel(a.double(), b) < 1e-3


# -- sub-batches, workers, repeated calls ------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["LSTM", "GRU"])
def test_sub_batches_and_worker_threads_give_the_same_numbers(case):
    model, params = build(case, E=4, gain=1.5, seed=18)
    x, h0, Q0 = start(model, 3, seed=19)
    one = spectrum_and_grads(model, params, x, 3, h0, Q0, t_ons=1, group=4, workers=1)
    two = spectrum_and_grads(model, params, x, 3, h0, Q0, t_ons=1, group=2, workers=2)
    two_again = spectrum_and_grads(model, params, x, 3, h0, Q0, t_ons=1, group=2, workers=1)
    assert torch.equal(two[0], two_again[0]) and all(torch.equal(a, b) for a, b in zip(two[1], two_again[1]))
    assert_matches(two, one, 1e-13, 1e-10)


def test_an_ensemble_equals_its_networks_one_at_a_time():
    model, params = build("GRU", E=3, gain=2.0, seed=20)
    x, h0, Q0 = start(model, 3, seed=21)
    with torch.no_grad():
        together = lyapunov_spectrum(model, x, 3, h0=h0, Q0=Q0, t_ons=1, reduce="none")
        for e in range(3):
            single = GRU(2, 5, 1, dtype=F64)
            for name, p in single.named_parameters():
                p.copy_(getattr(model, name)[e:e + 1])
            alone = lyapunov_spectrum(single, x[e:e + 1], 3, h0=h0[e:e + 1], Q0=Q0[e:e + 1], t_ons=1, reduce="none")
            torch.testing.assert_close(alone, together[e:e + 1], atol=1e-12, rtol=0)


def test_repeated_calls_reuse_buffers_and_repeat_the_numbers():
    model, params = build("LSTM", gain=1.5, seed=22)
    x, h0, Q0 = start(model, 4, seed=23)
    first = spectrum_and_grads(model, params, x, 4, h0, Q0)
    second = spectrum_and_grads(model, params, x, 4, h0, Q0)
    assert torch.equal(first[0], second[0]) and all(torch.equal(a, b) for a, b in zip(first[1], second[1]))


@pytest.mark.parametrize("t_ons, n_qr", [(1, 40), (5, 8)])
def test_info_counts_the_qrs_of_an_integer_schedule(t_ons, n_qr):
    model, _ = build("GRU", gain=1.0, seed=24)
    x, h0, Q0 = start(model, 3, seed=25)
    info = {}
    with torch.no_grad():
        lyapunov_spectrum(model, x, 3, h0=h0, Q0=Q0, t_ons=t_ons, n_transient=10, info=info)
    assert info["n_qr"] == n_qr  # every t_ons steps; the transient's end (step 9) and the last step are among them


# -- the gates' vector-Jacobian products ------------------------------------------------------------------------------

@pytest.mark.parametrize("kernel_cls", [gated_cells.LSTMKernel, gated_cells.GRUKernel])
def test_coefficient_and_state_adjoints_equal_autograd(kernel_cls):
    """coef_partials + chain and state_partials + chain are the vector-Jacobian products of the coefficients and of
    the new state with respect to the pre-activations (and the entering state)."""
    g = gen(26)
    T, E, B, H = 3, 2, 2, 4
    S, G = kernel_cls.state_factor * H, kernel_cls.n_gates
    pre = [torch.randn(T, E, B, G * H, generator=g, dtype=F64, requires_grad=True)
           for _ in range(2 if kernel_cls is gated_cells.GRUKernel else 1)]
    S_prev = torch.randn(T, E, B, S, generator=g, dtype=F64, requires_grad=True)
    gates = kernel_cls.gates(pre, S_prev)
    coefs = kernel_cls.coefs(gates)
    if kernel_cls is gated_cells.GRUKernel:
        new_state = gates[2] + gates[1] * (S_prev - gates[2])  # n + z (h - n)
    else:
        i, f, gg, o, c, _ = gates
        c_new = f * c + i * gg
        new_state = torch.cat([o * torch.tanh(c_new), c_new], -1)
    coef_bar = [torch.randn(c.shape, generator=g, dtype=F64) for c in coefs]
    s_bar = torch.randn(new_state.shape, generator=g, dtype=F64)
    want = torch.autograd.grad(coefs, [*pre, S_prev], coef_bar, retain_graph=True)
    want_s = torch.autograd.grad(new_state, pre, s_bar)
    with torch.no_grad():
        gates = kernel_cls.gates(pre, S_prev)
        partials, direct = kernel_cls.coef_partials(gates, coef_bar)
        pre_bar, chained = kernel_cls.chain(gates, partials)
        state_direct = direct if chained is None else direct + chained
        pre_bar_s, _ = kernel_cls.chain(gates, kernel_cls.state_partials(gates, s_bar))
    for a, b in zip([*pre_bar, state_direct], want[:-1] + (want[-1],)):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-12)
    for a, b in zip(pre_bar_s, want_s):
        torch.testing.assert_close(a, b, atol=1e-13, rtol=1e-12)


# -- bad input, non-finite networks -------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(k=0), "k must"), (dict(k=11), "k must"), (dict(t_ons=0), "t_ons"), (dict(gradient="some"), "gradient must"),
    (dict(reduce="sum"), "reduce must"), (dict(n_transient=20), "longer than the transient"),
    (dict(workers=0), "workers must"), (dict(group=0), "group must"), (dict(h0=torch.zeros(2, 1, 9)), "h0 must"),
])
def test_bad_arguments_raise_the_same_errors_as_for_the_reference(kwargs, match):
    model, _ = build("LSTM")
    kw = dict(k=2, n_steps=20) | kwargs
    for method in ("fast", "reference"):
        with pytest.raises(ValueError, match=match):
            lyapunov_spectrum(model, None, method=method, **kw)


@pytest.mark.parametrize("case", ["LSTM", "GRU"])
def test_a_network_with_non_finite_parameters_is_reported_and_spares_the_others(case):
    model, _ = build(case, E=3, seed=27)
    x, h0, Q0 = start(model, 2, T=20, seed=28)
    with torch.no_grad():
        model.b[2, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        lyapunov_spectrum(model, x, 2, h0=h0, Q0=Q0)
    lam = lyapunov_spectrum(model, x, 2, h0=h0, Q0=Q0, check=False, t_ons=1, reduce="none")
    assert torch.isfinite(lam[:2]).all() and not torch.isfinite(lam[2]).all()
    with torch.no_grad():
        ref = reference(model, x, 2, h0=h0, Q0=Q0, check=False, reduce="none")
    torch.testing.assert_close(lam[:2], ref[:2], atol=1e-12, rtol=0)


@pytest.mark.parametrize("case", ["LSTM", "GRU"])
def test_a_state_that_stops_being_finite_is_reported_with_its_step(case):
    """Finite but huge input weights of opposite signs make one network's pre-activation inf - inf at step 7."""
    model, _ = build(case, E=2, seed=29)
    x, h0, Q0 = start(model, 2, T=20, seed=30)
    x[1] = 0
    x[1, 0, 7] = 10.0
    with torch.no_grad():
        model.U[1, :, 0], model.U[1, :, 1] = 1e308, -1e308
    for method in ("fast", "reference"):
        with pytest.raises(ValueError, match=r"step 7 in network\(s\) \[1\]"):
            lyapunov_spectrum(model, x, 2, h0=h0, Q0=Q0, method=method)


# -- flossing ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["LSTM", "GRU"])
def test_flossing_a_gated_net_with_the_fast_engine_follows_the_reference(case):
    runs = {}
    for method in ("fast", "reference"):
        model, _ = build(case, H=6, E=2, gain=1.5, seed=31)
        result = floss(model, 3, config=FlossConfig(k=4, seq_len=30, n_transient=5, method=method),
                       generator=gen(32))
        runs[method] = result.exponents, model.W.detach().clone()
    torch.testing.assert_close(runs["fast"][0], runs["reference"][0], atol=1e-10, rtol=0)
    torch.testing.assert_close(runs["fast"][1], runs["reference"][1], atol=1e-12, rtol=0)
