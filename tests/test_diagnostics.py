"""Diagnostics checked against brute force, high-precision arithmetic, exact identities and Lyapunov exponents."""
import math

import pytest
import torch

from floss_core import TanhRNN, lyapunov_spectrum
from floss_core.diagnostics import (condition_number, gradient_norm_profile, long_term_jacobian_singular_values,
                                    steps_to_criterion, success)
from helpers import OnlyStep

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def dense_trajectory_jacobians(m, h0, x):
    """The dense step Jacobians J_1..J_T along the trajectory: list of (E, B, N, N)."""
    h, Js = h0, []
    with torch.no_grad():
        for t in range(x.shape[2]):
            Js.append(m.jacobian(h))
            h = m.step(h, x[:, :, t])
    return Js


# -- gradient_norm_profile -------------------------------------------------------------------------------------------

def brute_force_profile(m, h0, x, t_loss, loss):
    """||d loss / d h_{t_loss - tau}|| by a separate forward pass and autograd.grad for every tau: (E, t_loss + 1)."""
    out = []
    for tau in range(t_loss + 1):
        h = h0
        for t in range(t_loss + 1):
            h = m.step(h, x[:, :, t])
            if t == t_loss - tau:
                h = h.detach().requires_grad_(True)
                leaf = h
        (g,) = torch.autograd.grad(loss(h).sum(), leaf)
        out.append(g.flatten(1).norm(dim=1))
    return torch.stack(out, 1)


@pytest.mark.parametrize("t_loss", [None, 7])
def test_gradient_norm_profile_equals_brute_force_per_lag_gradients(t_loss):
    E, B, N, T = 2, 3, 5, 12
    m = TanhRNN(2, N, 3, gain=1.5, n_networks=E, generator=gen(0), dtype=F64)
    x = torch.randn(E, B, T, 2, generator=gen(1), dtype=F64)
    h0 = m.initial_state(B, gen(2))
    tl = T - 1 if t_loss is None else t_loss

    def loss(h):  # (E, B, N) -> (E,)
        return (torch.tanh(h) ** 2).sum((1, 2)) + m.readout(h)[..., 0].sum(1)

    prof = gradient_norm_profile(m, x, t_loss=t_loss, h0=h0, loss=loss)
    assert prof.shape == (E, tl + 1)
    torch.testing.assert_close(prof, brute_force_profile(m, h0, x, tl, loss), rtol=1e-12, atol=0)

    # the default loss: the readout along the generator's first draw, a unit vector u of size O
    u = torch.randn(3, generator=gen(9), dtype=F64)
    u = u / u.norm()
    prof = gradient_norm_profile(m, x, t_loss=t_loss, h0=h0, generator=gen(9))
    expected = brute_force_profile(m, h0, x, tl, lambda h: (m.readout(h) @ u).sum(1))
    torch.testing.assert_close(prof, expected, rtol=1e-12, atol=0)
    torch.testing.assert_close(prof[:, 0], math.sqrt(B) * (u @ m.V).norm(dim=-1).detach(), rtol=1e-12, atol=0)


def test_gradient_norm_profile_of_stable_net_decays_at_rate_lambda_1():
    E, N, T = 2, 20, 80
    m = TanhRNN(1, N, 1, gain=0.5, n_networks=E, bias_max=0.0, generator=gen(1), dtype=F64)
    prof = gradient_norm_profile(m, None, n_steps=T, batch=2, generator=gen(1))  # (E, T)
    taus = torch.arange(5, 56, dtype=F64)  # lags whose states sit at the fixed point (t >= 24)
    y = prof[:, 5:56].log()
    tc = taus - taus.mean()
    slope = ((y - y.mean(1, keepdim=True)) * tc).sum(1) / (tc * tc).sum()  # least-squares slope per network
    with torch.no_grad():
        lam1 = lyapunov_spectrum(m, None, 1, n_steps=600, generator=gen(2))[:, 0]
    assert bool((lam1 < -0.3).all())
    torch.testing.assert_close(slope, lam1, atol=0.1, rtol=0)


def test_gradient_norm_profile_of_ensemble_member_equals_single_network():
    E, B, N, T = 3, 2, 5, 10
    m = TanhRNN(2, N, 2, gain=1.2, n_networks=E, generator=gen(3), dtype=F64)
    x = torch.randn(E, B, T, 2, generator=gen(4), dtype=F64)
    h0 = m.initial_state(B, gen(5))
    prof = gradient_norm_profile(m, x, h0=h0, generator=gen(6))  # (E, T)
    for e in range(E):
        single = TanhRNN(2, N, 2, n_networks=1, dtype=F64)
        with torch.no_grad():
            for name in ("W", "U", "b", "V", "c"):
                getattr(single, name).copy_(getattr(m, name)[e:e + 1])
        p1 = gradient_norm_profile(single, x[e:e + 1], h0=h0[e:e + 1], generator=gen(6))  # (1, T)
        torch.testing.assert_close(prof[e:e + 1], p1, rtol=1e-12, atol=0)


def test_gradient_norm_profile_rejects_bad_input():
    m = TanhRNN(1, 4, 1, n_networks=2, generator=gen(0), dtype=F64)
    with pytest.raises(ValueError, match="t_loss"):
        gradient_norm_profile(m, None, n_steps=5, t_loss=5)
    with pytest.raises(ValueError, match="t_loss"):
        gradient_norm_profile(m, None, n_steps=5, t_loss=-1)
    with pytest.raises(ValueError, match="loss"):
        gradient_norm_profile(m, None, n_steps=5, loss="mse")
    with pytest.raises(ValueError, match=r"shape \(E,\)"):
        gradient_norm_profile(m, None, n_steps=5, loss=lambda h: h.sum(-1))
    with pytest.raises(ValueError, match="h0"):
        gradient_norm_profile(m, None, n_steps=5, h0=torch.zeros(2, 3, 4, dtype=F64))
    with pytest.raises(ValueError, match="n_steps"):
        gradient_norm_profile(m, None)
    with torch.no_grad():
        m.W[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="non-finite"):
        gradient_norm_profile(m, None, n_steps=5)


# -- long_term_jacobian_singular_values ------------------------------------------------------------------------------

def test_long_term_singular_values_match_dense_float64_product():
    E, B, N, T = 2, 2, 6, 20
    m = TanhRNN(1, N, 1, gain=1.5, n_networks=E, bias_max=0.0, generator=gen(0), dtype=F64)
    h0 = m.initial_state(B, gen(2))
    x = torch.zeros(E, B, T, 1, dtype=F64)
    log_sv = long_term_jacobian_singular_values(m, x, N, h0=h0)  # (E, B, T, N)
    assert log_sv.shape == (E, B, T, N)
    P, ref = torch.eye(N, dtype=F64).expand(E, B, N, N), []
    for J in dense_trajectory_jacobians(m, h0, x):
        P = J @ P
        ref.append(torch.linalg.svdvals(P).log())
    ref = torch.stack(ref, 2)  # (E, B, T, N)
    # the dense SVD is accurate to eps * sigma_1 / sigma_i: compare where that is below 1e-10
    trusted = ref >= ref[..., :1] - math.log(1e6)
    assert int(trusted.sum()) > E * B * T  # more than sigma_1 alone
    assert (log_sv - ref).abs()[trusted].max() < 1e-8  # relative 1e-8 on sigma_i
    # the k-leading slice is the same computation
    torch.testing.assert_close(long_term_jacobian_singular_values(m, x, 2, h0=h0), log_sv[..., :2],
                               rtol=0, atol=0)


def test_long_term_singular_values_match_high_precision_product_over_full_range():
    mpmath = pytest.importorskip("mpmath")
    E, B, N, T = 1, 2, 6, 20
    m = TanhRNN(2, N, 1, gain=3.0, n_networks=E, generator=gen(0), dtype=F64)
    x = 0.3 * torch.randn(E, B, T, 2, generator=gen(1), dtype=F64)  # sigma_1 / sigma_6 ~ e^95 at tau = T
    h0 = m.initial_state(B, gen(2))
    log_sv = long_term_jacobian_singular_values(m, x, N, h0=h0)[:, :, -1]  # (E, B, N), tau = T
    Js = dense_trajectory_jacobians(m, h0, x)
    # the attainable accuracy is about eps * cond(J_t) (~1e6 here): J Q carries a rounding error relative to ||J||
    assert float(torch.linalg.cond(torch.stack(Js)).max()) < 1e7
    mpmath.mp.dps = 100  # exact digits well beyond sigma_1 / sigma_6
    for b in range(B):
        P = mpmath.eye(N)
        for J in Js:
            P = mpmath.matrix(J[0, b].tolist()) * P
        exact = sorted((float(mpmath.log(s)) for s in mpmath.svd_r(P, compute_uv=False)), reverse=True)
        exact = torch.tensor(exact, dtype=F64)
        assert float(exact[0] - exact[-1]) > 40  # far beyond what a float64 SVD of P resolves
        torch.testing.assert_close(log_sv[0, b], exact, atol=1e-9, rtol=0)


def test_long_term_singular_values_of_chaotic_net_are_finite_and_obey_log_det_identity():
    E, B, N, T = 2, 1, 8, 500
    m = TanhRNN(1, N, 1, gain=3.0, n_networks=E, generator=gen(3), dtype=F64)
    h0 = m.initial_state(B, gen(4))
    x = torch.zeros(E, B, T, 1, dtype=F64)
    log_sv = long_term_jacobian_singular_values(m, x, N, h0=h0)  # (E, B, T, N)
    assert bool(torch.isfinite(log_sv).all())
    assert bool((log_sv[..., :-1] >= log_sv[..., 1:]).all())  # descending
    assert float(log_sv[..., -1, 0].min()) > 0 and float(log_sv[..., -1, -1].max()) < -745  # e^-745: below float64
    # sum_i log sigma_i(P_tau) = log|det P_tau| = sum_{t <= tau} log|det J_t|, exactly
    logdet = torch.stack([torch.linalg.slogdet(J).logabsdet for J in dense_trajectory_jacobians(m, h0, x)], 2)
    torch.testing.assert_close(log_sv.sum(-1), logdet.cumsum(2), atol=1e-7, rtol=1e-12)


@pytest.mark.parametrize("gain", [0.8, 3.0])
def test_long_term_singular_values_per_step_approach_lyapunov_exponents(gain):
    E, B, N, T, k = 2, 1, 12, 600, 3
    m = TanhRNN(1, N, 1, gain=gain, n_networks=E, generator=gen(0), dtype=F64)
    h0 = m.initial_state(B, gen(1))
    log_sv = long_term_jacobian_singular_values(m, None, k, n_steps=T, h0=h0)  # (E, B, T, k)
    with torch.no_grad():
        lam = lyapunov_spectrum(m, None, k, n_steps=T, h0=h0, generator=gen(2))  # (E, k)
    assert (float(lam[:, 0].max()) > 0) == (gain > 1)  # one chaotic and one stable case
    torch.testing.assert_close(log_sv[:, 0, -1] / T, lam, atol=0.05, rtol=0)


def test_long_term_singular_values_with_t_ons_report_every_t_ons_steps():
    E, B, N, T = 2, 2, 5, 17
    m = TanhRNN(2, N, 1, gain=2.0, n_networks=E, generator=gen(0), dtype=F64)
    x = torch.randn(E, B, T, 2, generator=gen(1), dtype=F64)
    h0 = m.initial_state(B, gen(2))
    every = long_term_jacobian_singular_values(m, x, 3, h0=h0)  # (E, B, T, 3)
    sparse = long_term_jacobian_singular_values(m, x, 3, h0=h0, t_ons=4)  # tau = 4, 8, 12, 16, 17
    assert sparse.shape == (E, B, 5, 3)
    torch.testing.assert_close(sparse, every[:, :, [3, 7, 11, 15, 16]], atol=1e-10, rtol=0)


def test_long_term_singular_values_of_cell_without_jacobian_match_tanh_rnn():
    E, B, N, T = 2, 2, 5, 15
    m = TanhRNN(2, N, 1, gain=2.0, n_networks=E, generator=gen(0), dtype=F64)
    x = torch.randn(E, B, T, 2, generator=gen(1), dtype=F64)
    h0 = m.initial_state(B, gen(2))
    torch.testing.assert_close(long_term_jacobian_singular_values(OnlyStep(m), x, N, h0=h0),
                               long_term_jacobian_singular_values(m, x, N, h0=h0), atol=1e-10, rtol=0)


def test_long_term_singular_values_reject_bad_input():
    m = TanhRNN(1, 4, 1, n_networks=2, generator=gen(0), dtype=F64)
    for k in (0, 5, 2.0, True):
        with pytest.raises(ValueError, match="k must be"):
            long_term_jacobian_singular_values(m, None, k, n_steps=5)
    with pytest.raises(ValueError, match="t_ons"):
        long_term_jacobian_singular_values(m, None, 2, n_steps=5, t_ons=0)
    with pytest.raises(ValueError, match="h0"):
        long_term_jacobian_singular_values(m, None, 2, n_steps=5, h0=torch.zeros(2, 1, 3, dtype=F64))
    with pytest.raises(ValueError, match="inputs"):
        long_term_jacobian_singular_values(m, torch.zeros(2, 1, 5, 3, dtype=F64), 2)


# -- condition_number ------------------------------------------------------------------------------------------------

def test_condition_number_is_log_ratio_of_first_and_kth_singular_value():
    log_sv = torch.tensor([[3.0, 1.0, -2.0], [0.5, 0.5, 0.5]], dtype=F64).reshape(1, 2, 1, 3)  # (E, B, T, K)
    kappa = condition_number(log_sv)
    assert kappa.shape == (1, 2, 1)
    torch.testing.assert_close(kappa.flatten(), torch.tensor([5.0, 0.0], dtype=F64))
    torch.testing.assert_close(condition_number(log_sv, 2).flatten(), torch.tensor([2.0, 0.0], dtype=F64))
    torch.testing.assert_close(condition_number(log_sv, 1).flatten(), torch.tensor([0.0, 0.0], dtype=F64))
    for k in (0, 4):
        with pytest.raises(ValueError, match="k must be"):
            condition_number(log_sv, k)
    with pytest.raises(ValueError, match="log_sv"):
        condition_number(torch.tensor(1.0))


def test_condition_number_of_long_term_jacobian_grows_at_rate_lambda_1_minus_lambda_k():
    E, N, T = 1, 6, 300
    m = TanhRNN(1, N, 1, gain=0.5, n_networks=E, bias_max=0.0, generator=gen(0), dtype=F64)
    h0 = torch.zeros(E, 1, N, dtype=F64)  # at the fixed point: J_t = W, exponents log|eig W|
    kappa = condition_number(long_term_jacobian_singular_values(m, None, 3, n_steps=T, h0=h0))  # (E, 1, T)
    ev = torch.linalg.eigvals(m.W.detach()).abs().log().sort(dim=-1, descending=True).values  # (E, N)
    torch.testing.assert_close(kappa[:, 0, -1] / T, ev[:, 0] - ev[:, 2], atol=0.02, rtol=0)


# -- steps_to_criterion / success ------------------------------------------------------------------------------------

def test_steps_to_criterion_finds_first_step_that_stays_above_threshold():
    acc = torch.tensor([
        [0.1, 0.5, 0.96, 0.97, 0.90, 0.95, 0.99, 1.0],  # crosses at 2, dips at 4, back (== threshold) from 5
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8],  # never
        [0.99, 0.96, 0.95, 1.0, 0.97, 0.98, 0.99, 1.0],  # always
        [0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99, 0.5],  # falls at the very end
        [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.97],  # only the last step
        [0.99, math.nan, 0.99, 0.99, 0.99, 0.99, 0.99, 0.99],  # NaN counts as below
    ])
    steps = steps_to_criterion(acc, 0.95, steps_dim=1)
    assert steps.dtype == torch.long and steps.shape == (6,)
    assert steps.tolist() == [5, -1, 0, -1, 7, 2]
    assert success(acc, 0.95, steps_dim=1).tolist() == [True, False, True, False, True, True]
    assert steps_to_criterion(acc, threshold=1.0, steps_dim=1).tolist() == [7, -1, 7, -1, -1, -1]
    assert steps_to_criterion(acc.numpy(), steps_dim=1).tolist() == steps.tolist()  # array-likes work too


def test_steps_to_criterion_rejects_bad_threshold_and_shape():
    acc = torch.ones(2, 5)
    for thr in (0.0, -0.1, 1.5, math.nan, True, "0.9"):
        with pytest.raises(ValueError, match="threshold"):
            steps_to_criterion(acc, thr)
        with pytest.raises(ValueError, match="threshold"):
            success(acc, thr)
    for bad in (torch.ones(5), torch.ones(2, 3, 4), torch.ones(2, 0)):
        with pytest.raises(ValueError, match="accuracy"):
            steps_to_criterion(bad)


def test_criterion_outcome_needs_one_failed_flag_per_network():
    from floss_core.diagnostics import criterion_outcome

    with pytest.raises(ValueError, match=r"failed must have the networks' shape \(2, 3\)"):
        criterion_outcome(torch.rand(20, 2, 3), torch.zeros(3, dtype=torch.bool))
