"""Lyapunov spectra checked against exact results, invariants, finite differences and each other."""
import functools
import copy
import math

import numpy as np
import pytest
import torch

from floss_core import TanhRNN
from floss_core import lyapunov_spectrum as _lyapunov_spectrum
from floss_core.spectrum import jvp_tangent_step
from helpers import OnlyStep

# the reference engine: what these tests check (test_lyapunov) and compare the fast engine against (test_fast)
lyapunov_spectrum = functools.partial(_lyapunov_spectrum, method="reference")

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def stable_net(N=6, gain=0.5, E=1, seed=0, dtype=F64):
    """A network whose zero-input dynamics has the stable fixed point x = 0 (bias zero), where J = W."""
    m = TanhRNN(1, N, 1, gain=gain, n_networks=E, bias_max=0.0, generator=gen(seed), dtype=dtype)
    return m


def test_stable_fixed_point_gives_log_abs_eigenvalues():
    m = stable_net(N=6, gain=0.5, E=3)
    with torch.no_grad():
        lam = lyapunov_spectrum(m, None, 6, n_steps=6000, n_transient=1000, generator=gen(1))  # (E, 6)
    expected = torch.linalg.eigvals(m.W).abs().log().sort(dim=-1, descending=True).values  # (E, 6)
    torch.testing.assert_close(lam, expected, atol=1e-3, rtol=0)


def test_sum_of_all_exponents_equals_mean_log_abs_det_jacobian():
    N, T, n_tr = 7, 200, 50
    m = TanhRNN(2, N, 1, gain=2.0, n_networks=2, generator=gen(2), dtype=F64)
    x = torch.randn(2, 3, T, 2, generator=gen(3), dtype=F64)
    h0 = m.initial_state(3, gen(4))
    with torch.no_grad():
        lam = lyapunov_spectrum(m, x, N, h0=h0, n_transient=n_tr, generator=gen(5), reduce="none")  # (E, B, N)
        h, logdets = h0, []
        for t in range(T):
            if t >= n_tr:
                logdets.append(torch.linalg.slogdet(m.jacobian(h)).logabsdet)  # (E, B)
            h = m.step(h, x[:, :, t])
    # roundoff: cond(J_t) up to ~1e6
    torch.testing.assert_close(lam.sum(-1), torch.stack(logdets).mean(0), atol=1e-7, rtol=0)


def test_t_ons_1_and_5_agree():
    m = TanhRNN(1, 20, 1, gain=1.0, n_networks=2, generator=gen(6), dtype=F64)
    x = torch.randn(2, 2, 400, 1, generator=gen(7), dtype=F64)
    h0 = m.initial_state(2, gen(8))
    with torch.no_grad():
        a = lyapunov_spectrum(m, x, 8, h0=h0, t_ons=1, n_transient=100, generator=gen(9))
        b = lyapunov_spectrum(m, x, 8, h0=h0, t_ons=5, n_transient=100, generator=gen(9))
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_float32_and_float64_agree_on_non_chaotic_net():
    m64 = TanhRNN(1, 30, 1, gain=0.9, n_networks=2, generator=gen(10), dtype=F64)
    m32 = copy.deepcopy(m64).float()
    x = torch.randn(2, 2, 300, 1, generator=gen(11), dtype=F64)
    h0 = m64.initial_state(2, gen(12))
    Q0 = torch.randn(2, 2, 30, 10, generator=gen(13), dtype=F64)
    with torch.no_grad():
        a = lyapunov_spectrum(m64, x, 10, h0=h0, Q0=Q0)
        b = lyapunov_spectrum(m32, x.float(), 10, h0=h0.float(), Q0=Q0.float())
    assert b.dtype == torch.float32
    torch.testing.assert_close(b.double(), a, atol=1e-4, rtol=0)


class _SpectrumOf(torch.nn.Module):
    """Wraps a model so that torch.func.functional_call can swap its weights for gradcheck."""

    def __init__(self, rnn, k):
        super().__init__()
        self.rnn, self.k = rnn, k

    def forward(self, x, h0, Q0):
        return lyapunov_spectrum(self.rnn, x, self.k, h0=h0, Q0=Q0, n_transient=5)


def test_spectrum_gradient_matches_finite_differences():
    m = TanhRNN(1, 4, 1, gain=1.2, generator=gen(14), dtype=F64)
    x = torch.randn(1, 2, 25, 1, generator=gen(15), dtype=F64)
    h0 = m.initial_state(2, gen(16))
    Q0 = torch.randn(1, 2, 4, 3, generator=gen(17), dtype=F64)
    wrapped = _SpectrumOf(m, 3)

    def spectrum_of(W):
        return torch.func.functional_call(wrapped, {"rnn.W": W}, (x, h0, Q0))

    W = m.W.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(spectrum_of, (W,), eps=1e-6, atol=1e-7)


def test_analytic_jacobian_equals_torch_func():
    m = TanhRNN(3, 9, 2, gain=1.7, n_networks=2, generator=gen(18), dtype=F64)
    h = torch.randn(2, 4, 9, generator=gen(19), dtype=F64)
    x = torch.randn(2, 4, 3, generator=gen(20), dtype=F64)
    Q = torch.randn(2, 4, 9, 5, generator=gen(21), dtype=F64)
    h1, JQ = m.step_tangent(h, x, Q)
    h2, JQ2 = jvp_tangent_step(m, h, x, Q)
    torch.testing.assert_close(h1, h2, atol=1e-13, rtol=0)
    torch.testing.assert_close(JQ, JQ2, atol=1e-12, rtol=0)
    # the dense Jacobian, per trajectory, against jacrev of one step
    dense = m.jacobian(h, x)  # (E, B, N, N)
    for e in range(2):
        for b in range(4):
            def f(hh):
                full = h.clone()
                full[e, b] = hh
                return m.step(full, x)[e, b]
            torch.testing.assert_close(dense[e, b], torch.func.jacrev(f)(h[e, b]), atol=1e-12, rtol=0)


def test_cell_with_only_step_gets_the_same_spectrum_and_gradient():
    m = TanhRNN(1, 10, 1, gain=1.5, n_networks=2, generator=gen(22), dtype=F64)
    cell = OnlyStep(m)
    x = torch.randn(2, 2, 60, 1, generator=gen(23), dtype=F64)
    a = lyapunov_spectrum(m, x, 4, generator=gen(24))
    (ga,) = torch.autograd.grad(a.sum(), m.W)
    b = lyapunov_spectrum(cell, x, 4, generator=gen(24))
    (gb,) = torch.autograd.grad(b.sum(), m.W)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    torch.testing.assert_close(ga, gb, atol=1e-10, rtol=1e-10)


def test_ensemble_equals_separate_single_network_calls():
    E, N, k = 4, 12, 5
    ens = TanhRNN(2, N, 1, gain=1.8, n_networks=E, generator=gen(25), dtype=F64)
    x = torch.randn(E, 3, 80, 2, generator=gen(26), dtype=F64)
    h0 = ens.initial_state(3, gen(27))
    Q0 = torch.randn(E, 3, N, k, generator=gen(28), dtype=F64)
    lam = lyapunov_spectrum(ens, x, k, h0=h0, Q0=Q0)
    (g_ens,) = torch.autograd.grad(lam.sum(), ens.W)
    for e in range(E):
        one = TanhRNN(2, N, 1, n_networks=1, dtype=F64)
        with torch.no_grad():
            for name in ("W", "U", "b", "V", "c"):
                getattr(one, name).copy_(getattr(ens, name)[e:e + 1])
        lam1 = lyapunov_spectrum(one, x[e:e + 1], k, h0=h0[e:e + 1], Q0=Q0[e:e + 1])
        (g1,) = torch.autograd.grad(lam1.sum(), one.W)
        torch.testing.assert_close(lam1[0], lam[e], atol=1e-12, rtol=0)
        torch.testing.assert_close(g1[0], g_ens[e], atol=1e-9, rtol=1e-9)


def test_same_generator_seed_gives_same_numbers():
    m = TanhRNN(1, 15, 1, gain=2.0, n_networks=2, generator=gen(29))
    a = lyapunov_spectrum(m, None, 3, n_steps=50, generator=gen(30))
    b = lyapunov_spectrum(m, None, 3, n_steps=50, generator=gen(30))
    assert torch.equal(a, b)
    assert not torch.equal(a, lyapunov_spectrum(m, None, 3, n_steps=50, generator=gen(31)))


def test_batch_of_trajectories_is_averaged_per_network():
    m = TanhRNN(1, 10, 1, gain=1.5, n_networks=2, generator=gen(32), dtype=F64)
    x = torch.randn(2, 5, 60, 1, generator=gen(33), dtype=F64)
    per = lyapunov_spectrum(m, x, 3, generator=gen(34), reduce="none")
    mean = lyapunov_spectrum(m, x, 3, generator=gen(34))
    assert per.shape == (2, 5, 3) and mean.shape == (2, 3)
    torch.testing.assert_close(per.mean(1), mean)


def _mean_field_lambda1(g):
    """lambda_1 = 0.5 log(g^2 E[tanh'(sqrt(D) z)^2]) with D = g^2 E[tanh(sqrt(D) z)^2], z ~ N(0, 1)."""
    z, w = np.polynomial.hermite_e.hermegauss(201)
    w = w / w.sum()
    D = 1.0
    for _ in range(3000):
        D = g * g * np.sum(w * np.tanh(np.sqrt(D) * z) ** 2)
    return 0.5 * math.log(g * g * np.sum(w * (1 - np.tanh(np.sqrt(D) * z) ** 2) ** 2))


@pytest.mark.parametrize("g", [2.0, 4.0])
def test_largest_exponent_approaches_mean_field_value_at_large_n(g):
    """The random tanh map x_t = W tanh(x_{t-1}) (no input, no bias).

    Tolerance: measured finite-size bias of lambda_1 is about -2.5/N at g = 2 (0.0125 at N = 200, 0.0065 at
    N = 400) and smaller at g = 4, with a network-to-network spread of ~0.005 at N = 400: at N = 400 the mean over 6
    networks must lie within 0.02 of the mean-field value, and closer than at N = 100 (bias shrinks with N)."""
    target = _mean_field_lambda1(g)
    errs = {}
    for N in (100, 400):
        m = TanhRNN(1, N, 1, gain=g, n_networks=6, bias_max=0.0, generator=gen(35), dtype=F64)
        with torch.no_grad():
            lam1 = lyapunov_spectrum(m, None, 1, n_steps=1500, n_transient=300, generator=gen(36))[:, 0]  # (E,)
        errs[N] = abs(lam1.mean().item() - target)
        spread = lam1.std().item()
    assert errs[400] < 0.02
    assert errs[400] < errs[100]
    assert spread < 0.02  # self-averaging: every network of N = 400 has nearly the same lambda_1


# -- bad input ---------------------------------------------------------------------------------------------------

@pytest.fixture
def net():
    return TanhRNN(2, 5, 1, n_networks=3, generator=gen(40))


@pytest.mark.parametrize("k", [0, -1, 6, 2.5])
def test_bad_k_raises(net, k):
    with pytest.raises(ValueError, match="k must"):
        lyapunov_spectrum(net, None, k, n_steps=20)


def test_sequence_not_longer_than_transient_raises(net):
    with pytest.raises(ValueError, match="longer than the transient"):
        lyapunov_spectrum(net, None, 2, n_steps=10, n_transient=10)


def test_bad_t_ons_raises(net):
    with pytest.raises(ValueError, match="t_ons"):
        lyapunov_spectrum(net, None, 2, n_steps=20, t_ons=0)


@pytest.mark.parametrize("shape", [(3, 4, 20, 1), (2, 4, 20, 2), (4, 20), (3, 4, 20, 2, 1)])
def test_wrong_input_shape_raises(net, shape):
    with pytest.raises(ValueError, match="inputs must have shape"):
        lyapunov_spectrum(net, torch.zeros(shape), 2)


def test_missing_inputs_and_n_steps_raises(net):
    with pytest.raises(ValueError, match="n_steps"):
        lyapunov_spectrum(net, None, 2)


def test_wrong_h0_shape_raises(net):
    with pytest.raises(ValueError, match="h0 must have shape"):
        lyapunov_spectrum(net, None, 2, n_steps=20, h0=torch.zeros(3, 1, 4))


@pytest.mark.parametrize("name, value, match", [
    ("h0", [[0.0] * 5], r"h0 must have shape \(E, B, S\) = \(3, 1, 5\) \(a floating torch.Tensor\), got a list"),
    ("h0", torch.zeros(3, 1, 5, dtype=torch.long), "h0 must have shape .* a floating dtype.*torch.int64"),
    ("Q0", "basis", "Q0 must have shape .* got a str"),
    ("Q0", torch.full((3, 1, 5, 2), float("nan")), "Q0 contains non-finite"),
])
def test_bad_start_state_or_basis_raises_naming_it(net, name, value, match):
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(net, None, 2, n_steps=20, **{name: value})


@pytest.mark.parametrize("kw, match", [(dict(tol=0.5), "tol must be .*<= 0.01"), (dict(batch=-3), "batch must"),
                                       (dict(info=[]), "info must be a dict")])
def test_bad_engine_options_raise_before_any_work(net, kw, match):
    x = torch.zeros(3, 1, 20, 2)  # given inputs: batch is not used, but must still be valid
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(net, x, 2, **kw)


def test_non_finite_weights_raise_naming_the_parameter(net):
    with torch.no_grad():
        net.U[1, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite.*U"):
        lyapunov_spectrum(net, None, 2, n_steps=20)


def test_non_finite_inputs_raise(net):
    x = torch.zeros(3, 1, 20, 2)
    x[0, 0, 3, 1] = float("inf")
    with pytest.raises(ValueError, match="inputs contain non-finite"):
        lyapunov_spectrum(net, x, 2)


def test_diverging_state_reports_the_step(net):
    x = torch.zeros(3, 1, 20, 2)
    x[2, 0, 7, 0] = 1e38  # finite input that overflows the state of network 2 at step 7
    with torch.no_grad():
        net.U.fill_(1e3)
    with pytest.raises(ValueError, match="step 7 in network.*2"):
        lyapunov_spectrum(net, x, 2)
