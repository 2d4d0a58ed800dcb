"""The numbers-file statistics: labels, Wilson intervals, Fisher p, and the caption text."""
import numpy as np
import pytest
import scipy.stats

from floss_core.repro.numbers import difference_numbers, mean_numbers, rate_numbers, rate_text


def test_rate_numbers_carry_the_wilson_interval_of_the_count():
    ok = np.array([True] * 7 + [False] * 2)
    out = rate_numbers("copy_pre_d40", ok)
    ci = scipy.stats.binomtest(7, 9).proportion_ci(method="wilson")
    assert out["copy_pre_d40_successes"] == 7 and out["copy_pre_d40_n"] == 9
    assert out["copy_pre_d40_low"] == pytest.approx(ci.low) and out["copy_pre_d40_high"] == pytest.approx(ci.high)
    assert out["copy_pre_d40_low"] < 7 / 9 < out["copy_pre_d40_high"]


def test_difference_numbers_give_fishers_p_and_a_finite_rate_difference():
    a, b = np.ones(9, bool), np.zeros(9, bool)
    out = difference_numbers("x", a, b)
    assert out["x_p"] == pytest.approx(scipy.stats.fisher_exact([[9, 0], [0, 9]]).pvalue)
    assert out["x_rate_difference"] == 1.0
    assert difference_numbers("x", a, a)["x_p"] == 1.0


def test_mean_numbers_bracket_the_mean_and_text_names_count_and_interval():
    out = mean_numbers("acc", [0.5, 0.6, 0.9, 1.0])
    assert out["acc_low"] <= out["acc_mean"] <= out["acc_high"]
    assert rate_text([True, False, False]).startswith("1/3 (")


def test_rate_numbers_reject_nonfinite_flags():
    with pytest.raises(ValueError, match="finite"):
        rate_numbers("x", [1.0, float("nan")])
