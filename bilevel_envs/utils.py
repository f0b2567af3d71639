"""Argument checks shared by the problems, followers and wrappers (one message format)."""

from __future__ import annotations

import numpy as np

__all__ = ["as_real_array", "check_beta", "check_choice", "check_float", "check_int"]


def check_beta(beta: float) -> float:
    """Validate the follower's entropy temperature β (> 0, finite)."""
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0.0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return beta


def check_int(name: str, value: object, minimum: int | None = None,
              allow_none: bool = False) -> int | None:
    """``value`` as an ``int`` (``1.5``, ``True`` and strings are refused), at least ``minimum``.

    Raises:
        ValueError: naming ``name``, the allowed range and the value.
    """
    if value is None and allow_none:
        return None
    bound = "" if minimum is None else f" >= {minimum}"
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        if not (isinstance(value, (float, np.floating)) and float(value).is_integer()):
            none = " or None" if allow_none else ""
            raise ValueError(f"{name} must be an integer{bound}{none}, got {value!r}")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be an integer{bound}, got {value!r}")
    return out


def check_float(name: str, value: object, *, low: float | None = None,
                high: float | None = None, low_open: bool = False, high_open: bool = False,
                allow_none: bool = False) -> float | None:
    """``value`` as a finite real ``float`` in the given interval (complex, NaN and strings are
    refused).

    Raises:
        ValueError: naming ``name``, the allowed interval and the value.
    """
    if value is None and allow_none:
        return None
    lo = "(" if low_open or low is None else "["
    hi = ")" if high_open or high is None else "]"
    interval = f"{lo}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi}"
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, (bool, np.bool_))
    out = float(value) if ok else float("nan")
    if ok and np.isfinite(out):
        ok = not ((low is not None and (out < low or (low_open and out == low)))
                  or (high is not None and (out > high or (high_open and out == high))))
    else:
        ok = False
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be a finite number in {interval}{none}, got {value!r}")
    return out


def check_choice(name: str, value: object, choices: tuple) -> object:
    """``value`` if it is one of ``choices``, else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def as_real_array(name: str, value: object) -> np.ndarray:
    """``value`` as a float64 array; complex, string and object inputs are refused (numpy
    would drop an imaginary part with only a warning).

    Raises:
        ValueError: naming ``name``.
    """
    if np.iscomplexobj(value):
        raise ValueError(f"{name} must be real, got a complex array")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an array of real numbers, got {value!r}") from None
    return arr
