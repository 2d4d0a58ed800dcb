"""Argument checks shared by every module: one clear ``ValueError`` that names the argument, the bound and the value.

Every public entry point and every config dataclass validates its arguments with these before doing any work, so a
bad value fails up front with a message like ``FlossConfig.k must be an int >= 1, got 4.0`` instead of deep inside
torch or, worse, silently.
"""
from __future__ import annotations

import math
import numbers

import torch

__all__ = ["check_int", "check_number", "check_choice", "check_bool", "check_dtype", "FLOAT_DTYPES"]

FLOAT_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _range(name: str, low, high, low_open: bool = False, note: str = "") -> str:
    """" with 1 <= k <= 8 (the state size)", " >= 0", " <= 3" or "" for the bounds of ``name``."""
    if low is not None and high is not None:
        return f" with {low} {'<' if low_open else '<='} {name} <= {high}{note}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low}{note}"
    return f" <= {high}{note}" if high is not None else ""


def check_int(name: str, value, low: int | None = None, high: int | None = None, *, none: bool = False,
              note: str = ""):
    """``value`` as an int in [low, high] (either bound optional); ``none=True`` also accepts None. ``note`` follows
    the bounds in the message (e.g. " (the state size)").

    bool is not an int here (``True`` is rejected), nor is a float with an integral value (``4.0``)."""
    if value is None and none:
        return None
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int{_range(name, low, high, note=note)}{' or None' if none else ''}, "
                         f"got {value!r}")
    return int(value)


def check_number(name: str, value, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, none: bool = False):
    """``value`` as a finite float in [low, high] ((low, high] with ``low_open``); ``none=True`` accepts None.

    NaN and infinities are rejected, and so is bool."""
    if value is None and none:
        return None
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        value = float(value)
        ok = (low is None or (value > low if low_open else value >= low)) and (high is None or value <= high)
    if not ok:
        raise ValueError(f"{name} must be a finite number{_range(name, low, high, low_open)}"
                         f"{' or None' if none else ''}, got {value!r}")
    return value


def check_choice(name: str, value, choices):
    """``value`` if it is one of ``choices``."""
    if not isinstance(value, (str, int, float, tuple)) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_dtype(name: str, value) -> torch.dtype:
    """"float32" / "float64" / torch.float32 / torch.float64 (None: torch's default dtype) -> torch.dtype.

    Half precisions are rejected: the QR steps of the spectra need at least float32."""
    if value is None:
        value = torch.get_default_dtype()
    if isinstance(value, str) and value in FLOAT_DTYPES:
        return FLOAT_DTYPES[value]
    if value in (torch.float32, torch.float64):
        return value
    raise ValueError(f"{name} must be one of {list(FLOAT_DTYPES)} (or torch.float32 / torch.float64), got {value!r}")
