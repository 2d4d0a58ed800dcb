"""The flossing sweep of figures 1 and 2: its (k, target) runs, its validation, per-gain gradient modes, and that
every target's networks reach their own target."""
import pytest
import torch

from floss_core.experiments import FlossingSweep, build, flossing_sweep

N = 8  # hidden units of the tiny sweeps


def tiny(**changes):
    params = dict(gains=[0.5, 2.0], ks=[1, 2], targets=[0.0, -0.5], n_networks=2, floss_steps=3,
                  model={"n_hidden": N}, floss={"seq_len": 12, "n_transient": 3}, spectrum_k=4, spectrum_steps=30,
                  horizon=10, sv_every=2)
    return build(FlossingSweep, **{**params, **changes})


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_every_k_is_flossed_to_every_target_from_the_same_networks():
    res = flossing_sweep(tiny(), progress=False)
    E = 4  # 2 gains x 2 networks
    assert res["runs"] == [(1, 0.0), (1, -0.5), (2, 0.0), (2, -0.5)]
    assert res["targets"] == [0.0, -0.5] and res["ks"] == [1, 2]
    for key in ("floss_exponents", "spectrum_after", "profile_after", "log_sv_after", "failed"):
        assert len(res[key]) == 4, key
    for (k, _), lam in zip(res["runs"], res["floss_exponents"]):
        assert lam.shape == (3, E, k)
    assert res["spectrum_before"].shape == (E, 4) and res["spectrum_after"][1].shape == (E, 4)
    # each target draws its own flossing inputs (its stage names the target), so the runs differ from the start
    assert not torch.equal(res["floss_exponents"][0][0], res["floss_exponents"][1][0])


def test_target_ks_floss_only_those_ks_to_every_target_with_the_same_numbers():
    every, some = tiny(), tiny(target_ks=[1])
    assert some.runs == [(1, 0.0), (1, -0.5), (2, 0.0)]
    res_every, res_some = flossing_sweep(every, progress=False), flossing_sweep(some, progress=False)
    assert res_some["runs"] == some.runs and len(res_some["spectrum_after"]) == 3
    for run, lam in zip(res_some["runs"], res_some["floss_exponents"]):  # a run's numbers do not depend on the others
        assert torch.equal(lam, res_every["floss_exponents"][res_every["runs"].index(run)])


@pytest.mark.parametrize("changes, message", [
    ({"targets": []}, "FlossingSweep.targets must be a non-empty list"),
    ({"targets": [0.0, float("nan")]}, "FlossingSweep.targets[1] must be a finite number"),
    ({"targets": [0.0, "zero"]}, "FlossingSweep.targets[1]"),
    ({"targets": [-0.5, -0.5]}, "FlossingSweep.targets must not repeat a value"),
    ({"ks": [1, 1]}, "FlossingSweep.ks must not repeat a value"),
    ({"target_ks": [3]}, "FlossingSweep.target_ks[0] must be one of 1, 2, got 3"),
    ({"gradients": ["full"]}, "FlossingSweep.gradients must give one gradient mode per gain (2)"),
    ({"gradients": ["full", "exact"]}, "FlossingSweep.gradients[1] must be one of 'full', 'detached'"),
    ({"gradients": "full"}, "FlossingSweep.gradients must be a non-empty list"),
])
def test_bad_targets_and_gradients_are_refused_naming_the_field(changes, message):
    with pytest.raises(ValueError) as err:
        tiny(**changes)
    assert message in str(err.value)


def test_each_gain_gets_the_numbers_of_a_sweep_flossing_every_gain_with_its_mode():
    """Shards of one gain each (shard_size = n_networks): the g = 0.5 networks of a ("full", "detached") sweep are
    those of an all-"full" sweep, the g = 2 ones those of an all-"detached" one, bit for bit."""
    mixed = flossing_sweep(tiny(gradients=["full", "detached"], shard_size=2, targets=[0.0]), progress=False)
    full = flossing_sweep(tiny(floss={"seq_len": 12, "n_transient": 3, "gradient": "full"}, shard_size=2,
                               targets=[0.0]), progress=False)
    detached = flossing_sweep(tiny(floss={"seq_len": 12, "n_transient": 3, "gradient": "detached"}, shard_size=2,
                                   targets=[0.0]), progress=False)
    assert mixed["gradients"] == ["full", "full", "detached", "detached"]
    for i in range(2):
        for key in ("floss_exponents", "spectrum_after"):
            first, second = (slice(None), slice(0, 2)), (slice(None), slice(2, 4))
            if key == "spectrum_after":
                first, second = first[1:], second[1:]
            assert torch.equal(mixed[key][i][first], full[key][i][first]), key
            assert torch.equal(mixed[key][i][second], detached[key][i][second]), key
            assert not torch.equal(full[key][i][second], detached[key][i][second]), key


def test_singular_values_only_for_sv_gains_and_the_same_as_measuring_all():
    some = flossing_sweep(tiny(sv_gains=[2.0], shard_size=2, ks=[2], targets=[0.0]), progress=False)
    every = flossing_sweep(tiny(shard_size=2, ks=[2], targets=[0.0]), progress=False)
    for key in ("log_sv_before", "log_sv_after"):
        a, b = (some[key], every[key]) if key == "log_sv_before" else (some[key][0], every[key][0])
        assert a.shape == b.shape == (4, len(some["sv_times"]), 4)
        assert a[:2].isnan().all() and torch.equal(a[2:], b[2:]), key
    with pytest.raises(ValueError, match=r"FlossingSweep.sv_gains\[0\] must be one of 0.5, 2.0, got 1.0"):
        tiny(sv_gains=[1.0])


def test_a_shard_mixing_gradient_modes_floss_each_mode_apart():
    """One shard holding both gains (shard_size 4): the networks of each mode are flossed as their own ensemble, so
    the result does not depend on which mode the neighbours use (up to roundoff of the ensemble's size)."""
    mixed = flossing_sweep(tiny(gradients=["full", "detached"], shard_size=4, targets=[0.0], ks=[1]), progress=False)
    apart = flossing_sweep(tiny(gradients=["full", "detached"], shard_size=2, targets=[0.0], ks=[1]), progress=False)
    torch.testing.assert_close(mixed["floss_exponents"][0], apart["floss_exponents"][0], rtol=1e-4, atol=1e-5)


def test_networks_reach_their_own_target():
    """lambda_1 of every network, measured on long trajectories after flossing, ends within 0.2 of its own target
    (0 or -0.5, targets 0.5 apart), from below both (g = 0.5, lambda_1 ~ -0.75 to -1.1) and between them (g = 1,
    ~ -0.35 to -0.45): full gradient, task inputs, lr 1e-2 to be quick. Measured: within 0.16 (target 0, whose
    60-step flossing estimates are biased upward) and 0.025 (target -0.5)."""
    sweep = build(FlossingSweep, gains=[0.5, 1.0], ks=[1], targets=[0.0, -0.5], n_networks=3, floss_steps=60,
                  model={"n_hidden": 16}, floss={"lr": 1e-2, "seq_len": 40, "n_transient": 10}, spectrum_k=2,
                  spectrum_steps=400, horizon=10, sv_every=5)
    res = flossing_sweep(sweep, progress=False)
    before = res["spectrum_before"][:, 0]
    assert (before[:3] < -0.6).all() and (before[3:] > -0.5).all() and (before[3:] < -0.2).all()
    for (k, target), after in zip(res["runs"], res["spectrum_after"]):
        assert (after[:, 0] - target).abs().max() < 0.2, (target, after[:, 0])
