"""Whether a "within the tolerance" verdict survives the exponents' own error.

A figure counts the networks whose exponents all lie within ``tolerance`` of a target. Each exponent is an estimate
with a standard error (``spectrum_estimate``), so a network near the border could fall on either side: it is *surely
within* when every deviation plus z standard errors stays within the tolerance, and *surely outside* when some
deviation minus z standard errors exceeds it; the others are undecided at that z (z = 2: about 95% per exponent, not
corrected for the k comparisons of a network). The count of a figure then lies between the networks surely within
and those not surely outside.
"""
from __future__ import annotations

import torch

from ..checks import check_number

__all__ = ["tolerance_verdicts"]


def tolerance_verdicts(deviation: torch.Tensor, stderr: torch.Tensor, tolerance: float, *, z: float = 2.0):
    """``(within, surely_within, surely_outside)``, each (E,) bool, from the deviations |lambda_i - target| and their
    standard errors, (E, k) each (or (E,) for one exponent per network): within the tolerance as measured, within by
    more than z standard errors for every exponent, outside by more than z standard errors for some exponent."""
    check_number("tolerance", tolerance, 0)
    check_number("z", z, 0)
    if deviation.shape != stderr.shape:
        raise ValueError(f"deviation and stderr must have the same shape, got {tuple(deviation.shape)} and "
                         f"{tuple(stderr.shape)}")
    d, s = deviation.abs(), stderr
    if d.dim() == 1:
        d, s = d[:, None], s[:, None]
    within = (d <= tolerance).all(-1)
    surely_within = (d + z * s <= tolerance).all(-1)
    surely_outside = (d - z * s > tolerance).any(-1)
    return within, surely_within, surely_outside
