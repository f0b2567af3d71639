"""Ascent on the exact hypergradient: a baseline and a test, not a ceiling.

From the paper's near-uniform start it falls into the no-incentive optimum of Four-Rooms
(docs/known_optima.md): the landscape has several local optima, and exact local ascent finds
the nearest one. Defined wherever :func:`bilevel_agents.exact.hypergradient` is.
"""

from __future__ import annotations

import numpy as np

from bilevel_agents.exact import hypergradient
from bilevel_agents.leader import Leader

__all__ = ["ExactAscent"]


class ExactAscent(Leader):
    """``θ ← θ + α clip(∇θ J_L)`` with the exact hypergradient of :mod:`bilevel_agents.exact`."""

    name = "exact"
    samples = False

    def estimate_gradient(self) -> np.ndarray:
        """The exact hypergradient at the current θ."""
        return hypergradient(self.br)
