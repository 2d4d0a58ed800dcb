"""Flossing: the loss, its gradient, and that flossing moves the flossed exponents (and only those) to the target."""
import pytest
import torch

from floss_core import FlossConfig, TanhRNN, floss, flossing_loss, flossing_spectrum, lyapunov_spectrum
from floss_core.diagnostics import gradient_norm_profile

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def long_spectrum(m, k, seed=99):
    """Exponents of the zero-input dynamics over a long trajectory (4 x 3000 steps), as ground truth."""
    with torch.no_grad():
        return lyapunov_spectrum(m, None, k, n_steps=3000, batch=4, generator=gen(seed))


def test_flossing_loss_is_mean_squared_distance_to_target():
    lam = torch.tensor([[0.1, -0.3], [0.0, 0.2]])
    torch.testing.assert_close(flossing_loss(lam), torch.tensor([0.05, 0.02]))
    torch.testing.assert_close(flossing_loss(lam, target=0.1), torch.tensor([0.08, 0.01]))


def test_flossing_loss_gradient_matches_finite_differences():
    m = TanhRNN(2, 4, 1, gain=1.5, generator=gen(1), dtype=F64)
    W0 = m.W.detach().clone()

    class Loss(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = m

        def forward(self):
            cfg = FlossConfig(k=3, seq_len=20, n_transient=5, batch=2)
            return flossing_loss(flossing_spectrum(self.rnn, cfg, generator=gen(2), check=True))

    wrapped = Loss()
    assert torch.autograd.gradcheck(lambda W: torch.func.functional_call(wrapped, {"rnn.W": W}, ()),
                                    (W0.requires_grad_(),), eps=1e-6, atol=1e-7)


class FrozenTrajectory(torch.nn.Module):
    """Replays a fixed state trajectory; only the Jacobians W diag(1 - tanh(h_t)^2) depend on W."""

    def __init__(self, W, states):
        super().__init__()
        self.W, self.states, self.t = W, states, 0  # W a plain tensor: the caller differentiates with respect to it
        self.anchor = torch.nn.Parameter(torch.zeros(1, dtype=W.dtype))  # gives the spectrum its dtype
        self.n_networks, self.state_size, self.input_size = 1, W.shape[-1], 1

    def step_tangent(self, h, x, Q):
        h_prev = self.states[self.t]
        self.t += 1
        return self.states[self.t], self.W.unsqueeze(1) @ ((1 - torch.tanh(h_prev) ** 2).unsqueeze(-1) * Q)


def test_detached_gradient_is_the_derivative_at_a_frozen_trajectory():
    """The 'detached' mode differentiates only the Jacobians' explicit dependence on the weights."""
    m = TanhRNN(1, 5, 1, gain=2.0, bias_max=0.0, generator=gen(1), dtype=F64)
    T, k = 30, 3
    h0 = m.initial_state(1, gen(2))
    Q0 = torch.randn(1, 1, 5, k, generator=gen(3), dtype=F64)
    lam = lyapunov_spectrum(m, None, k, n_steps=T, h0=h0, Q0=Q0, n_transient=5, gradient="detached",
                            t_ons=1)  # the definition: a QR every step on both sides, so equal to roundoff
    (g_detached,) = torch.autograd.grad(flossing_loss(lam).sum(), m.W)
    with torch.no_grad():
        states = [h0]
        for _ in range(T):
            states.append(m.step(states[-1], torch.zeros(1, 1, 1, dtype=F64)))

    def frozen_loss(W):
        cell = FrozenTrajectory(W, states)
        return flossing_loss(lyapunov_spectrum(cell, torch.zeros(1, 1, T, 1, dtype=F64), k, h0=h0, Q0=Q0,
                                               n_transient=5, t_ons=1, check=False))

    W = m.W.detach().clone().requires_grad_()
    (g_frozen,) = torch.autograd.grad(frozen_loss(W).sum(), W)
    torch.testing.assert_close(g_detached, g_frozen, rtol=1e-10, atol=1e-12)
    # and that derivative is what finite differences of the frozen-trajectory loss give
    eps, i, j = 1e-6, 1, 3
    dW = torch.zeros_like(W)
    dW[0, i, j] = eps
    with torch.no_grad():
        fd = (frozen_loss(W + dW) - frozen_loss(W - dW)) / (2 * eps)
    torch.testing.assert_close(g_detached[0, i, j], fd[0], rtol=1e-6, atol=1e-9)


def test_detached_gradient_differs_from_full_gradient():
    m = TanhRNN(1, 6, 1, gain=2.0, generator=gen(3), dtype=F64)
    grads = {}
    for mode in ("full", "detached"):
        cfg = FlossConfig(k=2, seq_len=30, n_transient=5, gradient=mode)
        (grads[mode],) = torch.autograd.grad(flossing_loss(flossing_spectrum(m, cfg, generator=gen(4))).sum(), m.W)
    assert not torch.allclose(grads["full"], grads["detached"])


def test_flossing_a_chaotic_network_zeroes_the_flossed_exponents_only():
    """g = 2, N = 80, k = 16: 400 steps of the state-detached gradient (the full gradient through 100 steps of a
    chaotic trajectory is dominated by the trajectory's own sensitivity and does not converge from g = 2)."""
    m = TanhRNN(1, 80, 1, gain=2.0, n_networks=3, generator=gen(5))
    before = long_spectrum(m, 20)
    assert (before[:, 0] > 0.1).all() and (before[:, 15] < -0.1).all()  # chaotic, spread-out spectrum
    cfg = FlossConfig(k=16, gradient="detached", input="zero", batch=8, seq_len=100, n_transient=30)
    result = floss(m, 400, config=cfg, generator=gen(6))
    after = long_spectrum(m, 20)
    assert not result.failed.any()
    assert result.exponents.shape == (400, 3, 16) and result.loss.shape == (400, 3)
    assert (after[:, :16].abs() < 0.02).all(), after[:, :16].abs().max(1).values
    assert (after[:, 16:] < 0).all()  # the unflossed ones stay negative


def test_flossing_a_stable_network_raises_lambda1_to_zero_and_flattens_the_gradient_profile():
    """g = 0.5, N = 32: lambda_1 ~ -0.7, so the gradient of a late loss decays by > 10 orders of magnitude over 300
    steps. After flossing lambda_1 (k = 1, full gradient, lr decaying 1e-3 -> 1e-5) it stays within a factor of 10
    over tau in [10, 300]. (Over the first few lags the part of the gradient outside the flossed direction decays
    at lambda_2 ~ -0.6: an O(1) factor, about 2-6 here, that flossing one exponent does not remove.)"""
    m = TanhRNN(1, 32, 1, gain=0.5, n_networks=4, generator=gen(0), dtype=F64)
    profile = lambda: gradient_norm_profile(m, None, n_steps=301, batch=4, generator=gen(1))[:, 10:]  # noqa: E731
    spread = lambda p: p.max(1).values / p.min(1).values  # noqa: E731
    before = long_spectrum(m, 2)[:, 0]
    assert (before < -0.5).all()
    assert (spread(profile()) > 1e10).all()
    cfg = FlossConfig(k=1, gradient="full", input="zero", batch=8, seq_len=200, n_transient=100, lr_final=1e-5)
    floss(m, 400, config=cfg, generator=gen(0))
    after = long_spectrum(m, 2)[:, 0]
    assert (after.abs() < 0.01).all(), after
    assert (spread(profile()) < 10).all(), spread(profile())


def test_failed_network_is_frozen_and_reported():
    m = TanhRNN(1, 8, 1, gain=1.0, n_networks=3, generator=gen(7))
    with torch.no_grad():
        m.U[2] = 3e38  # network 2's drive overflows: its exponents are NaN
        m.b[2] = 3e38
    W2 = m.W[2].detach().clone()
    result = floss(m, 3, config=FlossConfig(k=2, seq_len=20, n_transient=5), generator=gen(8))
    assert result.failed.tolist() == [False, False, True]
    assert torch.equal(m.W[2], W2)
    assert torch.isfinite(m.W[:2]).all()


def test_bad_flossing_arguments_raise():
    m = TanhRNN(1, 8, 1, generator=gen(9))
    with pytest.raises(ValueError, match="k must"):
        floss(m, 2, config=FlossConfig(k=9))
    with pytest.raises(ValueError, match="n_steps"):
        floss(m, -1, config=FlossConfig(k=2))
    with pytest.raises(ValueError, match="no parameter"):
        floss(m, 1, config=FlossConfig(k=2, params=("W", "Z")))
    with pytest.raises(ValueError, match="input"):
        floss(m, 1, config=FlossConfig(k=2, input="noise"))


def test_tiled_optimizer_continues_each_copy_as_its_original_alone():
    """tile_optimizer: one flossing Adam from preflossing on, across an ensemble tiled for a sweep."""
    import copy

    from floss_core.ensemble import tile_networks, tile_optimizer
    from floss_core.flossing import flossed_parameters

    cfg = FlossConfig(k=2, seq_len=12, n_transient=4, method="reference")
    m = TanhRNN(1, 6, 1, n_networks=2, generator=gen(70), dtype=torch.float64)
    opt = torch.optim.Adam(flossed_parameters(m, cfg), lr=cfg.lr)
    floss(m, 3, config=cfg, generator=gen(71), optimizer=opt)
    tiled = tile_networks(m, 3)  # network r * 2 + e is a copy of network e
    topt = tile_optimizer(opt, flossed_parameters(tiled, cfg), 3)
    floss(tiled, 2, config=cfg, generator=[gen(80 + i) for i in range(6)], optimizer=topt)
    for i in (1, 5):  # copies of network 1 (r * 2 + 1) with their own data
        alone = copy.deepcopy(m)
        alone_opt = torch.optim.Adam(flossed_parameters(alone, cfg), lr=cfg.lr)
        alone_opt.load_state_dict(copy.deepcopy(opt.state_dict()))  # (load_state_dict shares the step tensor)
        floss(alone, 2, config=cfg, generator=[gen(80 + i - 1), gen(80 + i)], optimizer=alone_opt)
        torch.testing.assert_close(tiled.W[i], alone.W[1], atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="tiled copies"):
        tile_optimizer(opt, flossed_parameters(tiled, cfg)[:2], 3)


def test_tiled_optimizer_keeps_each_parameter_groups_settings():
    """Groups with their own lr (one changed by a scheduler too) keep it: the copies step as the original does."""
    from floss_core.ensemble import tile_networks, tile_optimizer

    m = TanhRNN(1, 3, 1, n_networks=1, generator=gen(72), dtype=torch.float64)
    opt = torch.optim.Adam([{"params": [m.W], "lr": 1e-2}, {"params": [m.U, m.b], "lr": 1e-3}], lr=5e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.1)

    def step(model, o):
        o.zero_grad()
        (model.W.pow(2).sum((1, 2)) + model.U.sum((1, 2)) + model.b.pow(2).sum(1)).sum().backward()
        o.step()

    step(m, opt)
    sched.step()
    tiled = tile_networks(m, 2)
    topt = tile_optimizer(opt, [tiled.W, tiled.U, tiled.b], 2)
    assert [g["lr"] for g in topt.param_groups] == [g["lr"] for g in opt.param_groups] == [1e-3, 1e-4]
    step(m, opt)
    step(tiled, topt)
    for name in ("W", "U", "b"):
        assert torch.equal(getattr(tiled, name)[1], getattr(m, name)[0])


def test_flossing_spectrum_does_not_depend_on_torchs_default_dtype():
    """The start states and bases are drawn in float32 whatever the default dtype (a global setting)."""
    from floss_core.flossing import flossing_spectrum

    m = TanhRNN(2, 6, 1, n_networks=2, dtype=torch.float64, generator=gen(90))
    cfg = FlossConfig(k=3, seq_len=20, n_transient=5)
    a = flossing_spectrum(m, cfg, generator=gen(91)).detach()
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        b = flossing_spectrum(m, cfg, generator=gen(91)).detach()
    finally:
        torch.set_default_dtype(before)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="generator must be a torch.Generator"):
        flossing_spectrum(m, cfg, generator=5)


@pytest.mark.parametrize("failed, match", [(torch.zeros(3, dtype=torch.bool), r"shape \(E,\) = \(2,\).*got \(3,\)"),
                                           (torch.zeros(2), "got \\(2,\\), torch.float32"),
                                           ([False, False], "got list")])
def test_floss_checks_the_failed_mask(failed, match):
    m = TanhRNN(1, 6, 1, n_networks=2, generator=gen(92))
    with pytest.raises(ValueError, match="failed must be a bool tensor.*" + match):
        floss(m, 1, config=FlossConfig(k=2, seq_len=12, n_transient=4), failed=failed)
