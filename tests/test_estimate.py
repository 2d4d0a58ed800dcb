"""spectrum_estimate: calibrated standard errors, finite-time exponents, runs to a target error, derived quantities
with errors, the engines' window report, and the argument checks."""
import time
import warnings

import pytest
import torch

from helpers import Linear

import floss_core as fc
from floss_core.spectrum import kaplan_yorke_dimension, lyapunov_spectrum, positive_exponent_sum, spectrum_estimate
from floss_core.spectrum.batch_means import batch_means, cell_blocks


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def replicas(model, R):
    """A TanhRNN holding R copies of every network of ``model`` (network e's copies are rows e R .. e R + R - 1)."""
    big = fc.TanhRNN(model.input_size, model.state_size, 1, n_networks=model.n_networks * R, dtype=model.W.dtype)
    with torch.no_grad():
        for name in ("W", "U", "b"):
            getattr(big, name).copy_(getattr(model, name).repeat_interleave(R, 0))
    return big


def z_scores(est, E, R):
    """(estimate - mean over the R runs) / stderr, scaled by sqrt(R / (R - 1)) for the mean's own error."""
    lam, se = est.exponents.detach().reshape(E, R, -1), est.stderr.reshape(E, R, -1)
    return (lam - lam.mean(1, keepdim=True)) / se * (R / (R - 1)) ** 0.5


@pytest.mark.parametrize("drive, N, gain", [(0.0, 60, 2.5), (1.0, 40, 3.0)], ids=["zero input", "input driven"])
def test_stderr_is_calibrated_over_independent_runs(drive, N, gain):
    E, R, k, T, B = 3, 10, 8, 1000, 2
    gen = torch.Generator().manual_seed(0)
    model = replicas(fc.TanhRNN(1, N, 1, gain=gain, n_networks=E, generator=gen, dtype=torch.float64), R)
    x = None if drive == 0 else drive * torch.randn(E * R, B, T, 1, generator=gen, dtype=torch.float64)
    est = spectrum_estimate(model, x, k, n_steps=T, batch=B, generator=gen)
    assert bool((est.exponents[:, 0] > 0.1).all()), "the networks must be chaotic for this check"
    z = z_scores(est, E, R)
    assert z.numel() >= 100
    assert 0.7 <= float(z.std()) <= 1.4, f"z-score SD {float(z.std()):.3f} over {z.numel()} values"


def test_derived_quantities_have_calibrated_errors():
    E, R, N, T, B = 5, 10, 40, 1500, 2
    gen = torch.Generator().manual_seed(1)
    model = replicas(fc.TanhRNN(1, N, 1, gain=3.0, n_networks=E, generator=gen, dtype=torch.float64), R)
    x = torch.randn(E * R, B, T, 1, generator=gen, dtype=torch.float64)
    est = spectrum_estimate(model, x, 20, batch=B, generator=gen)
    assert bool((est.exponents[:, 0] > 0.1).all()), "the networks must be chaotic for this check"
    zs = []
    for fn in (kaplan_yorke_dimension, positive_exponent_sum):
        value, se = fn(est)
        assert bool(torch.isfinite(value).all()) and bool((se > 0).all())
        v, s = value.reshape(E, R), se.reshape(E, R)
        zs.append((v - v.mean(1, keepdim=True)) / s * (R / (R - 1)) ** 0.5)
    z = torch.cat(zs).flatten()
    assert 0.7 <= float(z.std()) <= 1.4, f"z-score SD {float(z.std()):.3f} over {z.numel()} values"


def test_stderr_falls_like_one_over_the_root_of_the_steps():
    gen = torch.Generator().manual_seed(2)
    model = fc.TanhRNN(1, 40, 1, gain=3.0, n_networks=4, generator=gen, dtype=torch.float64)
    short = spectrum_estimate(model, None, 4, n_steps=800, batch=2, n_transient=200, generator=gen)
    long = spectrum_estimate(model, None, 4, n_steps=6600, batch=2, n_transient=200, generator=gen)
    ratio = float((short.stderr / long.stderr).median())  # sqrt(6400 / 600) = 3.3
    assert 2.3 < ratio < 4.6


def test_a_single_run_returns_lyapunov_spectrums_exponents_bit_for_bit_and_differentiable():
    gen = torch.Generator().manual_seed(3)
    model = fc.TanhRNN(1, 30, 1, gain=2.0, n_networks=3, generator=gen)
    plain = lyapunov_spectrum(model, None, 6, n_steps=300, batch=2, generator=torch.Generator().manual_seed(4))
    est = spectrum_estimate(model, None, 6, n_steps=300, batch=2, generator=torch.Generator().manual_seed(4))
    assert torch.equal(plain, est.exponents)
    est.exponents.sum().backward()
    assert model.W.grad is not None and bool(torch.isfinite(model.W.grad).all())


def test_derived_quantities_of_a_linear_map_are_exact():
    gen = torch.Generator().manual_seed(5)
    mu = torch.tensor([2.0, 1.5, 0.5, 0.25], dtype=torch.float64)
    P = torch.randn(2, 4, 4, generator=gen, dtype=torch.float64)
    A = P @ torch.diag_embed(mu.expand(2, 4)) @ torch.linalg.inv(P)
    est = spectrum_estimate(Linear(A), None, 4, n_steps=300, generator=gen, method="reference")
    lam = mu.log()
    assert torch.allclose(est.exponents, lam.expand(2, 4), atol=1e-6)
    assert bool((est.stderr < 1e-6).all())
    ky, ky_se = kaplan_yorke_dimension(est)
    assert torch.allclose(ky, torch.full_like(ky, 3 + float(lam[:3].sum() / lam[3].abs())), atol=1e-5)
    h, h_se = positive_exponent_sum(est)
    assert torch.allclose(h, torch.full_like(h, float(lam[:2].sum())), atol=1e-6)
    assert bool((ky_se < 1e-5).all()) and bool((h_se < 1e-6).all())


def test_derived_quantities_are_nan_where_k_misses_exponents():
    gen = torch.Generator().manual_seed(6)
    model = fc.TanhRNN(1, 40, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    est = spectrum_estimate(model, None, 2, n_steps=400, generator=gen)  # both exponents positive
    assert bool(kaplan_yorke_dimension(est).value.isnan().all())
    assert bool(positive_exponent_sum(est).value.isnan().all())


@pytest.mark.parametrize("cell", ["tanh", "tanh reference", "lstm", "gru"])
def test_finite_time_exponents_average_to_the_exponents(cell):
    gen = torch.Generator().manual_seed(7)
    if cell.startswith("tanh"):
        model = fc.TanhRNN(1, 24, 1, gain=2.5, n_networks=5, generator=gen, dtype=torch.float64)
    else:
        model = (fc.LSTM if cell == "lstm" else fc.GRU)(1, 12, 1, n_networks=5, generator=gen, dtype=torch.float64)
    x = torch.randn(5, 2, 400, 1, generator=gen, dtype=torch.float64)
    method = "reference" if cell.endswith("reference") else "fast"
    est = spectrum_estimate(model, x, 5, generator=gen, method=method, group=2)  # 3 sub-batches, own windows
    ft, steps = est.finite_time, est.cell_steps  # (E, B, n, k), (E, n)
    assert ft.shape[:3] == (5, 2, steps.shape[1]) and bool((steps > 0).all())
    mean = (ft * steps[:, None, :, None]).sum(2).mean(1) / steps.sum(1)[:, None]
    assert torch.allclose(mean, est.exponents.detach(), atol=1e-10)
    assert bool((steps.sum(1) == 300).all())  # the 400 - 100 averaged steps
    assert torch.allclose(est.history[-1], est.exponents.detach(), atol=1e-10)


def test_target_stderr_goes_on_until_every_stderr_reaches_the_target():
    gen = torch.Generator().manual_seed(8)
    model = fc.TanhRNN(1, 40, 1, gain=3.0, n_networks=3, generator=gen, dtype=torch.float64)
    first = spectrum_estimate(model, None, 4, n_steps=400, batch=2, generator=torch.Generator().manual_seed(9))
    target = 0.5 * float(first.stderr.amax())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converging does not warn
        est = spectrum_estimate(model, None, 4, n_steps=400, batch=2, generator=torch.Generator().manual_seed(9),
                                target_stderr=target)
    assert bool(est.converged.all()) and bool((est.stderr.amax(-1) <= target).all())
    assert bool((est.n_steps > 400).all()) and int(est.n_steps.max()) <= 16 * 400
    assert est.history.shape[0] == est.history_steps.shape[0] == est.cell_steps.shape[1]


def test_chunks_continue_the_trajectories_of_one_long_run():
    gen = torch.Generator().manual_seed(10)
    model = fc.TanhRNN(1, 30, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    with pytest.warns(UserWarning, match="did not reach"):  # the target is out of reach: every chunk runs
        est = spectrum_estimate(model, None, 4, n_steps=300, batch=2, generator=torch.Generator().manual_seed(11),
                                target_stderr=1e-9, max_steps=1400, method="reference")
    assert est.n_steps.tolist() == [1400, 1400]
    one = lyapunov_spectrum(model, None, 4, n_steps=1400, n_transient=75, batch=2,
                            generator=torch.Generator().manual_seed(11), method="reference")
    assert torch.allclose(est.exponents, one, atol=1e-9)


def test_max_steps_ends_the_run_with_a_warning_and_converged_false():
    gen = torch.Generator().manual_seed(12)
    model = fc.TanhRNN(1, 30, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    with pytest.warns(UserWarning, match="did not reach target_stderr"):
        est = spectrum_estimate(model, None, 3, n_steps=200, generator=gen, target_stderr=1e-6, max_steps=500)
    assert not bool(est.converged.any()) and est.n_steps.tolist() == [500, 500]


def test_tensor_and_callable_inputs_drive_the_continuation():
    gen = torch.Generator().manual_seed(13)
    model = fc.TanhRNN(1, 30, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    x = torch.randn(2, 2, 1000, 1, generator=gen, dtype=torch.float64)
    with pytest.warns(UserWarning):
        from_tensor = spectrum_estimate(model, x, 3, n_steps=300, generator=torch.Generator().manual_seed(1),
                                        target_stderr=1e-6, method="reference")
    assert from_tensor.n_steps.tolist() == [1000, 1000]  # max_steps defaults to the inputs' T
    one = lyapunov_spectrum(model, x, 3, n_transient=75, generator=torch.Generator().manual_seed(1),
                            method="reference")
    assert torch.allclose(from_tensor.exponents, one, atol=1e-9)
    calls = []

    def source(n):  # the next n steps of x
        start = sum(calls)
        calls.append(n)
        return x[:, :, start:start + n]

    with pytest.warns(UserWarning):
        from_callable = spectrum_estimate(model, source, 3, n_steps=300, generator=torch.Generator().manual_seed(1),
                                          target_stderr=1e-6, max_steps=1000, method="reference")
    assert calls[0] == 300 and sum(calls) == 1000
    assert torch.allclose(from_callable.exponents, one, atol=1e-9)


def test_networks_that_reach_the_target_stop_while_the_others_go_on():
    gen = torch.Generator().manual_seed(14)
    model = fc.TanhRNN(1, 30, 1, gain=3.0, n_networks=2, generator=gen, dtype=torch.float64)
    with torch.no_grad():  # network 1: a diagonal contraction, whose stretchings are constant after a few steps
        model.W[1] = torch.diag(0.9 * 0.7 ** torch.arange(30, dtype=torch.float64))
    with pytest.warns(UserWarning, match="1 of 2 networks did not reach"):  # the chaotic one needs more
        est = spectrum_estimate(model, None, 3, n_steps=300, generator=gen, target_stderr=1e-3, max_steps=3000)
    assert est.n_steps[1] == 300 and est.n_steps[0] > 300 and bool(est.converged[1])
    assert bool((est.cell_steps[1, est.cell_steps.shape[1] // 2:] == 0).all())


def test_window_report_of_every_engine_sums_to_the_exponents():
    gen = torch.Generator().manual_seed(15)
    for model, method in [(fc.TanhRNN(1, 20, 1, gain=2.5, n_networks=4, generator=gen), "fast"),
                          (fc.TanhRNN(1, 20, 1, gain=2.5, n_networks=4, generator=gen), "reference"),
                          (fc.LSTM(1, 10, 1, n_networks=4, generator=gen), "fast")]:
        info = {}
        lam = lyapunov_spectrum(model, None, 5, n_steps=300, batch=2, generator=gen, reduce="none", info=info,
                                method=method, group=2)
        mask = info["window_mask"][:, :, None, None].to(info["log_r"])
        assert torch.allclose((info["log_r"] * mask).sum(0) / 225, lam.detach(), atol=1e-5)
        assert info["final_state"].shape == (4, 2, model.state_size)
        Q = info["final_basis"]
        assert torch.allclose(Q.mT @ Q, torch.eye(5).expand(4, 2, 5, 5), atol=1e-3)


def test_batch_means_of_independent_blocks_is_the_standard_error_of_the_mean():
    gen = torch.Generator().manual_seed(16)
    E, n = 200, 64
    x = torch.randn(E, 1, n, 1, generator=gen, dtype=torch.float64)  # i.i.d. unit steps
    mean, se, blocks = batch_means(x, torch.ones(E, n, dtype=torch.float64))
    z = mean / se
    assert 0.85 < float(z.std()) < 1.15 and float(se.mean()) == pytest.approx(1 / n ** 0.5, rel=0.1)


def test_cells_hold_the_windows_that_end_in_them():
    log_r = torch.arange(1.0, 5.0).view(4, 1, 1, 1)  # windows ending at steps 3, 7, 9, 15 (the first starts at 2)
    sums, steps = cell_blocks(log_r, torch.tensor([3, 7, 9, 15]), torch.ones(4, 1, dtype=torch.bool), first=2,
                              width=4, origin=-2)
    assert sums.flatten().tolist() == [1.0, 2.0 + 3.0, 0.0, 4.0] and steps.flatten().tolist() == [2, 6, 0, 6]


def test_estimate_costs_little_beyond_the_plain_call():
    gen = torch.Generator().manual_seed(17)
    model = fc.TanhRNN(1, 80, 1, gain=2.0, n_networks=2, generator=gen)
    plain, extra = [], []
    for r in range(3):
        info = {}
        start = time.perf_counter()
        with torch.no_grad():
            lyapunov_spectrum(model, None, 8, n_steps=1000, batch=2, generator=gen, info=info, reduce="none")
        mid = time.perf_counter()
        sums, steps = cell_blocks(info["log_r"], info["window_ends"], info["window_mask"], first=250, width=64,
                                  origin=-250)
        batch_means(sums, steps)
        plain.append(mid - start)
        extra.append(time.perf_counter() - mid)
    assert min(extra) < 0.1 * min(plain)


@pytest.mark.parametrize("kwargs, message", [
    (dict(target_stderr=0.0), "target_stderr must be a finite number > 0 or None, got 0.0"),
    (dict(target_stderr=-1e-3), "target_stderr must be a finite number > 0 or None, got -0.001"),
    (dict(target_stderr=1e-3, max_steps=100), r"max_steps must be an int >= 200 \(n_steps\), got 100"),
    (dict(max_steps=50), "max_steps must be an int >= 200 or None, got 50"),
    (dict(width=0), "width must be an int >= 1 or None, got 0"),
    (dict(min_blocks=1), "min_blocks must be an int >= 2, got 1"),
    (dict(n_steps=0), "n_steps must be an int >= 1 or None, got 0"),
])
def test_bad_arguments_are_refused_naming_argument_bound_and_value(kwargs, message):
    model = fc.TanhRNN(1, 8, 1, n_networks=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=message):
        spectrum_estimate(model, None, 2, **{"n_steps": 200, **kwargs})


def test_k_beyond_the_state_size_and_too_long_runs_of_tensor_inputs_are_refused():
    model = fc.TanhRNN(1, 8, 1, n_networks=2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"k must be an int with 1 <= k <= 8 \(the state size\), got 9"):
        spectrum_estimate(model, None, 9, n_steps=100)
    x = torch.zeros(2, 1, 100, 1)
    with pytest.raises(ValueError, match=r"n_steps must be an int with 1 <= n_steps <= 100 \(the inputs' T\), got 200"):
        spectrum_estimate(model, x, 2, n_steps=200)
    with pytest.raises(ValueError, match="max_steps must be an int with 50 <= max_steps <= 100.*got 500"):
        spectrum_estimate(model, x, 2, n_steps=50, target_stderr=1e-3, max_steps=500)
