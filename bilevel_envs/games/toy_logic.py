"""Pure game logic of the toy leader-follower Markov game (paper §5.3, Fig. 4a, App. C.3).

Kept free of PettingZoo so the AEC env, the batched rollouts of
:class:`bilevel_envs.wrappers.game_best_response.GameBestResponse` and the exact solvers all read
the same tables.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["FOLLOWER_ACTIONS", "LEADER_ACTIONS", "STATES", "ToyModel", "toy_model"]

#: names of the states 0, 1, 2
STATES = ("S", "A", "B")
#: the leader's actions
LEADER_ACTIONS = (0, 1)
#: names of the follower's actions 0, 1, 2
FOLLOWER_ACTIONS = ("s", "a", "b")
S, A, B = 0, 1, 2  # states
FS, FA, FB = 0, 1, 2  # follower actions "s", "a", "b"


class ToyModel(NamedTuple):
    """Exact tabular model of the toy game (leader action ``a``, follower action ``b``).

    Attributes:
        next_state: ``(S, A, B)`` int, the deterministic successor ``T(s, a, b)``.
        P: ``(S, A, B, S)`` transition tensor ``p(s'|s, a, b)`` (one-hot rows).
        r_follower: ``(S, A, B)`` follower reward ``r_F(s, a, b)`` (of the pre-move state).
        r_leader: ``(S, A, B)`` leader reward ``r_L(s, a, b)`` (of the pre-move state).
        mu0: ``(S,)`` start distribution (one-hot at S).
    """

    next_state: np.ndarray
    P: np.ndarray
    r_follower: np.ndarray
    r_leader: np.ndarray
    mu0: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(n_states, n_leader_actions, n_follower_actions)``."""
        return self.r_follower.shape  # type: ignore[return-value]


def toy_model(reward: int = 2) -> ToyModel:
    """Build the toy game's tables (paper Fig. 4a).

    Transitions (unlisted = stay): S: ``a``→A, ``b``→B (any leader action). A with leader 0:
    ``s``→S, ``b``→B. A with leader 1: every follower action → S. B: ``s``→S.
    Follower reward: S·*·a = S·*·b = +1, A·1·* = −1, A·0·b = +R. Leader reward: S·*·a = +1.

    Args:
        reward: R ∈ {1, 2}, the follower's reward for ``b`` in A under leader action 0 (the
            paper's Fig. 4 uses R = 2).

    Raises:
        ValueError: if ``reward`` is not 1 or 2.
    """
    if reward not in (1, 2) or isinstance(reward, bool):
        raise ValueError(f"reward (R) must be 1 or 2, got {reward!r}")
    n_s, n_a, n_b = 3, 2, 3
    nxt = np.broadcast_to(np.arange(n_s)[:, None, None], (n_s, n_a, n_b)).copy()
    nxt[S, :, FA] = A
    nxt[S, :, FB] = B
    nxt[A, 0, FS] = S
    nxt[A, 0, FB] = B
    nxt[A, 1, :] = S
    nxt[B, :, FS] = S
    r_f = np.zeros((n_s, n_a, n_b))
    r_f[S, :, FA] = 1.0
    r_f[S, :, FB] = 1.0
    r_f[A, 1, :] = -1.0
    r_f[A, 0, FB] = float(reward)
    r_l = np.zeros((n_s, n_a, n_b))
    r_l[S, :, FA] = 1.0
    P = np.zeros((n_s, n_a, n_b, n_s))
    np.put_along_axis(P, nxt[..., None], 1.0, axis=-1)
    mu0 = np.zeros(n_s)
    mu0[S] = 1.0
    for arr in (nxt, r_f, r_l, P, mu0):
        arr.setflags(write=False)
    return ToyModel(nxt, P, r_f, r_l, mu0)
