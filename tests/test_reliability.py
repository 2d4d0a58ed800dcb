"""Bad inputs found by probing the public API give a clear ValueError up front, and legitimate inputs that used to fail
or give wrong answers give the right one (issue: "silent wrong answers and late errors")."""
import math
import warnings

import pytest
import torch

from floss_core import (FlossConfig, FlossSchedule, ModelConfig, TanhRNN, TaskConfig, TrainConfig, floss,
                        lyapunov_spectrum, train)
from floss_core.cells import GRU, LSTM
from floss_core.diagnostics import gradient_norm_profile, steps_to_criterion, success

F64 = torch.float64


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# 1. a negative clipping norm flipped every gradient -------------------------------------------------------------

@pytest.mark.parametrize("clip", [-0.03, math.nan, math.inf, "0.03", True])
def test_bad_clip_is_rejected_when_the_config_is_built(clip):
    with pytest.raises(ValueError, match=r"TrainConfig\.clip must be a finite number >= 0"):
        TrainConfig(clip=clip)


def test_clip_none_and_zero_still_mean_no_clipping():
    assert TrainConfig(clip=None).clip is None and TrainConfig(clip=0).clip == 0


# 2. History.accuracy is (steps, networks): success and steps_to_criterion must not read it transposed ---------

def test_success_takes_a_history_and_refuses_an_unlabelled_tensor():
    m = ModelConfig(n_hidden=8).build(1, 1, n_networks=3, generator=gen(1))
    h = train(m, TaskConfig(name="copy", delay=2, seq_len=12, batch=4), config=TrainConfig(n_steps=5, record_every=0),
              schedule=FlossSchedule.none(), generator=gen(2), progress=False)
    assert h.accuracy.shape == (5, 3)
    assert success(h, 0.5).shape == (3,)  # one value per network
    torch.testing.assert_close(steps_to_criterion(h, 0.5), steps_to_criterion(h.accuracy.T, 0.5, steps_dim=1))
    torch.testing.assert_close(steps_to_criterion(h.accuracy, 0.5, steps_dim=0), steps_to_criterion(h, 0.5))
    with pytest.raises(ValueError, match="steps_dim=0 for History.accuracy"):
        success(h.accuracy, 0.5)
    with pytest.raises(ValueError, match="steps_dim"):
        steps_to_criterion(h.accuracy, 0.5, steps_dim=2)


# 3. configs are validated when built ------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(k=4.0), r"FlossConfig\.k must be an int >= 1, got 4\.0"),
    (dict(k=0), r"FlossConfig\.k must be an int >= 1"),
    (dict(lr_final=-1e-4), r"FlossConfig\.lr_final must be a finite number > 0 or None"),
    (dict(lr_final=0.0), r"FlossConfig\.lr_final must be a finite number > 0 or None"),
    (dict(lr=0.0), r"FlossConfig\.lr must be a finite number > 0"),
    (dict(target=math.nan), r"FlossConfig\.target must be a finite number"),
    (dict(n_transient=55), r"FlossConfig\.n_transient must be an int with 0 <= FlossConfig\.n_transient <= 54"),
    (dict(gradient="partial"), r"FlossConfig\.gradient must be one of 'full', 'detached'"),
    (dict(method="slow"), r"FlossConfig\.method must be one of"),
    (dict(params="W"), r"FlossConfig\.params must be a non-empty tuple"),
    (dict(input="noise"), r"FlossConfig\.input must be one of 'task', 'zero'"),
    (dict(t_ons=0), r"FlossConfig\.t_ons"),
])
def test_bad_floss_config_raises_naming_the_field(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FlossConfig(**kwargs)


@pytest.mark.parametrize("cls, kwargs, match", [
    (FlossSchedule, dict(weight=math.nan), r"FlossSchedule\.weight must be a finite number >= 0"),
    (FlossSchedule, dict(pre_steps=-1), r"FlossSchedule\.pre_steps must be an int >= 0"),
    (TrainConfig, dict(record_every=-1), r"TrainConfig\.record_every must be an int >= 0"),
    (TrainConfig, dict(record_k=0), r"TrainConfig\.record_k must be an int >= 1"),
    (TrainConfig, dict(n_steps=10.0), r"TrainConfig\.n_steps must be an int >= 0"),
    (TrainConfig, dict(lr=-1e-3), r"TrainConfig\.lr must be a finite number > 0"),
    (TrainConfig, dict(train_h0="yes"), r"TrainConfig\.train_h0 must be True or False"),
    (ModelConfig, dict(n_hidden=0), r"ModelConfig\.n_hidden must be an int >= 1"),
    (ModelConfig, dict(cell="rnn"), r"ModelConfig\.cell must be one of 'tanh', 'lstm', 'gru'"),
    (ModelConfig, dict(gain=math.nan), r"ModelConfig\.gain must be a finite number >= 0"),
    (ModelConfig, dict(dtype="float16"), r"ModelConfig\.dtype must be one of"),
])
def test_bad_configs_raise_naming_the_field(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)


def test_constant_learning_rate_decay_to_lr_final_is_honoured():
    m = TanhRNN(1, 6, 1, generator=gen(3), dtype=F64)
    opt = torch.optim.Adam([m.W, m.U, m.b], lr=1.0)
    floss(m, 3, config=FlossConfig(k=2, seq_len=12, n_transient=4, lr=1e-3, lr_final=1e-5), generator=gen(4),
          optimizer=opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)  # the last step ran at lr_final


def test_unknown_flossed_parameter_is_a_clear_error_in_train_too():
    m = TanhRNN(1, 8, 1, generator=gen(5))
    task = TaskConfig(name="copy", delay=2, seq_len=10, batch=2)
    with pytest.raises(ValueError, match=r"no parameter named \['Z'\]"):
        train(m, task, config=TrainConfig(n_steps=2), floss_config=FlossConfig(k=2, params=("W", "Z")),
              schedule=FlossSchedule.none(), generator=gen(6), progress=False)


# 4. recording the exponents of a small model with the default FlossConfig (k = 75) -----------------------------

def test_default_floss_config_records_at_most_the_state_size_without_flossing():
    m = TanhRNN(1, 32, 1, generator=gen(7))
    h = train(m, TaskConfig(name="copy", delay=2, seq_len=10, batch=2), config=TrainConfig(n_steps=2),
              schedule=FlossSchedule.none(), generator=gen(8), progress=False)
    assert h.exponents.shape == (2, 1, 32)  # steps 0 and 1, one network, min(FlossConfig.k = 75, S = 32)


def test_too_large_k_is_named_before_any_training():
    m = TanhRNN(1, 32, 1, generator=gen(9))
    task = TaskConfig(name="copy", delay=2, seq_len=10, batch=2)
    with pytest.raises(ValueError, match=r"TrainConfig\.record_k must be an int with 1 <= TrainConfig\.record_k <= 32"):
        train(m, task, config=TrainConfig(n_steps=2, record_k=40), schedule=FlossSchedule.none(), progress=False)
    with pytest.raises(ValueError, match=r"FlossConfig\.k must be an int with 1 <= FlossConfig\.k <= 32"):
        train(m, task, config=TrainConfig(n_steps=2), schedule=FlossSchedule.pre(2), progress=False)


# 5. the reference engine no longer returns a collapsed basis at a large t_ons -------------------------------------

def test_reference_spectrum_at_a_large_t_ons_equals_t_ons_1():
    m = TanhRNN(1, 8, 1, gain=3.0, n_networks=2, generator=gen(10), dtype=F64)
    kw = dict(n_steps=400, n_transient=100, method="reference")
    with torch.no_grad():
        exact = lyapunov_spectrum(m, None, 8, t_ons=1, generator=gen(11), **kw)
        large = lyapunov_spectrum(m, None, 8, t_ons=50, generator=gen(11), **kw)
    torch.testing.assert_close(large, exact, atol=1e-9, rtol=0)


# 6. dtypes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [TanhRNN, LSTM, GRU])
def test_dtype_may_be_a_string_and_half_precision_is_refused(cls):
    assert cls(1, 4, 1, dtype="float64").W.dtype == F64
    for bad in (torch.float16, torch.bfloat16, "float16", "double"):
        with pytest.raises(ValueError, match="dtype must be one of"):
            cls(1, 4, 1, dtype=bad)


# 7. a list of generators, one per network, wherever a generator is taken ------------------------------------------

@pytest.mark.parametrize("cls", [TanhRNN, LSTM, GRU])
def test_ensemble_built_from_a_list_of_generators_equals_networks_built_alone(cls):
    ens = cls(2, 5, 1, n_networks=3, generator=[gen(20 + e) for e in range(3)], dtype=F64)
    for e in range(3):
        one = cls(2, 5, 1, n_networks=1, generator=gen(20 + e), dtype=F64)
        for name, p in one.named_parameters():
            torch.testing.assert_close(getattr(ens, name)[e:e + 1], p, atol=0, rtol=0)


# t_ons = 1: the same operations alone and in the ensemble, equal to roundoff. t_ons = "auto" (the default): the
# networks of a sub-batch share their QR windows, so alone and in an ensemble the windows differ; each answer is
# within ~1e-10 of the t_ons = 1 exponents (the engine's documented accuracy), so they may differ by a few 1e-10
# (measured: 1.4e-10 on one CPU, ~1e-11 on another). A network given another network's draws would differ by O(0.1).
@pytest.mark.parametrize("method, t_ons, atol", [("reference", 1, 1e-12), ("fast", 1, 1e-12), ("fast", "auto", 1e-9)])
def test_spectrum_with_a_list_of_generators_equals_each_network_alone(method, t_ons, atol):
    ens = TanhRNN(1, 6, 1, gain=1.5, n_networks=3, generator=[gen(30 + e) for e in range(3)], dtype=F64)
    with torch.no_grad():
        lam = lyapunov_spectrum(ens, None, 3, n_steps=60, batch=2, generator=[gen(40 + e) for e in range(3)],
                                method=method, t_ons=t_ons)
        for e in range(3):
            one = TanhRNN(1, 6, 1, gain=1.5, generator=gen(30 + e), dtype=F64)
            alone = lyapunov_spectrum(one, None, 3, n_steps=60, batch=2, generator=gen(40 + e), method=method,
                                      t_ons=t_ons)
            torch.testing.assert_close(lam[e:e + 1], alone, atol=atol, rtol=0)
    profile = gradient_norm_profile(ens, None, n_steps=10, generator=[gen(50 + e) for e in range(3)])
    alone = gradient_norm_profile(TanhRNN(1, 6, 1, gain=1.5, generator=gen(31), dtype=F64), None, n_steps=10,
                                  generator=gen(51))
    torch.testing.assert_close(profile[1:2], alone, atol=1e-12, rtol=0)


@pytest.mark.parametrize("bad, match", [([gen(1)], "list of 3"), ("seed", "torch.Generator")])
def test_a_wrong_generator_argument_is_named(bad, match):
    with pytest.raises(ValueError, match=match):
        TanhRNN(1, 4, 1, n_networks=3, generator=bad)
    with pytest.raises(ValueError, match=match):
        lyapunov_spectrum(TanhRNN(1, 4, 1, n_networks=3), None, 2, n_steps=10, generator=bad)


# 8. saturated networks fail visibly; floss says when every network has failed -----------------------------------

def test_a_network_whose_gradient_norm_overflows_is_marked_failed():
    m = TanhRNN(1, 16, 1, n_networks=2, generator=gen(60))
    with torch.no_grad():
        m.V[1].mul_(1e19)  # finite weights whose gradient norm overflows float32
    h = train(m, TaskConfig(name="copy", delay=2, seq_len=20, batch=4), config=TrainConfig(n_steps=3, record_every=0),
              schedule=FlossSchedule.none(), generator=gen(61), progress=False)
    assert not math.isfinite(float(h.grad_norm[0, 1]))
    assert h.failed.tolist() == [False, True] and h.failed_step.tolist() == [-1, 0]


def test_floss_warns_when_every_network_has_failed():
    m = TanhRNN(1, 8, 1, n_networks=2, generator=gen(62))
    with torch.no_grad():
        m.W.fill_(math.nan)
    with pytest.warns(RuntimeWarning, match="all 2 networks have failed"):
        res = floss(m, 2, config=FlossConfig(k=2, seq_len=10, n_transient=2), generator=gen(63))
    assert res.failed.all()
    healthy = TanhRNN(1, 8, 1, n_networks=2, generator=gen(64))
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        floss(healthy, 2, config=FlossConfig(k=2, seq_len=10, n_transient=2), generator=gen(65))
