"""Leader critics: what a leader learns about its own values to form the Benefit.

One protocol for every problem family. A critic is updated once per outer iteration from the
fresh batch (after the follower has re-solved) and then queried (paper Alg. 1 lines 6, 10):

* ``update(batch, br) -> dict[str, float]``: learn from the batch; returns diagnostics;
* ``q(states, *actions) -> array``: ``Q_L(s, b)`` in a configurable MDP, ``Q_L(s, a, b)`` in a
  Markov game (the joint action);
* ``v(states, br) -> array``: ``V_L(s) = E_{b~g} Q_L(s, b)`` under the follower's policy (games:
  ``v(states, br, leader_actions)`` gives ``E_{b~g(·|s,a)} Q_L(s, a, b)``);
* ``state_dict()`` / ``load_state_dict(state)``: everything that affects its future answers.

Critics by family: tabular SARSA, Monte Carlo and the state-value model critic
(:mod:`~bilevel_agents.critics.tabular`, ``critic="model"``), the
MLP TD critic of continuous problems (:mod:`~bilevel_agents.critics.mlp`), the game critics
(:mod:`~bilevel_agents.critics.game`), the plug-in model-based critic of the LQR game
(:mod:`~bilevel_agents.critics.model`, ``critic="model"``: least-squares dynamics and
closed-form Gaussian values, from samples) and the exact oracle critics of every problem
(:mod:`~bilevel_agents.critics.oracle`, ``critic="exact"`` in every leader).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from bilevel_agents.critics.game import MLPGameCritic, TabularGameCritic
from bilevel_agents.critics.mlp import MLPCritic
from bilevel_agents.critics.model import LQRModelCritic
from bilevel_agents.critics.oracle import (
    ExactBuildingCritic,
    ExactCritic,
    LQRExactLeaderCritic,
    exact_critic,
)
from bilevel_agents.critics.tabular import (
    MonteCarloCritic,
    SarsaCritic,
    StateValueModelCritic,
    TableCritic,
)

__all__ = [
    "Critic",
    "ExactBuildingCritic",
    "ExactCritic",
    "LQRExactLeaderCritic",
    "LQRModelCritic",
    "MLPCritic",
    "MLPGameCritic",
    "MonteCarloCritic",
    "SarsaCritic",
    "StateValueModelCritic",
    "TableCritic",
    "TabularGameCritic",
    "exact_critic",
]


@runtime_checkable
class Critic(Protocol):
    """The leader critic protocol (module docstring)."""

    def update(self, batch: Any, br: Any) -> dict[str, float]:
        """Learn from a fresh batch; return diagnostics (e.g. the TD error)."""
        ...

    def q(self, states: np.ndarray, *actions: np.ndarray) -> np.ndarray:
        """``Q_L`` at the given states and (joint) actions."""
        ...

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """``V_L`` under the follower's (and, in games, the leader's) current policy."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """A snapshot of the critic (arrays, numbers, dicts)."""
        ...

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        ...
