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
Leader: observation ``Box(2,)`` (the state), action ``Box(-100, 100, (1,))``. Follower:
observation ``Box(3,)`` = (s, a), action ``Box(1,)`` (unbounded). All float64. The leader's
bounds are *declared* bounds (``leader_action_bound``), as the building's HVAC box: checkers
and libraries that need a finite Box (Stable-Baselines3's ``check_env``, PPO's clipping) get one
ten times wider than the best known policy's actions (|a| ≤ 10), and ``step`` accepts any finite
action unclipped (the leader's Gaussian policy ``N(Ks, W²)`` is unbounded).

## Episode end
Start at ``s0 = (1, 0)``; truncated after ``max_cycles`` = 100 rounds.

## AEC and parallel forms
``env()`` is the AEC game: leader turn, then follower turn (the follower observes this round's
``a``). ``parallel_env()`` is a :class:`~bilevel_envs.games.base.RoundParallelEnv`: **one
parallel step = one full round** (``{"leader": a, "follower": b}``, played in that order); in it
the follower's observation carries the leader's action of the previous round.

## Rendering
``render_mode="ansi"``: ``render()`` returns a text frame (the round, who moves, the state and the
target, the position on a bar, the last round's actions and rewards); ``"human"`` prints it.

## Arguments
``max_cycles`` (100), ``gamma_follower`` γ_F (0.95), ``gamma_leader`` γ_L (0.99), ``params``
(:class:`~bilevel_envs.games.lqr_logic.LQRGameParams`, the paper's matrices by default),
``leader_action_bound`` (100.0), ``render_mode`` (None, "ansi" or "human").

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

from bilevel_envs.games.base import FOLLOWER, LEADER, LeaderFollowerGame, RoundParallelEnv
from bilevel_envs.games.lqr_logic import LQRGameParams

__all__ = ["LQRGameEnv", "LQRGameParams", "env", "parallel_env", "raw_env"]


def _box(dim: int, bound: float = np.inf) -> spaces.Box:
    return spaces.Box(-bound, bound, (dim,), dtype=np.float64)


class LQRGameEnv(LeaderFollowerGame):
    """The raw AEC LQR game (see the module docstring)."""

    metadata = {"name": "lqr_game_v0", "render_modes": ["human", "ansi"],
                "is_parallelizable": False, "render_fps": 4}
    #: the paper's follower temperature (App. C.6)
    default_beta = 0.1

    def __init__(self, max_cycles: int = 100, gamma_follower: float = 0.95,
                 gamma_leader: float = 0.99, params: LQRGameParams | None = None,
                 leader_action_bound: float = 100.0, render_mode: str | None = None):
        super().__init__(max_cycles=max_cycles, render_mode=render_mode)
        self.params = params if params is not None else LQRGameParams()
        if not isinstance(self.params, LQRGameParams):
            raise ValueError(f"params must be an LQRGameParams, got {type(params).__name__}")
        for name, g in (("gamma_follower", gamma_follower), ("gamma_leader", gamma_leader)):
            if not 0.0 <= float(g) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {g!r}")
        self.gamma_follower = float(gamma_follower)
        self.gamma_leader = float(gamma_leader)
        if isinstance(leader_action_bound, bool) or not isinstance(
                leader_action_bound, (int, float, np.number)) \
                or not (np.isfinite(leader_action_bound) and leader_action_bound > 0):
            raise ValueError(f"leader_action_bound must be a finite number > 0, got "
                             f"{leader_action_bound!r}")
        self.leader_action_bound = float(leader_action_bound)
        n, m, k = self.params.dims
        self.state_dim, self.follower_action_dim, self.leader_action_dim = n, m, k
        self._obs_spaces = {LEADER: _box(n), FOLLOWER: _box(n + k)}
        # declared bounds only (module docstring): step accepts any finite leader action
        self._act_spaces = {LEADER: _box(k, self.leader_action_bound), FOLLOWER: _box(m)}

    def initial_states(self, n: int) -> np.ndarray:
        """``n`` copies of the start state ``s0``, shape ``(n, 2)``."""
        return np.repeat(self.params.s0[None], int(n), axis=0)

    def transition(self, states, a, b):
        """Batched ``s' = A s + B b + C a`` and the rewards of ``(s, a, b)``: ``(s', r_F, r_L)``."""
        n, m, k = self.params.dims
        s = np.asarray(states, dtype=np.float64).reshape(-1, n)
        a = np.asarray(a, dtype=np.float64).reshape(-1, k)
        b = np.asarray(b, dtype=np.float64).reshape(-1, m)
        return self.params.step(s, a, b)

    def leader_obs(self, states):
        """The leader observes the state: a float64 copy, shape ``(N, 2)``."""
        return np.array(states, dtype=np.float64, copy=True)

    def follower_obs(self, states, a):
        """The follower observes ``(s, a)``: shape ``(N, 3)``."""
        a = np.asarray(a, dtype=np.float64).reshape(len(states), -1)
        return np.concatenate([np.asarray(states, dtype=np.float64), a], axis=-1)

    def describe_state(self) -> list[str]:
        """The state, the leader's target ``s*`` and the position on a bar over [−2, 2]."""
        s = np.asarray(self._state, dtype=np.float64)
        target = np.asarray(self.params.target, dtype=np.float64).ravel()
        width, lo, hi = 41, -2.0, 2.0
        bar = ["·"] * width

        def col(x: float) -> int:
            return int(round((np.clip(x, lo, hi) - lo) / (hi - lo) * (width - 1)))

        bar[col(float(target[0]))] = "T"
        bar[col(float(s[0]))] = "@" if lo <= s[0] <= hi else ("<" if s[0] < lo else ">")
        coords = ", ".join(f"{v:+.4f}" for v in s)
        goal = ", ".join(f"{v:+.4f}" for v in target)
        return [f"state s = ({coords}), leader's target s* = ({goal})",
                f"s[0] {lo:+.0f} |{''.join(bar)}| {hi:+.0f}   (@ = s[0], T = s*[0])"]

    def describe_round(self, a: Any, b: Any, r_leader: float, r_follower: float) -> str:
        """``a = +0.1230, b = -0.4560, r_L = 0.001234, r_F = -1.2345``."""
        a, b = np.ravel(a), np.ravel(b)
        return (f"a = {', '.join(f'{v:+.4f}' for v in a)}, b = "
                f"{', '.join(f'{v:+.4f}' for v in b)}, r_L = {r_leader:.4g}, "
                f"r_F = {r_follower:+.4f}")

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


def parallel_env(**kwargs: Any) -> RoundParallelEnv:
    """Parallel form: one parallel step = one full round (the leader's action, then the
    follower's; see the module docstring for what the follower observes)."""
    return RoundParallelEnv(raw_env(**kwargs))
