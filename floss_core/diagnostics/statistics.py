"""Statistics of outcomes over networks, from scipy: intervals on success rates and mean accuracies, and tests of
differences between conditions. A figure's claim ("preflossing succeeds more often") is read from these, never from
raw counts of a few networks.

    success_rate        successes out of n with a 95% Wilson score interval (scipy.stats.binomtest)
    mean_interval       a mean with a 95% bootstrap interval (scipy.stats.bootstrap, BCa, seeded)
    compare_success     Fisher's exact test of two success counts (scipy.stats.fisher_exact, two-sided)
    compare_means       a permutation test of two means (scipy.stats.permutation_test, two-sided, seeded)

Every function returns plain floats (and ints) in a dict, ready for a numbers file.
"""
from __future__ import annotations

import math

import numpy as np
import scipy.stats

from ..checks import check_int

__all__ = ["success_rate", "mean_interval", "compare_success", "compare_means"]

CONFIDENCE = 0.95


def _values(name: str, x) -> np.ndarray:
    """A 1-D float array without NaN (failed networks are left out by the caller, never silently here)."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=float).reshape(-1)
    if arr.size == 0 or not np.isfinite(arr).all():
        raise ValueError(f"{name} must be a non-empty set of finite values, got {arr.tolist()}")
    return arr


def _flags(name: str, x) -> np.ndarray:
    """A 1-D array of 0/1 flags, one per network (bool, or numbers that are all 0 or 1)."""
    arr = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D set of booleans, one per network, got shape {arr.shape}")
    arr = _values(name, arr)
    if not np.isin(arr, (0.0, 1.0)).all():
        raise ValueError(f"{name} must be booleans (0 or 1), one per network, got {arr.tolist()}")
    return arr


def _check_resampling(seed, n_resamples) -> None:
    check_int("seed", seed, 0)
    check_int("n_resamples", n_resamples, 1)


def success_rate(successes, n: int | None = None) -> dict:
    """``{"successes", "n", "rate", "low", "high"}``: the rate and its 95% Wilson score interval.

    successes: a bool tensor/array (one per network) or an int count (then give ``n``)."""
    if n is None:
        flags = _flags("successes", successes)
        k, n = int(flags.sum()), int(flags.size)
    else:
        n = check_int("n", n, 1)
        k = check_int("successes", successes, 0, n)
    ci = scipy.stats.binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return {"successes": k, "n": n, "rate": k / n, "low": float(ci.low), "high": float(ci.high)}


def mean_interval(values, *, seed: int = 0, n_resamples: int = 9999) -> dict:
    """``{"mean", "low", "high", "n"}``: the mean and its 95% bootstrap (BCa) interval, reproducible by ``seed``.

    With fewer than 2 distinct values the interval is the mean itself."""
    _check_resampling(seed, n_resamples)
    x = _values("values", values)
    mean = float(x.mean())
    if x.size < 2 or np.all(x == x[0]):
        return {"mean": mean, "low": mean, "high": mean, "n": int(x.size)}
    res = scipy.stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_resamples,
                                method="BCa", rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    if not (math.isfinite(low) and math.isfinite(high)):  # BCa degenerates for near-constant data
        res = scipy.stats.bootstrap((x,), np.mean, confidence_level=CONFIDENCE, n_resamples=n_resamples,
                                    method="percentile", rng=np.random.default_rng(seed))
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return {"mean": mean, "low": low, "high": high, "n": int(x.size)}


def compare_success(a, b) -> dict:
    """Fisher's exact test (two-sided) of the success counts of two conditions: ``{"a", "b", "n_a", "n_b",
    "odds_ratio", "p"}``. a, b: bool tensors/arrays, one entry per network."""
    fa, fb = _flags("a", a), _flags("b", b)
    ka, kb = int(fa.sum()), int(fb.sum())
    table = [[ka, fa.size - ka], [kb, fb.size - kb]]
    res = scipy.stats.fisher_exact(table, alternative="two-sided")
    return {"a": ka, "b": kb, "n_a": int(fa.size), "n_b": int(fb.size), "odds_ratio": float(res.statistic),
            "p": float(res.pvalue)}


def compare_means(a, b, *, seed: int = 0, n_resamples: int = 9999) -> dict:
    """A two-sided permutation test of mean(a) - mean(b): ``{"difference", "p"}``, p twice the smaller one-sided p
    (scipy's convention; exact when the number of permutations is at most ``n_resamples``, else ``n_resamples``
    random ones from ``seed``)."""
    xa, xb = _values("a", a), _values("b", b)
    _check_resampling(seed, n_resamples)
    res = scipy.stats.permutation_test((xa, xb), lambda x, y: np.mean(x) - np.mean(y), n_resamples=n_resamples,
                                       alternative="two-sided", rng=np.random.default_rng(seed))
    return {"difference": float(xa.mean() - xb.mean()), "p": float(res.pvalue)}
