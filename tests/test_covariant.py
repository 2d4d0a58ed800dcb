"""Covariant Lyapunov vectors (Ginelli's method): exact on a linear map, covariant on the Henon map and on chaotic
tanh RNNs (zero input and input driven) and an LSTM, growth rates that reproduce the exponents, stored subsets, the
angle helpers and the argument checks."""
import math

import pytest
import torch
from torch import nn

from helpers import Linear

import floss_core as fc
from floss_core.spectrum import covariant_vectors, clv_angles, subspace_angle, tangent_step


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


class Henon(nn.Module):
    """x' = 1 - a x^2 + y, y' = b x (E copies): lambda_1 ~ 0.42 and lambda_1 + lambda_2 = log b exactly."""

    def __init__(self, E, a=1.4, b=0.3):
        super().__init__()
        self.ab = nn.Parameter(torch.tensor([a, b], dtype=torch.float64).repeat(E, 1))
        self.n_networks, self.state_size, self.input_size = E, 2, 1

    def step(self, h, x):
        a, b = self.ab[:, 0, None], self.ab[:, 1, None]
        return torch.stack([1 - a * h[..., 0] ** 2 + h[..., 1], b * h[..., 0]], -1)

    def step_tangent(self, h, x, Q):  # J = [[-2 a x, 1], [b, 0]]
        a, b = self.ab[:, 0, None, None], self.ab[:, 1, None, None]
        JQ = torch.stack([-2 * a * h[..., 0, None] * Q[..., 0, :] + Q[..., 1, :], b * Q[..., 0, :]], -2)
        return self.step(h, x), JQ

    def initial_state(self, batch, generator=None):
        return 0.1 * torch.rand(self.n_networks, batch, 2, generator=generator, dtype=torch.float64)


def worst_covariance(model, res, inputs=None):
    """The smallest |cos| between J(state_t) v_i(t) and v_i(t + 1) over consecutive stored times."""
    V = res.vectors  # (E, B, T', S, k)
    E, B = V.shape[:2]
    worst = 1.0
    for t in range(V.shape[2] - 1):
        x = torch.zeros(E, B, model.input_size) if inputs is None else inputs[:, :, int(res.times[t])]
        with torch.no_grad():
            _, JV = tangent_step(model, res.states[:, :, t], x.to(res.states), V[:, :, t].to(res.states))
        cos = (JV.double() * V[:, :, t + 1]).sum(-2).abs() / JV.double().norm(dim=-2)
        worst = min(worst, float(cos.min()))
    return worst


def test_a_linear_map_gives_its_eigenvectors_and_the_logs_of_its_eigenvalues():
    gen = torch.Generator().manual_seed(0)
    mu = torch.tensor([2.0, -1.0, 0.5, 0.25], dtype=torch.float64)
    P = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)  # not orthogonal: the CLVs are not the QR basis
    A = P @ torch.diag_embed(mu.expand(2, 4)) @ torch.linalg.inv(P)
    res = covariant_vectors(Linear(A), None, 3, n_steps=40, batch=2, generator=gen)
    eig = P[:, :, :3] / P[:, :, :3].norm(dim=1, keepdim=True)  # (E, S, k)
    cos = (res.vectors * eig[:, None, None]).sum(-2).abs()  # (E, B, T', k)
    assert float(cos.min()) > 0.9999
    assert torch.allclose(res.clv_exponents, mu[:3].abs().log().expand(2, 3), atol=1e-10)
    assert torch.allclose(res.vectors.norm(dim=-2), torch.ones(()).double())


def test_henon_vectors_are_covariant_and_grow_at_the_exponents():
    gen = torch.Generator().manual_seed(1)
    model = Henon(2)
    res = covariant_vectors(model, None, 2, n_steps=200, batch=2, generator=gen)
    assert worst_covariance(model, res) > 0.999
    long = covariant_vectors(model, None, 2, n_steps=1500, batch=4, n_transient=100, n_future=100, generator=gen,
                             store_every=500)
    assert torch.allclose(long.exponents.sum(-1), torch.full((2,), math.log(0.3), dtype=torch.float64), atol=1e-10)
    assert torch.allclose(long.clv_exponents, long.exponents, atol=2e-3)
    assert bool((long.clv_exponents[:, 0] - 0.419).abs().max() < 0.02)  # the literature's lambda_1 (Sprott)


@pytest.mark.parametrize("drive", [0.0, 1.0], ids=["zero input", "input driven"])
def test_tanh_rnn_vectors_are_covariant_and_grow_at_the_exponents(drive):
    gen = torch.Generator().manual_seed(2)
    model = fc.TanhRNN(1, 30, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    x = drive * torch.randn(2, 2, 1000, 1, generator=gen, dtype=torch.float64)
    res = covariant_vectors(model, x, 6, n_steps=300, n_transient=300, n_future=300, generator=gen)
    assert bool((res.exponents[:, 0] > 0.02).all())
    assert worst_covariance(model, res, x) > 0.999
    assert torch.allclose(res.clv_exponents, res.exponents, atol=0.02)
    spectrum = fc.lyapunov_spectrum(model, x, 6, n_transient=300, generator=gen, method="reference")
    assert torch.allclose(res.exponents, spectrum, atol=0.05)  # another window of the same trajectories' dynamics


def test_lstm_vectors_are_covariant_in_float32():
    gen = torch.Generator().manual_seed(3)
    model = fc.LSTM(1, 8, 1, n_networks=2, generator=gen)
    x = torch.randn(2, 1, 300, 1, generator=gen)
    res = covariant_vectors(model, x, 5, n_steps=100, generator=gen)
    assert res.vectors.dtype == torch.float64 and res.states.dtype == torch.float32
    assert worst_covariance(model, res, x) > 0.999


def test_storing_every_few_steps_keeps_the_same_vectors():
    gen = torch.Generator().manual_seed(4)
    model = fc.TanhRNN(1, 20, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    every = covariant_vectors(model, None, 4, n_steps=60, generator=torch.Generator().manual_seed(5))
    some = covariant_vectors(model, None, 4, n_steps=60, generator=torch.Generator().manual_seed(5), store_every=7)
    assert some.times.tolist() == list(range(60, 120, 7)) and every.times.tolist() == list(range(60, 120))
    assert some.vectors.shape == (2, 1, 9, 20, 4) and some.states.shape == (2, 1, 9, 20)
    assert torch.equal(some.vectors, every.vectors[:, :, ::7]) and torch.equal(some.log_growth, every.log_growth)


def test_angle_helpers_measure_angles_between_vectors_and_subspaces():
    c, s = math.cos(0.3), math.sin(0.3)
    V = torch.tensor([[1.0, c, 0.0], [0.0, s, 0.0], [0.0, 0.0, 2.0]], dtype=torch.float64)  # columns: vectors
    angles = clv_angles(V)
    assert angles[0, 1] == pytest.approx(0.3) and angles[0, 2] == pytest.approx(math.pi / 2)
    assert float(subspace_angle(V, 1)) == pytest.approx(0.3)  # e1 against span(v2, e3)
    assert float(subspace_angle(V, 2)) == pytest.approx(math.pi / 2)  # the plane against e3


@pytest.mark.parametrize("kwargs, message", [
    (dict(k=9), r"k must be an int with 1 <= k <= 8 \(the state size\), got 9"),
    (dict(n_future=0), "n_future must be an int >= 1, got 0"),
    (dict(n_steps=0), "n_steps must be an int >= 1, got 0"),
    (dict(n_transient=-1), "n_transient must be an int >= 0, got -1"),
    (dict(store_every=0), "store_every must be an int >= 1, got 0"),
    (dict(inputs=torch.zeros(2, 1, 50, 1)), r"inputs need T >= n_transient \+ n_steps \+ n_future = 60 steps, got 50"),
])
def test_bad_arguments_are_refused_naming_argument_bound_and_value(kwargs, message):
    model = fc.TanhRNN(1, 8, 1, n_networks=2, generator=torch.Generator().manual_seed(0))
    args = {"inputs": None, "k": 2, "n_steps": 20, **kwargs}
    with pytest.raises(ValueError, match=message):
        covariant_vectors(model, args.pop("inputs"), args.pop("k"), **args)
    with pytest.raises(ValueError, match="j must be an int with 1 <= j <= 2"):
        subspace_angle(torch.randn(4, 3), 3)
