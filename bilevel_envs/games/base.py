"""Shared AEC machinery for two-player leader-follower Markov games (paper §2, eq. 4).

One round (= one cycle of the AEC loop) is: the leader sees the state ``s`` and plays ``a``;
the follower sees ``(s, a)`` and plays ``b``; both rewards ``r_L(s, a, b)``, ``r_F(s, a, b)``
(of the pre-move state) are paid and the state moves to ``s'``. Episodes never terminate; all
agents are truncated after ``max_cycles`` rounds.

Each game implements the *batched* pure functions :meth:`LeaderFollowerGame.initial_states` and
:meth:`LeaderFollowerGame.transition`; the AEC ``step`` calls them with a batch of one, so the
PettingZoo env and the vectorised rollouts of ``GameBestResponse`` can never disagree.

Parallel form (:class:`RoundParallelEnv`, each game's ``parallel_env()``): **one parallel step is
one full round**. Both actions are given at once and played in order (the leader's, then the
follower's), so ``max_cycles`` counts the same rounds in both forms (PettingZoo's
``max_cycles_test``). Because the two actions are submitted together, in the parallel form the
follower chooses ``b`` without seeing this round's ``a``: its observation ``(s, a)`` carries the
leader's action of the *previous* round (0 before the first). The game itself, where the
follower sees ``a`` before it acts, is the AEC form (``env()``), which ``GameBestResponse`` and
every leader use; ``turn_based_aec_to_parallel(raw_env())`` gives a parallel view with one
turn per step.

Rendering: ``render_mode="ansi"`` returns a text frame of the round
(:meth:`LeaderFollowerGame.ansi_frame`), ``"human"`` prints it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium.utils import seeding
from pettingzoo import AECEnv, ParallelEnv
from pettingzoo.utils import AgentSelector

__all__ = ["LeaderFollowerGame", "RoundParallelEnv"]

LEADER, FOLLOWER = "leader", "follower"


class LeaderFollowerGame(AECEnv):
    """Base AEC env: agents ``["leader", "follower"]``, leader first, then the state moves.

    Subclasses set ``self._obs_spaces`` / ``self._act_spaces`` (dicts keyed by agent),
    ``max_cycles``, ``gamma_leader``, ``gamma_follower`` and implement the batched logic.
    """

    metadata = {"render_modes": ["human", "ansi"], "is_parallelizable": False, "render_fps": 4}
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
        """The observation space of ``agent`` (``"leader"`` or ``"follower"``; PettingZoo API)."""
        return self._obs_spaces[agent]

    def action_space(self, agent: str):
        """The action space of ``agent`` (``"leader"`` or ``"follower"``; PettingZoo API)."""
        return self._act_spaces[agent]

    def observe(self, agent: str):
        """The current observation of ``agent``: the state (leader) or ``(s, a)`` (follower)."""
        if agent == LEADER:
            return self.leader_obs(self._state[None])[0]
        return self.follower_obs(self._state[None], self._leader_action[None])[0]

    def reset(self, seed: int | None = None, options: dict | None = None) -> None:
        """Start an episode at the game's start state, the leader to move (PettingZoo AEC API).

        Args:
            seed: seeds ``np_random`` (kept across resets when ``None``).
            options: accepted and ignored (the games have no reset option).
        """
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
        self._last_round: tuple[Any, Any, float, float] | None = None  # (a, b, r_L, r_F)
        self._selector = AgentSelector(self.agents)
        self.agent_selection = self._selector.reset()

    def _null_leader_action(self) -> np.ndarray:
        """Placeholder leader action shown to the follower before the leader has moved."""
        return np.zeros(self._act_spaces[LEADER].shape,
                        dtype=self._act_spaces[LEADER].dtype)

    def step(self, action: Any) -> None:
        """Play the selected agent's action (PettingZoo AEC API).

        The leader's action is stored and shown to the follower; the follower's action completes
        the round: rewards, transition, and truncation after ``max_cycles`` rounds.

        Raises:
            ValueError: an action outside the agent's space, or a non-finite reward.
        """
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
            self._last_round = (self._leader_action, action, float(r_l[0]), float(r_f[0]))
            self._state = nxt[0]
            self._cycle += 1
            done = self._cycle >= self.max_cycles
            self.truncations = {ag: done for ag in self.agents}
            self.infos = {ag: {"cycle": self._cycle} for ag in self.agents}
        self.agent_selection = self._selector.next()
        self._accumulate_rewards()

    def render(self) -> str | None:
        """``"ansi"``: the text frame of :meth:`ansi_frame`; ``"human"``: print it (returns
        ``None``); no render mode: ``None``."""
        if self.render_mode is None:
            return None
        frame = self.ansi_frame()
        if self.render_mode == "human":
            print(frame, flush=True)
            return None
        return frame

    def ansi_frame(self) -> str:
        """A text picture of the game now: the round, who moves, the state and the last round's
        actions and rewards (games override :meth:`describe_state` and :meth:`describe_round`)."""
        name = self.metadata.get("name", type(self).__name__)
        if not hasattr(self, "_state"):
            return f"{name}: not started (call reset())"
        mover = self.agent_selection if self.agents and not any(self.truncations.values()) \
            else "nobody"
        lines = [f"{name} — round {self._cycle} of {self.max_cycles} played, {mover} to move"]
        lines += [f"  {line}" for line in self.describe_state()]
        if mover == FOLLOWER:
            a = ", ".join(f"{v:+.4g}" for v in np.ravel(self._leader_action))
            lines.append(f"  this round: the leader played a = {a}")
        last = self._last_round
        lines.append("  last round: " + ("none yet" if last is None else
                                         self.describe_round(*last)))
        return "\n".join(lines)

    def describe_state(self) -> list[str]:
        """Lines of :meth:`ansi_frame` showing the current state (default: its value)."""
        return [f"state {self._state}"]

    def describe_round(self, a: Any, b: Any, r_leader: float, r_follower: float) -> str:
        """One line of :meth:`ansi_frame` for a played round."""
        return f"leader a = {a}, follower b = {b}, r_L = {r_leader:+.4g}, r_F = {r_follower:+.4g}"

    def close(self) -> None:
        """Nothing to release."""
        pass

    @property
    def state_value(self) -> np.ndarray:
        """A copy of the current internal state."""
        return np.array(self._state, copy=True)


class RoundParallelEnv(ParallelEnv):
    """The parallel form of a leader-follower game: **one** ``step`` **= one full round**.

    ``step({"leader": a, "follower": b})`` plays ``a`` then ``b`` in the AEC game it wraps
    (rewards of the round, then the state moves), so an episode has ``max_cycles`` parallel
    steps, as many as rounds. The follower's observation is the AEC ``observe("follower")`` at
    the start of the round: ``(s, a)`` with the leader's action of the previous round (the
    follower commits without seeing this round's ``a``; see the module docstring).
    ``unwrapped`` is the raw game, so ``GameBestResponse(parallel_env())`` works as with
    ``env()``.

    Args:
        game: a raw :class:`LeaderFollowerGame` (a module's ``raw_env()``).
    """

    def __init__(self, game: LeaderFollowerGame):
        if not isinstance(game, LeaderFollowerGame):
            raise ValueError(f"game must be a raw LeaderFollowerGame, got {type(game).__name__}")
        self.game = game
        self.possible_agents = list(game.possible_agents)
        self.metadata = game.metadata
        self.render_mode = game.render_mode
        self.agents: list[str] = []

    @property
    def unwrapped(self) -> LeaderFollowerGame:
        """The raw game."""
        return self.game

    def observation_space(self, agent: str):
        """The observation space of ``agent`` (the game's)."""
        return self.game.observation_space(agent)

    def action_space(self, agent: str):
        """The action space of ``agent`` (the game's)."""
        return self.game.action_space(agent)

    def reset(self, seed: int | None = None, options: dict | None = None):
        """Start an episode: ``(observations, infos)`` of both agents (PettingZoo parallel API)."""
        self.game.reset(seed=seed, options=options)
        self.agents = list(self.game.agents)
        return ({ag: self.game.observe(ag) for ag in self.agents},
                {ag: {} for ag in self.agents})

    def step(self, actions: dict[str, Any]):
        """Play one round: the leader's action, then the follower's (PettingZoo parallel API).

        Returns:
            ``(observations, rewards, terminations, truncations, infos)`` of the agents alive
            at the start of the round; after the last round ``agents`` is empty.

        Raises:
            ValueError: an agent's action is missing or outside its space.
        """
        if not self.agents:
            return {}, {}, {}, {}, {}
        missing = [ag for ag in self.agents if ag not in actions]
        if missing:
            raise ValueError(f"a round needs the actions of {missing}, got {sorted(actions)}")
        game = self.game
        game.step(actions[LEADER])
        game.step(actions[FOLLOWER])
        agents = self.agents
        observations = {ag: game.observe(ag) for ag in agents}
        rewards = {ag: float(game.rewards[ag]) for ag in agents}
        terminations = {ag: bool(game.terminations[ag]) for ag in agents}
        truncations = {ag: bool(game.truncations[ag]) for ag in agents}
        infos = {ag: dict(game.infos[ag]) for ag in agents}
        self.agents = [ag for ag in agents if not (terminations[ag] or truncations[ag])]
        return observations, rewards, terminations, truncations, infos

    def render(self) -> str | None:
        """The game's :meth:`LeaderFollowerGame.render`."""
        return self.game.render()

    def close(self) -> None:
        """Close the game."""
        self.game.close()
