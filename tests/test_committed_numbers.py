"""The committed paper-scale numbers files of figures 1 and 2 give the standard error beside every exponent they
quote (``<key>_stderr``, from ``spectrum_estimate``'s batch means), and those errors are finite and positive."""
import json
import math
from pathlib import Path

import pytest

FIGURES = Path(__file__).resolve().parents[1] / "figures"
# keys that are exponents or built from exponents (the others are counts, intervals and singular values)
EXPONENT_KEYS = {"01_fig1_flossing": ("lambda1_", "lambda_k+1_", "max_abs_dev_"),
                 "02_fig2_condition_number": ("predicted_log_kappa_",)}


@pytest.mark.parametrize("stem", sorted(EXPONENT_KEYS))
def test_every_quoted_exponent_has_a_finite_positive_stderr(stem):
    numbers = json.loads((FIGURES / f"{stem}_numbers.json").read_text())
    quoted = [key for key in numbers if key.startswith(EXPONENT_KEYS[stem]) and not key.endswith("_stderr")]
    assert quoted, f"{stem}: no exponent keys found"
    missing = [key for key in quoted if f"{key}_stderr" not in numbers]
    assert not missing, f"{stem}: no stderr beside {missing}"
    bad = {key: numbers[f"{key}_stderr"] for key in quoted
           if not (isinstance(numbers[f"{key}_stderr"], float) and math.isfinite(numbers[f"{key}_stderr"])
                   and numbers[f"{key}_stderr"] > 0)}
    assert not bad, f"{stem}: stderr not finite and positive: {bad}"
