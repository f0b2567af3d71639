"""The follower protocol: what ``BestResponse`` needs from a follower, and what it may publish.

A follower is anything with these two members:

* ``solve(problem)``: θ has changed (the leader's parameters of ``problem``, or, for a game,
  ``solve(game, leader_policy)``). An exact solver re-solves its best response here
  (warm-started); a k-step solver takes its k steps; a learning follower may train.
* ``act(obs, rng)``: sample the follower's actions for a batch of observations.

and ``beta``, its entropy temperature. It *may* also publish, as attributes or properties:

* ``policy``, ``soft_q``, ``soft_v``: its current policy and soft values (arrays for tabular
  problems, callables on batches for continuous ones). Exact and k-step solvers publish them;
  a black-box follower does not (``None``), and a leader then estimates what it needs.
* ``state_dict()`` / ``load_state_dict(state)``: a snapshot of everything that affects its
  future answers (a warm start, a Q-table, network weights), as plain arrays, numbers and
  dicts; used for checkpoints and to evaluate the exact objective at another θ and come back.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["Follower"]


@runtime_checkable
class Follower(Protocol):
    """The two members every follower has (module docstring for the optional ones)."""

    beta: float

    def solve(self, problem: Any) -> None: ...

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...
