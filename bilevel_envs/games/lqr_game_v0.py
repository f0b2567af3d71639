"""Bi-level LQR Markov game (paper §5.4, App. C.4 eqs. 52–54 and C.6).

## Description
A 2-d linear system ``s' = A s + B b + C a`` with the paper's matrices (eq. 109):
``A = [[0, 1], [0, 0]]``, ``B = [0, 0.1]ᵀ``, ``C = [0.1, 0]ᵀ``, ``Q̄ = I``, ``R̄ = 1``.
The leader sees ``s`` and plays ``a ∈ R``; the follower sees ``(s, a)`` and plays ``b ∈ R``.
Follower reward ``−(sᵀQ̄s + bᵀR̄b)`` (eq. 53); leader reward ``exp(−½(s − s*)ᵀΣ(s − s*))``
with ``s* = (−0.8, 0)`` and ``Σ = diag(5, 100)²`` (both of the pre-move state). There is no
process noise; the leader's Gaussian policy ``N(Ks, W²)`` is the only disturbance, which the
follower observes (App. C.4, eq. 54c).

## Spaces
Leader: observation ``Box(2,)`` (the state), action ``Box(1,)`` (unbounded). Follower:
observation ``Box(3,)`` = (s, a), action ``Box(1,)``. All float64.

## Episode end
Start at ``s0 = (1, 0)``; truncated after ``max_cycles`` = 100 rounds.

## Arguments
``max_cycles`` (100), ``gamma_follower`` γ_F (0.95), ``gamma_leader`` γ_L (0.99), ``params``
(:class:`~bilevel_envs.games.lqr_logic.LQRGameParams`, the paper's matrices by default),
``render_mode``.

Example:
    >>> from bilevel_envs.games import lqr_game_v0
    >>> env = lqr_game_v0.env()
    >>> env.reset(seed=0)
    >>> env.observe("leader")
    array([1., 0.])
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils import wrappers
from pettingzoo.utils.conversions import turn_based_aec_to_parallel

from bilevel_envs.games.base import FOLLOWER, LEADER, LeaderFollowerGame
from bilevel_envs.games.lqr_logic import LQRGameParams

__all__ = ["LQRGameEnv", "LQRGameParams", "env", "parallel_env", "raw_env"]


def _box(dim: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, (dim,), dtype=np.float64)


class LQRGameEnv(LeaderFollowerGame):
    """The raw AEC LQR game (see the module docstring)."""

    metadata = {"name": "lqr_game_v0", "render_modes": ["ansi"], "is_parallelizable": False}
    #: the paper's follower temperature (App. C.6)
    default_beta = 0.1

    def __init__(self, max_cycles: int = 100, gamma_follower: float = 0.95,
                 gamma_leader: float = 0.99, params: LQRGameParams | None = None,
                 render_mode: str | None = None):
        super().__init__(max_cycles=max_cycles, render_mode=render_mode)
        self.params = params if params is not None else LQRGameParams()
        if not isinstance(self.params, LQRGameParams):
            raise ValueError(f"params must be an LQRGameParams, got {type(params).__name__}")
        for name, g in (("gamma_follower", gamma_follower), ("gamma_leader", gamma_leader)):
            if not 0.0 <= float(g) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {g!r}")
        self.gamma_follower = float(gamma_follower)
        self.gamma_leader = float(gamma_leader)
        n, m, k = self.params.dims
        self.state_dim, self.follower_action_dim, self.leader_action_dim = n, m, k
        self._obs_spaces = {LEADER: _box(n), FOLLOWER: _box(n + k)}
        self._act_spaces = {LEADER: _box(k), FOLLOWER: _box(m)}

    def initial_states(self, n: int) -> np.ndarray:
        return np.repeat(self.params.s0[None], int(n), axis=0)

    def transition(self, states, a, b):
        n, m, k = self.params.dims
        s = np.asarray(states, dtype=np.float64).reshape(-1, n)
        a = np.asarray(a, dtype=np.float64).reshape(-1, k)
        b = np.asarray(b, dtype=np.float64).reshape(-1, m)
        return self.params.step(s, a, b)

    def leader_obs(self, states):
        return np.array(states, dtype=np.float64, copy=True)

    def follower_obs(self, states, a):
        a = np.asarray(a, dtype=np.float64).reshape(len(states), -1)
        return np.concatenate([np.asarray(states, dtype=np.float64), a], axis=-1)

    def make_follower(self, beta: float, **kwargs: Any):
        """Closed-form MaxEnt LQR with the observed leader action (``MaxEntLQRGameFollower``)."""
        from bilevel_envs.followers.maxent_lqr_game import MaxEntLQRGameFollower

        return MaxEntLQRGameFollower(beta=beta, gamma=self.gamma_follower, **kwargs)


def raw_env(**kwargs: Any) -> LQRGameEnv:
    """The unwrapped AEC LQR game (kwargs of :class:`LQRGameEnv`)."""
    game = LQRGameEnv(**kwargs)
    game.init_kwargs = dict(kwargs)  # what made it (recorded with results)
    return game


def env(**kwargs: Any):
    """The AEC LQR game with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any):
    """Parallel form via ``turn_based_aec_to_parallel`` (one parallel step = one turn)."""
    return turn_based_aec_to_parallel(raw_env(**kwargs))
