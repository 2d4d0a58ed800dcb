"""Quantities derived from a ``SpectrumEstimate``, with standard errors by the delta method: the Kaplan-Yorke
(Lyapunov) dimension and the sum of the positive exponents (the Kolmogorov-Sinai entropy rate by Pesin's formula,
an upper bound in general and equal for SRB measures).

Both are functions of the ordered exponents; their standard error is that of the linear combination given by their
gradient (``SpectrumEstimate.linear_stderr``: the batch means of the combination, so the covariances of the exponents
count). Where the choice of terms could change within the error (an exponent within its error of 0, or a partial sum
near 0), the error bar describes the local branch only.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["Derived", "kaplan_yorke_dimension", "positive_exponent_sum"]


class Derived(NamedTuple):
    """A derived quantity per network: value (E,) and stderr (E,)."""
    value: torch.Tensor
    stderr: torch.Tensor


def kaplan_yorke_dimension(estimate) -> Derived:
    """D_KY = j + (lambda_1 + ... + lambda_j) / |lambda_(j+1)|, j the largest index whose partial sum is >= 0
    (0 if lambda_1 < 0). NaN where all k partial sums are >= 0: the dimension is then at least k (measure more
    exponents)."""
    lam = estimate.exponents.detach()  # (E, k)
    E, k = lam.shape
    partial = lam.cumsum(-1)  # (E, k)
    j = (partial >= 0).to(torch.int64).cumprod(-1).sum(-1)  # (E,): the leading partial sums >= 0
    value = torch.full((E,), float("nan"), dtype=lam.dtype, device=lam.device)
    weights = torch.zeros_like(lam)
    rows = torch.arange(E, device=lam.device)
    inside = (j > 0) & (j < k)
    value[j == 0] = 0.0
    if bool(inside.any()):
        r, jj = rows[inside], j[inside]
        s, nxt = partial[r, jj - 1], lam[r, jj]  # S_j, lambda_(j+1) < 0
        value[r] = jj.to(lam.dtype) + s / nxt.abs()
        weights[r] = (torch.arange(k, device=lam.device)[None, :] < jj[:, None]).to(lam.dtype) / nxt.abs()[:, None]
        weights[r, jj] = s / nxt ** 2  # d/d lambda_(j+1) of -S_j / lambda_(j+1)
    stderr = estimate.linear_stderr(weights).to(lam.dtype)
    stderr = torch.where(j == 0, torch.zeros_like(stderr), stderr)
    return Derived(value, torch.where(torch.isnan(value), value, stderr))


def positive_exponent_sum(estimate) -> Derived:
    """The sum of the positive exponents. NaN where all k are positive (the sum may miss some: measure more)."""
    lam = estimate.exponents.detach()  # (E, k)
    weights = (lam > 0).to(lam.dtype)
    value = (lam * weights).sum(-1)
    complete = ~(lam[:, -1] > 0)
    stderr = estimate.linear_stderr(weights).to(lam.dtype)
    stderr = torch.where(weights.sum(-1) == 0, torch.zeros_like(stderr), stderr)
    nan = torch.full_like(value, float("nan"))
    return Derived(torch.where(complete, value, nan), torch.where(complete, stderr, nan))
