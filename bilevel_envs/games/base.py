"""Shared AEC machinery for two-player leader-follower Markov games (paper §2, eq. 4).

One round (= one cycle of the AEC loop) is: the leader sees the state ``s`` and plays ``a``;
the follower sees ``(s, a)`` and plays ``b``; both rewards ``r_L(s, a, b)``, ``r_F(s, a, b)``
(of the pre-move state) are paid and the state moves to ``s'``. Episodes never terminate; all
agents are truncated after ``max_cycles`` rounds.

Each game implements the *batched* pure functions :meth:`LeaderFollowerGame.initial_states` and
:meth:`LeaderFollowerGame.transition`; the AEC ``step`` calls them with a batch of one, so the
PettingZoo env and the vectorised rollouts of ``GameBestResponse`` can never disagree.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from pettingzoo import AECEnv
from pettingzoo.utils import AgentSelector

__all__ = ["LeaderFollowerGame"]

LEADER, FOLLOWER = "leader", "follower"


class LeaderFollowerGame(AECEnv):
    """Base AEC env: agents ``["leader", "follower"]``, leader first, then the state moves.

    Subclasses set ``self._obs_spaces`` / ``self._act_spaces`` (dicts keyed by agent),
    ``max_cycles``, ``gamma_leader``, ``gamma_follower`` and implement the batched logic.
    """

    metadata = {"render_modes": ["ansi"], "is_parallelizable": False}
    possible_agents = [LEADER, FOLLOWER]
    #: the keyword arguments the game was made with (set by the module's ``raw_env``)
    init_kwargs: dict = {}
    #: the follower temperature β of the game's documented experiments (CLI default)
    default_beta: float | None = None

    def __init__(self, max_cycles: int, render_mode: str | None = None):
        super().__init__()
        if int(max_cycles) != max_cycles or max_cycles < 1:
            raise ValueError(f"max_cycles must be a positive integer, got {max_cycles!r}")
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']} "
                             f"or None, got {render_mode!r}")
        self.max_cycles = int(max_cycles)
        self.render_mode = render_mode
        self.agents: list[str] = []
        self.np_random, _ = seeding.np_random(None)

    # ------------------------------------------------------------------ batched logic
    def initial_states(self, n: int) -> np.ndarray:
        """``n`` start states (deterministic in both paper games)."""
        raise NotImplementedError

    def transition(self, states: np.ndarray, a: np.ndarray, b: np.ndarray):
        """Batched dynamics: ``(next_states, r_follower, r_leader)`` for arrays of rounds."""
        raise NotImplementedError

    def leader_obs(self, states: np.ndarray) -> np.ndarray:
        """The leader's observations of a batch of states."""
        raise NotImplementedError

    def follower_obs(self, states: np.ndarray, a: np.ndarray) -> np.ndarray:
        """The follower's observations of a batch of ``(s, a)``."""
        raise NotImplementedError

    def validate_action(self, agent: str, action: Any) -> Any:
        """Return the action as a float array of the space's shape, or raise ``ValueError``."""
        space = self._act_spaces[agent]
        try:
            arr = np.asarray(action, dtype=np.float64).reshape(space.shape)
        except (TypeError, ValueError):
            raise ValueError(f"action {action!r} of agent {agent!r} must be an array of shape "
                             f"{space.shape}") from None
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"action {action!r} of agent {agent!r} contains NaN or inf")
        return arr

    def make_follower(self, beta: float, **kwargs: Any):
        """The follower's exact soft best-response solver for this game."""
        raise NotImplementedError

    # ------------------------------------------------------------------ PettingZoo API
    def observation_space(self, agent: str):
        return self._obs_spaces[agent]

    def action_space(self, agent: str):
        return self._act_spaces[agent]

    def observe(self, agent: str):
        if agent == LEADER:
            return self.leader_obs(self._state[None])[0]
        return self.follower_obs(self._state[None], self._leader_action[None])[0]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        if seed is not None or not hasattr(self, "_state"):
            self.np_random, _ = seeding.np_random(seed)
        # ``options`` are accepted and ignored (no game option exists; PettingZoo's api_test
        # passes arbitrary ones).
        self.agents = self.possible_agents[:]
        self.rewards = {ag: 0.0 for ag in self.agents}
        self._cumulative_rewards = {ag: 0.0 for ag in self.agents}
        self.terminations = {ag: False for ag in self.agents}
        self.truncations = {ag: False for ag in self.agents}
        self.infos = {ag: {} for ag in self.agents}
        self._state = self.initial_states(1)[0]
        self._leader_action = self._null_leader_action()
        self._cycle = 0
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()

    def _null_leader_action(self) -> np.ndarray:
        """Placeholder leader action shown to the follower before the leader has moved."""
        return np.zeros(self._act_spaces[LEADER].shape,
                        dtype=self._act_spaces[LEADER].dtype)

    def step(self, action: Any) -> None:
        agent = self.agent_selection
        if self.terminations[agent] or self.truncations[agent]:
            self._was_dead_step(action)
            return
        action = self.validate_action(agent, action)
        self._cumulative_rewards[agent] = 0.0
        if agent == LEADER:
            self._leader_action = np.asarray(action, dtype=self._act_spaces[LEADER].dtype)
            self._clear_rewards()
            self.infos = {ag: {} for ag in self.agents}
        else:
            nxt, r_f, r_l = self.transition(self._state[None], self._leader_action[None],
                                            np.asarray([action]))
            if not (np.isfinite(r_f[0]) and np.isfinite(r_l[0])):
                raise ValueError(f"non-finite reward (leader {r_l[0]}, follower {r_f[0]})")
            self.rewards = {LEADER: float(r_l[0]), FOLLOWER: float(r_f[0])}
            self._state = nxt[0]
            self._cycle += 1
            done = self._cycle >= self.max_cycles
            self.truncations = {ag: done for ag in self.agents}
            self.infos = {ag: {"cycle": self._cycle} for ag in self.agents}
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()

    def render(self) -> str | None:
        if self.render_mode is None:
            return None
        return f"cycle {getattr(self, '_cycle', 0)}: state {getattr(self, '_state', None)}"

    def close(self) -> None:
        pass

    @property
    def state_value(self) -> np.ndarray:
        """A copy of the current internal state."""
        return np.array(self._state, copy=True)
