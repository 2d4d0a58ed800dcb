"""Intervals and tests over networks (floss_core.diagnostics.statistics) against closed forms and enumeration."""
import itertools
import math

import numpy as np
import pytest
import torch

from floss_core.diagnostics import compare_means, compare_success, mean_interval, success_rate


def wilson(k, n, z=1.959963984540054):
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 9), (3, 9), (9, 9), (5, 12)])
def test_success_rate_interval_is_the_wilson_score_interval(k, n):
    r = success_rate(k, n)
    low, high = wilson(k, n)
    assert r["rate"] == k / n and r["successes"] == k and r["n"] == n
    assert r["low"] == pytest.approx(max(low, 0.0), abs=1e-9) and r["high"] == pytest.approx(min(high, 1.0), abs=1e-9)
    flags = torch.tensor([True] * k + [False] * (n - k))
    assert success_rate(flags) == r


def hypergeom_two_sided(ka, na, kb, nb):
    """Fisher's exact p: the probability of tables at most as likely as the observed one."""
    total, K = na + nb, ka + kb

    def prob(x):
        return math.comb(na, x) * math.comb(nb, K - x) / math.comb(total, K)

    observed = prob(ka)
    return sum(prob(x) for x in range(max(0, K - nb), min(na, K) + 1) if prob(x) <= observed * (1 + 1e-7))


def test_fisher_test_matches_the_hypergeometric_enumeration():
    a = np.array([1] * 8 + [0] * 1, dtype=bool)
    b = np.array([1] * 2 + [0] * 7, dtype=bool)
    r = compare_success(a, b)
    assert (r["a"], r["b"], r["n_a"], r["n_b"]) == (8, 2, 9, 9)
    assert r["p"] == pytest.approx(hypergeom_two_sided(8, 9, 2, 9), rel=1e-9)
    assert compare_success(a, a)["p"] == pytest.approx(1.0)


def test_permutation_test_is_exact_for_small_samples():
    a, b = np.array([0.9, 1.0, 0.8]), np.array([0.5, 0.6, 0.55, 0.7])
    pooled, observed = np.concatenate([a, b]), a.mean() - b.mean()
    diffs = []
    for idx in itertools.combinations(range(7), 3):
        mask = np.zeros(7, dtype=bool)
        mask[list(idx)] = True
        diffs.append(pooled[mask].mean() - pooled[~mask].mean())
    diffs = np.array(diffs)  # scipy's two-sided p: twice the smaller one-sided p
    exact = min(1.0, 2 * min(np.mean(diffs >= observed - 1e-12), np.mean(diffs <= observed + 1e-12)))
    r = compare_means(a, b)
    assert r["difference"] == pytest.approx(observed) and r["p"] == pytest.approx(exact, abs=1e-12)


def test_bootstrap_interval_contains_the_mean_and_is_reproducible():
    x = np.random.default_rng(1).uniform(0.5, 1.0, size=9)
    r = mean_interval(x, seed=3)
    assert r["low"] < r["mean"] < r["high"] and r["n"] == 9
    assert mean_interval(x, seed=3) == r
    assert mean_interval([0.7] * 5) == {"mean": 0.7, "low": 0.7, "high": 0.7, "n": 5}


@pytest.mark.parametrize("bad", [[], [float("nan"), 1.0]])
def test_statistics_refuse_empty_or_non_finite_values(bad):
    with pytest.raises(ValueError, match="finite values"):
        mean_interval(bad)
    with pytest.raises(ValueError, match="successes"):
        success_rate(4, 3)


@pytest.mark.parametrize("flags, match", [(torch.tensor([0.5, 0.7, 0.9]), "booleans"), ([2.0, 0.0, 1.0], "booleans"),
                                          ([-1, 1, 1], "booleans"), (torch.ones(2, 2, dtype=torch.bool), "1-D"),
                                          (1, "1-D")])
def test_success_statistics_take_one_flag_per_network_only(flags, match):
    """Accuracies, a count or a (D, S) table are not success flags: a clear error, not a plausible rate."""
    with pytest.raises(ValueError, match=match):
        success_rate(flags)
    with pytest.raises(ValueError, match=match):
        compare_success(flags, [True, False])


@pytest.mark.parametrize("kw, match", [(dict(seed=-1), "seed"), (dict(seed=1.5), "seed"),
                                       (dict(n_resamples=2.5), "n_resamples"), (dict(n_resamples=0), "n_resamples")])
def test_resampling_arguments_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        mean_interval([0.1, 0.5, 0.9], **kw)
    with pytest.raises(ValueError, match=match):
        compare_means([0.1, 0.5], [0.2, 0.9], **kw)
