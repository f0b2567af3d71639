"""Argument checks shared by the problems, followers and wrappers (one message format)."""

from __future__ import annotations

import numpy as np

__all__ = ["check_beta"]


def check_beta(beta: float) -> float:
    """Validate the follower's entropy temperature β (> 0, finite)."""
    beta = float(beta)
    if not np.isfinite(beta) or beta <= 0.0:
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return beta
