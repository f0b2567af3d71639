"""Toy leader-follower Markov game (paper §5.3, Fig. 4a, App. C.3).

## Description
Three states S, A, B. In every round the leader sees the state and plays ``a ∈ {0, 1}``; the
follower sees ``(s, a)`` and plays ``b ∈ {s, a, b}`` (encoded 0, 1, 2); then the state moves
deterministically. The leader is paid only when the follower plays ``a`` in S; the follower
prefers the S→B→B loop unless the leader makes A attractive enough (by playing 0 in A often
enough, where the follower earns R for ``b``) — but if the leader plays 0 too often in A the
follower leaves A for B. The optimum is a *stochastic* leader policy (known_optima.md).

| state | leader | follower | next | r_F | r_L |
|---|---|---|---|---|---|
| S | * | s / a / b | S / A / B | 0 / +1 / +1 | 0 / +1 / 0 |
| A | 0 | s / a / b | S / A / B | 0 / 0 / +R | 0 |
| A | 1 | * | S | −1 | 0 |
| B | * | s / a / b | S / B / B | 0 | 0 |

## Spaces
Leader: observation ``Discrete(3)`` (the state), action ``Discrete(2)``. Follower: observation
``MultiDiscrete([3, 2])`` = (state, the leader's action of this round), action ``Discrete(3)``.

## Episode end
Every episode starts in S and is truncated after ``max_cycles`` = 150 rounds (never terminated).

## AEC and parallel forms
``env()`` is the AEC game: leader turn, then follower turn; one cycle of ``agent_iter`` is one
round. ``parallel_env()`` is a :class:`~bilevel_envs.games.base.RoundParallelEnv`: **one
parallel step = one full round** (``{"leader": a, "follower": b}``, played in that order), so
both forms have ``max_cycles`` steps per agent; in the parallel form the follower's observation
carries the leader's action of the previous round, not of the current one.

## Rendering
``render_mode="ansi"``: ``render()`` returns a text frame (the round, who moves, the states with
the current one in brackets, the last round's actions and rewards); ``"human"`` prints it.

## Arguments
``reward`` R ∈ {1, 2} (the paper's figure is R = 2; the authors' code also ships R = 1),
``max_cycles`` (150), ``gamma_follower`` γ_F (0.99), ``gamma_leader`` γ_L (0.99),
``render_mode`` (None, "ansi" or "human").

The exact tables are ``env.unwrapped.model`` (:class:`~bilevel_envs.games.toy_logic.ToyModel`:
``P[s, a, b, s']``, ``r_follower``, ``r_leader``, ``next_state``, ``mu0``).

Example:
    >>> from bilevel_envs.games import toy_game_v0
    >>> env = toy_game_v0.env(reward=2)
    >>> env.reset(seed=0)
    >>> env.agent_selection
    'leader'
    >>> env.unwrapped.model.P.shape
    (3, 2, 3, 3)
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces
from pettingzoo.utils import wrappers

from bilevel_envs.games.base import FOLLOWER, LEADER, LeaderFollowerGame, RoundParallelEnv
from bilevel_envs.games.toy_logic import FOLLOWER_ACTIONS, STATES, ToyModel, toy_model

__all__ = ["ToyGameEnv", "env", "parallel_env", "raw_env"]


class ToyGameEnv(LeaderFollowerGame):
    """The raw AEC toy game (see the module docstring)."""

    metadata = {"name": "toy_game_v0", "render_modes": ["human", "ansi"],
                "is_parallelizable": False, "render_fps": 4}
    #: the paper's follower temperature (App. C.3)
    default_beta = 0.05

    def __init__(self, reward: int = 2, max_cycles: int = 150, gamma_follower: float = 0.99,
                 gamma_leader: float = 0.99, render_mode: str | None = None):
        super().__init__(max_cycles=max_cycles, render_mode=render_mode)
        self.model: ToyModel = toy_model(reward)
        self.reward = int(reward)
        for name, g in (("gamma_follower", gamma_follower), ("gamma_leader", gamma_leader)):
            if not 0.0 <= float(g) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {g!r}")
        self.gamma_follower = float(gamma_follower)
        self.gamma_leader = float(gamma_leader)
        self.n_states, self.n_leader_actions, self.n_follower_actions = self.model.shape
        self._obs_spaces = {LEADER: spaces.Discrete(self.n_states),
                            FOLLOWER: spaces.MultiDiscrete([self.n_states,
                                                            self.n_leader_actions])}
        self._act_spaces = {LEADER: spaces.Discrete(self.n_leader_actions),
                            FOLLOWER: spaces.Discrete(self.n_follower_actions)}

    # ------------------------------------------------------------------ batched logic
    def initial_states(self, n: int) -> np.ndarray:
        """``n`` copies of the start state S (index 0), shape ``(n,)``."""
        return np.full(int(n), int(np.argmax(self.model.mu0)), dtype=np.int64)

    def transition(self, states, a, b):
        """Batched deterministic moves of the table with their rewards: ``(next, r_F, r_L)``."""
        states, a, b = (np.asarray(x, dtype=np.int64) for x in (states, a, b))
        m = self.model
        return m.next_state[states, a, b], m.r_follower[states, a, b], m.r_leader[states, a, b]

    def leader_obs(self, states):
        """The leader observes the state index, shape ``(N,)``."""
        return np.asarray(states, dtype=np.int64)

    def follower_obs(self, states, a):
        """The follower observes ``(state, leader action)``, shape ``(N, 2)``."""
        return np.stack([np.asarray(states, dtype=np.int64),
                         np.asarray(a, dtype=np.int64).reshape(-1)], axis=-1)

    def validate_action(self, agent: str, action: Any) -> int:
        """The action as an ``int`` in the agent's ``Discrete`` space, or ``ValueError``."""
        n = self._act_spaces[agent].n
        if (isinstance(action, (bool, np.bool_)) or not isinstance(action, (int, np.integer))
                or not 0 <= int(action) < int(n)):
            raise ValueError(f"action {action!r} of agent {agent!r} must be an int in "
                             f"[0, {int(n)})")
        return int(action)

    def _null_leader_action(self) -> np.ndarray:
        return np.asarray(0, dtype=np.int64)

    def make_follower(self, beta: float, **kwargs: Any):
        """Soft Q-iteration against the leader's policy (:class:`SoftQIterationFollower`)."""
        from bilevel_envs.followers.soft_q_iteration import SoftQIterationFollower

        return SoftQIterationFollower(beta=beta, gamma=self.gamma_follower, **kwargs)

    def describe_state(self) -> list[str]:
        """The three states with the current one in brackets, e.g. ``S  [A]  B``."""
        now = int(self._state)
        return [f"R = {self.reward}; state:  "
                + "  ".join(f"[{n}]" if i == now else f" {n} " for i, n in enumerate(STATES))]

    def describe_round(self, a: Any, b: Any, r_leader: float, r_follower: float) -> str:
        """``leader played 0, follower played b (r_L = +0, r_F = +2)``."""
        return (f"leader played {int(a)}, follower played {FOLLOWER_ACTIONS[int(b)]} "
                f"(r_L = {r_leader:+g}, r_F = {r_follower:+g})")

    def follower_action_name(self, b: int) -> str:
        """``"s"``, ``"a"`` or ``"b"``."""
        return FOLLOWER_ACTIONS[int(b)]


def raw_env(**kwargs: Any) -> ToyGameEnv:
    """The unwrapped AEC toy game (kwargs of :class:`ToyGameEnv`)."""
    game = ToyGameEnv(**kwargs)
    game.init_kwargs = dict(kwargs)  # what made it (recorded with results)
    return game


def env(**kwargs: Any):
    """The AEC toy game with PettingZoo's order-enforcing wrapper."""
    return wrappers.OrderEnforcingWrapper(raw_env(**kwargs))


def parallel_env(**kwargs: Any) -> RoundParallelEnv:
    """Parallel form: one parallel step = one full round (the leader's action, then the
    follower's; see the module docstring for what the follower observes)."""
    return RoundParallelEnv(raw_env(**kwargs))
