"""Ascent on the exact hypergradient: a baseline and a test, not a ceiling.

From the paper's near-uniform start it falls into the no-incentive optimum of Four-Rooms
(reference/known_optima.md): the landscape has several local optima, and exact local ascent
finds the nearest one.
"""

from __future__ import annotations

import numpy as np

from bilevel_agents.base import Leader
from bilevel_agents.exact import hypergradient

__all__ = ["ExactAscent"]


class ExactAscent(Leader):
    """``θ ← θ + α clip(∇θ J_L)`` with the exact hypergradient of :mod:`bilevel_agents.exact`."""

    name = "exact"

    def estimate_gradient(self) -> np.ndarray:
        return hypergradient(self.br)

    def hparams(self):
        return {**super().hparams(), "beta": self.br.beta}
