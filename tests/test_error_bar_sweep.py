"""Notebook 08's computation: the error-bar sweep (its conditions, shapes and checks), the tolerance verdicts of its
panel (b), and each difference its "What we found" claims, measured again at a small size."""
import pytest
import torch

from floss_core.diagnostics import tolerance_verdicts
from floss_core.experiments import ErrorBarSweep, build, error_bar_sweep


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny(**changes):
    params = dict(gains=[1.0, 2.0], ks=[1, 2], n_networks=2, floss_steps=3, model={"n_hidden": 12},
                  floss={"seq_len": 20, "n_transient": 5}, spectrum_k=5, spectrum_steps=80, max_steps=300,
                  clv_extra=4, clv_steps=12, clv_transient=10, clv_future=10, clv_every=3)
    return build(ErrorBarSweep, **{**params, **changes})


def test_every_condition_is_measured_with_the_documented_shapes():
    s = tiny()
    res = error_bar_sweep(s)
    E = 4
    assert res["conditions"] == ["before", "k1", "k2"] and res["gains"].tolist() == [1.0, 1.0, 2.0, 2.0]
    for i in range(3):
        assert res["exponents"][i].shape == res["stderr"][i].shape == (E, 5)
        assert bool((res["stderr"][i] > 0).all())
        assert res["projected_steps"][i].shape == res["target_steps"][i].shape == (E,)
        assert bool((res["target_steps"][i] >= 80).all()) and bool((res["target_steps"][i] <= 300).all())
    assert sorted(res["angles"][0]) == ["k1", "k2"] and list(res["angles"][2]) == ["k2"]
    assert res["angles"][0]["k1"].shape == (E, 4)  # 12 steps, every 3rd
    assert bool(((res["angles"][1]["k1"] >= 0) & (res["angles"][1]["k1"] <= torch.pi / 2)).all())
    again = error_bar_sweep(s)
    assert torch.equal(again["stderr"][2], res["stderr"][2]) and torch.equal(again["angles"][2]["k2"],
                                                                               res["angles"][2]["k2"])


@pytest.mark.parametrize("changes, message", [
    (dict(ks=[9]), r"ErrorBarSweep.ks\[0\] must be an int with 1 <= ErrorBarSweep.ks\[0\] <= 8 \(n_hidden - "
                   r"clv_extra\), got 9"),
    (dict(max_steps=50), r"ErrorBarSweep.max_steps must be an int >= 80 \(spectrum_steps\), got 50"),
    (dict(target_stderr=0.0), "ErrorBarSweep.target_stderr must be a finite number > 0, got 0.0"),
    (dict(clv_future=0), "ErrorBarSweep.clv_future must be an int >= 1, got 0"),
])
def test_bad_fields_are_refused_naming_field_bound_and_value(changes, message):
    with pytest.raises(ValueError, match=message):
        tiny(**changes)


def test_tolerance_verdicts_separate_sure_from_undecided_networks():
    dev = torch.tensor([[0.01, 0.02], [0.04, 0.01], [0.06, 0.0], [0.2, 0.0]])  # (networks, k)
    se = torch.tensor([[0.001, 0.001], [0.01, 0.001], [0.01, 0.001], [0.01, 0.001]])
    within, sure, out = tolerance_verdicts(dev, se, 0.05, z=2.0)
    assert within.tolist() == [True, True, False, False]
    assert sure.tolist() == [True, False, False, False]  # 0.04 + 2 x 0.01 > 0.05
    assert out.tolist() == [False, False, False, True]  # 0.06 - 2 x 0.01 < 0.05 < 0.2 - 0.02
    one = tolerance_verdicts(dev[:, 0], se[:, 0], 0.05)
    assert [v.tolist() for v in one] == [[True, True, False, False], [True, False, False, False],
                                         [False, False, False, True]]
    with pytest.raises(ValueError, match="same shape"):
        tolerance_verdicts(dev, se[:, 0], 0.05)


# -- the claims of notebook 08's "What we found", again at a small size: 40 units, gain 1, the author's flossing -------

@pytest.fixture(scope="module")
def small():
    s = build(ErrorBarSweep, gains=[1.0], ks=[1, 4], n_networks=3, floss_steps=300, model={"n_hidden": 40},
              spectrum_k=8, spectrum_steps=2000, max_steps=2000, clv_extra=8, clv_steps=200, clv_transient=200,
              clv_future=200)
    torch.set_num_threads(1)
    return error_bar_sweep(s)


@pytest.mark.parametrize("k", [1, 4])
def test_flossing_k_exponents_from_a_stable_start_opens_the_angle_to_the_other_clvs(small, k):
    before = small["angles"][0][f"k{k}"].median(1).values  # (networks,) median over time
    after = small["angles"][small["conditions"].index(f"k{k}")][f"k{k}"].median(1).values
    assert bool((after > before).all()), (before, after)
    assert float(after.median()) > 2 * float(before.median())


@pytest.mark.parametrize("k", [1, 4])
def test_flossing_k_exponents_from_a_stable_start_shrinks_their_standard_errors(small, k):
    before = small["stderr"][0][:, :k].median(1).values  # (networks,) median over the k flossed exponents
    after = small["stderr"][small["conditions"].index(f"k{k}")][:, :k].median(1).values
    assert bool((after < before).all()), (before, after)
    assert float(after.median()) < 0.75 * float(before.median())
