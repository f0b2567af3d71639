"""The follower protocol: what a best-response solver exposes to the wrapper and to leaders."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Follower"]


@runtime_checkable
class Follower(Protocol):
    """An exact (or k-step) entropy-regularised best response of the follower.

    ``solve`` is called with the unwrapped problem each time θ changes and may warm-start from
    its previous solution. After it, ``policy``, ``soft_q`` and ``soft_v`` describe
    ``g^{θ†}``, ``Q_F^{θ†}`` and ``V_F^{θ†}``: arrays for tabular problems, callables on batches
    for continuous ones.
    """

    beta: float

    def solve(self, env: Any) -> None: ...

    def sample_actions(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...

    @property
    def policy(self) -> Any: ...

    @property
    def soft_q(self) -> Any: ...

    @property
    def soft_v(self) -> Any: ...
