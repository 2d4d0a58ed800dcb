"""LSTM and GRU ensembles (and every other cell) checked against torch.func, exact fixed-point spectra, finite
differences and single-network runs; flossing and training work on them, and on a cell that provides only `step`."""
import math

import pytest
import torch
from helpers import ALL_CELLS, F64, GATED_CELLS, cell_ids, copy_network, gen

from floss_core import (FlossConfig, FlossSchedule, ModelConfig, TanhRNN, TaskConfig, TrainConfig, floss, flossing_loss,
                        lyapunov_spectrum, train)
from floss_core.diagnostics import gate_statistics, gradient_norm_profile, long_term_jacobian_singular_values
from floss_core.cells import GRU, LSTM
from floss_core.spectrum import jvp_tangent_step

QUIET = dict(progress=False)
all_cells = pytest.mark.parametrize("name, make", ALL_CELLS, ids=cell_ids(ALL_CELLS))
gated_cells = pytest.mark.parametrize("name, make", GATED_CELLS, ids=cell_ids(GATED_CELLS))


@all_cells
def test_analytic_tangent_step_equals_jvp_and_dense_jacobian_equals_jacrev(name, make):
    E, B, I = 2, 3, 2
    m = make(I, 5, 1, E, gen(0), F64, gain=1.5)
    S = m.state_size
    h = torch.randn(E, B, S, generator=gen(1), dtype=F64)
    x = torch.randn(E, B, I, generator=gen(2), dtype=F64)
    Q = torch.randn(E, B, S, 4, generator=gen(3), dtype=F64)
    h1, JQ = m.step_tangent(h, x, Q)
    h2, JQ2 = jvp_tangent_step(m, h, x, Q)
    torch.testing.assert_close(h1, h2, atol=1e-14, rtol=0)
    torch.testing.assert_close(JQ, JQ2, atol=1e-13, rtol=0)
    dense = m.jacobian(h, x)  # (E, B, S, S)
    assert dense.shape == (E, B, S, S)
    for e in range(E):
        for b in range(B):
            def f(hh):
                full = h.clone()
                full[e, b] = hh
                return m.step(full, x)[e, b]
            torch.testing.assert_close(dense[e, b], torch.func.jacrev(f)(h[e, b]), atol=1e-13, rtol=0)


def _fixed_point(m, n_iter=3000):
    """Iterate the zero-input step from a small state until it stops moving."""
    E, S, I = m.n_networks, m.state_size, m.input_size
    x = torch.zeros(E, 1, I, dtype=F64)
    h = 0.01 * torch.randn(E, 1, S, generator=gen(7), dtype=F64)
    with torch.no_grad():
        for _ in range(n_iter):
            h = m.step(h, x)
        assert (m.step(h, x) - h).abs().max() < 1e-13  # converged
    return h, x


@all_cells
def test_spectrum_at_stable_fixed_point_equals_log_abs_eigenvalues_of_its_jacobian(name, make):
    m = make(1, 3, 1, 1, gen(4), F64, gain=0.5)
    S = m.state_size
    h_star, x = _fixed_point(m)
    expected = torch.linalg.eigvals(m.jacobian(h_star, x)[0, 0]).abs().log().sort(descending=True).values  # (S,)
    with torch.no_grad():
        lam = lyapunov_spectrum(m, None, S, n_steps=5000, n_transient=1000, h0=h_star, generator=gen(5))[0]
    torch.testing.assert_close(lam, expected, atol=1e-3, rtol=0)


class _SpectrumOf(torch.nn.Module):
    """Wraps a model so that torch.func.functional_call can swap its weights for gradcheck."""

    def __init__(self, model, k):
        super().__init__()
        self.model, self.k = model, k

    def forward(self, x, h0, Q0):
        return lyapunov_spectrum(self.model, x, self.k, h0=h0, Q0=Q0, n_transient=5)


@all_cells
def test_spectrum_gradient_matches_finite_differences(name, make):
    m = make(1, 3, 1, 1, gen(14), F64, gain=1.2)
    S = m.state_size
    x = torch.randn(1, 2, 25, 1, generator=gen(15), dtype=F64)
    h0 = m.initial_state(2, gen(16))
    Q0 = torch.randn(1, 2, S, 3, generator=gen(17), dtype=F64)
    wrapped = _SpectrumOf(m, 3)

    def spectrum_of(W):
        return torch.func.functional_call(wrapped, {"model.W": W}, (x, h0, Q0))

    W = m.W.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(spectrum_of, (W,), eps=1e-6, atol=1e-7)


@all_cells
def test_ensemble_equals_separate_single_network_calls(name, make):
    E, N, k = 3, 6, 4
    ens = make(2, N, 1, E, gen(25), F64, gain=1.5)
    S = ens.state_size
    x = torch.randn(E, 2, 60, 2, generator=gen(26), dtype=F64)
    h0 = ens.initial_state(2, gen(27))
    Q0 = torch.randn(E, 2, S, k, generator=gen(28), dtype=F64)
    # t_ons = 1: with "auto" the networks of a sub-batch share QR windows, equal only to ~1e-11 (test_reliability)
    lam = lyapunov_spectrum(ens, x, k, h0=h0, Q0=Q0, t_ons=1)  # (E, k)
    g_ens = torch.autograd.grad(lam.sum(), [ens.W, ens.U, ens.b])
    for e in range(E):
        one = copy_network(ens, make(2, N, 1, 1, None, F64), e)
        lam1 = lyapunov_spectrum(one, x[e:e + 1], k, h0=h0[e:e + 1], Q0=Q0[e:e + 1], t_ons=1)
        g1 = torch.autograd.grad(lam1.sum(), [one.W, one.U, one.b])
        torch.testing.assert_close(lam1[0], lam[e], atol=1e-12, rtol=0)
        for a, b in zip(g1, g_ens):
            torch.testing.assert_close(a[0], b[e], atol=1e-9, rtol=1e-9)


@gated_cells
def test_flossing_moves_the_first_exponent_of_a_stable_net_to_zero(name, make):
    """Zero input, so the long-run exponent is that of the fixed point the net settles in. (k = 1: pushing a second
    exponent to 0 as well tends to create an invariant circle, whose transverse exponent settles slowly.)"""
    m = make(1, 6, 1, 1, gen(0), F64, gain=0.5)
    cfg = FlossConfig(k=1, target=0.0, seq_len=60, n_transient=30, batch=1, lr=0.05, input="zero", gradient="full")
    with torch.no_grad():
        before = lyapunov_spectrum(m, None, 1, n_steps=1000, n_transient=300, batch=4, generator=gen(5))[0, 0]
    assert before < -0.3
    floss(m, 40, config=cfg, generator=gen(1))  # default params ("W", "U", "b") exist in every cell
    floss(m, 20, config=cfg, generator=gen(2), optimizer=torch.optim.Adam([m.W, m.U, m.b], lr=cfg.lr))
    with torch.no_grad():
        after = lyapunov_spectrum(m, None, 1, n_steps=1000, n_transient=300, batch=4, generator=gen(5),
                                  reduce="none")[0, :, 0]  # (B,): every start settles at lambda_1 ~ 0
    assert after.abs().max() < 0.02, after


@gated_cells
def test_short_delay_copy_task_is_learned(name, make):
    m = make(1, 16, 1, 2, gen(0), torch.float32)
    task = TaskConfig(name="copy", delay=2, seq_len=20, batch=16)
    h = train(m, task, config=TrainConfig(n_steps=100, lr=0.01, clip=None, record_every=0),
              schedule=FlossSchedule.none(), generator=gen(1), **QUIET)
    assert (h.accuracy[:5].mean(0) < 0.8).all()
    assert (h.accuracy[-10:].mean(0) > 0.95).all()
    assert not h.failed.any()


@gated_cells
def test_training_with_flossing_schedule_runs(name, make):
    m = make(1, 8, 1, 2, gen(0), F64)
    task = TaskConfig(name="xor", delay=4, seq_len=16, batch=4)
    h = train(m, task, config=TrainConfig(n_steps=6, record_every=3, record_k=2),
              floss_config=FlossConfig(k=3, seq_len=20, n_transient=5),
              schedule=FlossSchedule(pre_steps=2, every=3, episode_steps=2, max_episodes=1, weight=0.1),
              generator=gen(1), **QUIET)
    assert h.exponents.shape == (3, 2, 2) and torch.isfinite(h.exponents).all()
    assert not h.failed.any()


@gated_cells
def test_diagnostics_work_unchanged(name, make):
    m = make(2, 5, 1, 2, gen(3), F64)
    x = torch.randn(2, 1, 40, 2, generator=gen(4), dtype=F64)
    h0 = m.initial_state(1, gen(5))
    profile = gradient_norm_profile(m, x, h0=h0, generator=gen(6))
    assert profile.shape == (2, 40) and torch.isfinite(profile).all()
    S = m.state_size
    log_sv = long_term_jacobian_singular_values(m, x, S, h0=h0)  # (E, B, T, S)
    with torch.no_grad():
        lam = lyapunov_spectrum(m, x, S, h0=h0, n_transient=0, reduce="none")  # (E, B, S)
    # both give log |det J_T ... J_1|: the sum of all log singular values, and T times the sum of all exponents
    torch.testing.assert_close(log_sv[:, :, -1].sum(-1), 40 * lam.sum(-1), atol=1e-9, rtol=0)


def test_lstm_readout_reads_only_h():
    m = LSTM(1, 4, 2, n_networks=2, generator=gen(8), dtype=F64)
    h = torch.randn(2, 3, 8, generator=gen(9), dtype=F64)
    h2 = h.clone()
    h2[..., 4:] += 1.0  # change c only
    torch.testing.assert_close(m.readout(h), m.readout(h2), atol=0, rtol=0)
    assert m.readout(h).shape == (2, 3, 2)


def test_sizes_and_parameter_shapes():
    lstm = LSTM(3, 5, 2, n_networks=4, generator=gen(0))
    gru = GRU(3, 5, 2, n_networks=4, generator=gen(0))
    assert (lstm.state_size, lstm.input_size, lstm.output_size, lstm.n_networks) == (10, 3, 2, 4)
    assert (gru.state_size, gru.input_size, gru.output_size, gru.n_networks) == (5, 3, 2, 4)
    assert lstm.W.shape == (4, 20, 5) and lstm.U.shape == (4, 20, 3) and lstm.b.shape == (4, 20)
    assert gru.W.shape == (4, 15, 5) and gru.b_h.shape == (4, 15) and gru.h0.shape == (4, 5)
    assert lstm.V.shape == (4, 2, 5) and lstm.h0.shape == (4, 10) and lstm.train_state(7).shape == (4, 7, 10)
    bound = 1 / math.sqrt(5)
    assert lstm.W.abs().max() <= bound and gru.U.abs().max() <= bound
    assert torch.equal(LSTM(3, 5, 2, gain=0.5, generator=gen(0)).W, 0.5 * LSTM(3, 5, 2, generator=gen(0)).W)


@pytest.mark.parametrize("cls", [LSTM, GRU])
@pytest.mark.parametrize("kw", [dict(n_hidden=0), dict(n_in=-1), dict(gain=-1.0), dict(gain=float("nan")),
                                dict(n_networks=0)])
def test_bad_constructor_arguments_raise(cls, kw):
    args = dict(n_in=1, n_hidden=4, n_out=1)
    args.update(kw)
    with pytest.raises(ValueError):
        cls(args.pop("n_in"), args.pop("n_hidden"), args.pop("n_out"), **args)


# -- a user cell that provides only `step` (and the attributes training needs) ------------------------------------

class LeakyTanh(torch.nn.Module):
    """h' = (1 - a) h + a tanh(W h + U s + b), written by a user: no step_tangent, no jacobian."""

    def __init__(self, n_in, n, n_out, n_networks, generator, alpha=0.5, gain=0.5):
        super().__init__()
        E = n_networks
        self.W = torch.nn.Parameter(torch.randn(E, n, n, generator=generator, dtype=F64) * gain / math.sqrt(n))
        self.U = torch.nn.Parameter(torch.randn(E, n, n_in, generator=generator, dtype=F64))
        self.b = torch.nn.Parameter(torch.zeros(E, n, dtype=F64))
        self.V = torch.nn.Parameter(torch.randn(E, n_out, n, generator=generator, dtype=F64) / math.sqrt(n))
        self.c = torch.nn.Parameter(torch.zeros(E, n_out, dtype=F64))
        self.h0 = torch.nn.Parameter(torch.zeros(E, n, dtype=F64))
        self.alpha = alpha
        self.n_networks, self.state_size, self.input_size, self.output_size = E, n, n_in, n_out

    def step(self, h, x):
        drive = h @ self.W.transpose(1, 2) + x @ self.U.transpose(1, 2) + self.b.unsqueeze(1)
        return (1 - self.alpha) * h + self.alpha * torch.tanh(drive)

    def readout(self, h):
        return h @ self.V.transpose(1, 2) + self.c.unsqueeze(1)

    def initial_state(self, batch, generator=None):
        return torch.randn(self.n_networks, batch, self.state_size, generator=generator, dtype=F64)

    def train_state(self, batch):
        return self.h0.unsqueeze(1).expand(-1, batch, -1)


def test_cell_with_only_step_works_end_to_end():
    m = LeakyTanh(1, 4, 1, 2, gen(30))
    assert not hasattr(m, "step_tangent")
    # spectrum: zero input, b = 0, so h = 0 is the fixed point with Jacobian (1 - a) I + a W
    with torch.no_grad():
        lam = lyapunov_spectrum(m, None, 4, n_steps=600, n_transient=300, h0=torch.zeros(2, 1, 4, dtype=F64),
                                generator=gen(31))  # (E, 4), started at the fixed point
    J = 0.5 * torch.eye(4, dtype=F64) + 0.5 * m.W.detach()
    expected = torch.linalg.eigvals(J).abs().log().sort(dim=-1, descending=True).values
    torch.testing.assert_close(lam, expected, atol=1e-3, rtol=0)
    # flossing (jvp path) lowers the flossing loss of every network
    cfg = FlossConfig(k=1, seq_len=30, n_transient=10, lr=0.05, input="zero")
    res = floss(m, 20, config=cfg, generator=gen(32))
    assert (res.loss[-5:].mean(0) < 0.3 * res.loss[:3].mean(0)).all()
    # training (a fresh net) on a short copy task
    m = LeakyTanh(1, 8, 1, 2, gen(30))
    task = TaskConfig(name="copy", delay=2, seq_len=20, batch=16)
    h = train(m, task, config=TrainConfig(n_steps=80, lr=0.02, clip=None, record_every=0),
              schedule=FlossSchedule.none(), generator=gen(33), **QUIET)
    assert (h.accuracy[-10:].mean(0) > 0.9).all() and (h.accuracy[:5].mean(0) < 0.8).all()


def test_flossing_loss_of_a_gated_net_is_differentiable_in_all_its_parameters():
    m = GRU(1, 4, 1, n_networks=2, generator=gen(40), dtype=F64)
    x = torch.randn(2, 1, 30, 1, generator=gen(42), dtype=F64)
    lam = lyapunov_spectrum(m, x, 2, generator=gen(41))
    flossing_loss(lam).sum().backward()
    for name in ("W", "U", "b", "b_h"):
        assert getattr(m, name).grad is not None and getattr(m, name).grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls, gate", [(LSTM, "forget"), (GRU, "update")])
def test_memory_bias_shifts_only_the_gate_that_keeps_the_state(cls, gate):
    plain = cls(2, 5, 1, n_networks=2, generator=gen(90), dtype=F64)
    biased = cls(2, 5, 1, n_networks=2, generator=gen(90), dtype=F64, memory_bias=1.0)
    H = 5
    torch.testing.assert_close(biased.b[:, H:2 * H], plain.b[:, H:2 * H] + 1.0, atol=1e-15, rtol=0)
    torch.testing.assert_close(biased.b[:, :H], plain.b[:, :H], atol=0, rtol=0)
    torch.testing.assert_close(biased.b[:, 2 * H:], plain.b[:, 2 * H:], atol=0, rtol=0)
    x = torch.randn(2, 3, 40, 2, generator=gen(91), dtype=F64)
    stats = gate_statistics(plain, x, generator=gen(92)), gate_statistics(biased, x, generator=gen(92))
    assert stats[1][gate].gt(stats[0][gate]).all()  # the gate opens further, per network
    assert set(stats[0]) == ({"input", "forget", "candidate", "output", "abs_cell"} if cls is LSTM
                             else {"reset", "update", "candidate"})


def test_gate_statistics_are_the_means_of_the_gates_along_the_trajectory():
    m = LSTM(1, 4, 1, n_networks=2, generator=gen(93), dtype=F64)
    x = torch.randn(2, 2, 6, 1, generator=gen(94), dtype=F64)
    h0 = torch.randn(2, 2, 8, generator=gen(95), dtype=F64)
    stats = gate_statistics(m, x, h0=h0)
    h, forget, cell = h0, [], []
    for t in range(6):
        a = h[..., :4] @ m.W.transpose(1, 2) + x[:, :, t] @ m.U.transpose(1, 2) + m.b.unsqueeze(1)
        f = torch.sigmoid(a[..., 4:8])
        c = f * h[..., 4:] + torch.sigmoid(a[..., :4]) * torch.tanh(a[..., 8:12])
        h = torch.cat([torch.sigmoid(a[..., 12:]) * torch.tanh(c), c], -1)
        forget.append(f.mean((1, 2)))
        cell.append(c.abs().mean((1, 2)))
    torch.testing.assert_close(stats["forget"], torch.stack(forget).mean(0), atol=1e-14, rtol=0)
    torch.testing.assert_close(stats["abs_cell"], torch.stack(cell).mean(0), atol=1e-14, rtol=0)
    with pytest.raises(ValueError, match="no gates"):
        gate_statistics(TanhRNN(1, 4, 1), x)
    with pytest.raises(ValueError, match="memory_bias applies to gated cells"):
        ModelConfig(cell="tanh", memory_bias=1.0)
    assert ModelConfig(cell="lstm", n_hidden=4, memory_bias=1.0).build(1, 1).memory_bias == 1.0
