"""Numbers-file entries with their statistics: a success rate with its 95% Wilson interval, a mean with its 95%
bootstrap interval, and Fisher's exact test of two conditions' successes (``diagnostics.statistics``, scipy).

Each function returns a flat ``{label: number}`` dict for ``plotting.record``; the labels start with ``prefix``::

    rate_numbers("copy_pre_d40", ok)        -> copy_pre_d40_successes, _n, _rate, _low, _high
    mean_numbers("copy_pre_d40_acc", acc)   -> copy_pre_d40_acc_mean, _low, _high
    difference_numbers("copy_d40_pre_vs_none", ok_pre, ok_none) -> ..._p, ..._rate_difference
    rate_text(ok)                           -> "7/9 (0.45-0.94)" for a caption or a verdict
"""
from __future__ import annotations

from ..diagnostics.statistics import compare_success, mean_interval, success_rate

__all__ = ["rate_numbers", "mean_numbers", "difference_numbers", "rate_text", "delay_numbers", "strongest_difference"]


def rate_numbers(prefix: str, success) -> dict:
    """``successes``, ``n``, ``rate`` and the 95% Wilson interval ``low``, ``high`` of one condition.
    success: a bool tensor/array, one entry per network."""
    r = success_rate(success)
    return {f"{prefix}_{key}": r[key] for key in ("successes", "n", "rate", "low", "high")}


def mean_numbers(prefix: str, values) -> dict:
    """``mean`` and its 95% bootstrap interval ``low``, ``high`` (finite values, one per network)."""
    m = mean_interval(values)
    return {f"{prefix}_{key}": m[key] for key in ("mean", "low", "high")}


def difference_numbers(prefix: str, a, b) -> dict:
    """Fisher's exact test (two-sided) of the successes of condition a against b: ``p`` and the difference of the
    rates ``rate_difference`` (the odds ratio is left out: it is infinite whenever one condition never fails)."""
    c = compare_success(a, b)
    return {f"{prefix}_p": c["p"], f"{prefix}_rate_difference": c["a"] / c["n_a"] - c["b"] / c["n_b"]}


def rate_text(success) -> str:
    """``"k/n (low-high)"``: the count and its 95% Wilson interval, for captions and verdicts."""
    r = success_rate(success)
    return f"{r['successes']}/{r['n']} ({r['low']:.2f}-{r['high']:.2f})"


def delay_numbers(prefix: str, delays, summary: dict, conditions, pairs=()) -> dict:
    """The numbers of a delay sweep's summary (``experiments.summarize_delay_sweep``) for one task: per condition
    and delay the success rate with its Wilson interval and the mean final accuracy with its bootstrap interval
    (over the networks whose training did not fail: the summary's "failed" says which; none left: no final-accuracy
    numbers),
    and per pair (a, b) of conditions and delay Fisher's p of a's successes against b's.

    Labels: ``<prefix>_<condition>_d<d>_{successes,n,rate,low,high}``, ``..._final_{mean,low,high}``,
    ``<prefix>_d<d>_<a>_vs_<b>_{p,rate_difference}``."""
    out = {}
    for c in conditions:
        for i, d in enumerate(delays):
            out.update(rate_numbers(f"{prefix}_{c}_d{d}", summary["success"][c][i]))
            final = summary["final_accuracy"][c][i]  # (S,), NaN for networks whose training failed
            if bool(final.isfinite().any()):
                out.update(mean_numbers(f"{prefix}_{c}_d{d}_final", final[final.isfinite()]))
    for a, b in pairs:
        for i, d in enumerate(delays):
            out.update(difference_numbers(f"{prefix}_d{d}_{a}_vs_{b}", summary["success"][a][i],
                                          summary["success"][b][i]))
    return out


def strongest_difference(numbers_: dict, prefix: str, delays, a: str, b: str) -> tuple:
    """(delay, p) of the smallest Fisher p of a against b over the delays, from ``delay_numbers``' output."""
    return min(((d, numbers_[f"{prefix}_d{d}_{a}_vs_{b}_p"]) for d in delays), key=lambda dp: dp[1])
