"""A leader-follower Markov game seen by the leader: the follower plays its soft best response.

``GameBestResponse(game, beta=...)`` (or :func:`~bilevel_envs.wrappers.best_response`) turns a game of
:mod:`bilevel_envs.games` into a single-agent Gymnasium env for the leader: observation ``s``,
action ``a``, reward ``r_L(s, a, b)`` with ``b ~ g^{θ†}(·|s, a)`` drawn from the follower's
exact soft best response to the leader's *current policy* ``f`` (paper eq. 4; the follower
responds to ``f``, not to single actions). Call :meth:`GameBestResponse.set_leader_policy` when
``f`` changes: the follower is re-solved (warm-started). ``info`` carries the follower's action,
its reward ``r_F`` and its soft value ``V_F(s, a)`` (needed by Theorem 2's eq. 9).

Leader policies: the toy game takes ``(S, A)`` probabilities ``f(a|s)``; the LQR game takes the
gain ``K`` (shape ``(k, n)``) of ``a ~ N(K s, W²)``, optionally as ``(K, W)``.

The wrapper also exposes the leader's *parameter* θ like a configurable MDP does
(``config_space``, ``config``, ``set_config``), so θ-based leaders (:mod:`bilevel_agents`) and
:func:`bilevel_agents.exact.hypergradient` work unchanged: toy game θ = the parameters of
``leader_parameterization`` (default the ``S·A`` logits of a tabular softmax policy
``f = softmax(θ.reshape(S, A))``; :class:`~bilevel_envs.games.policies.MLPSoftmax` for the
authors' MLP actor); LQR game θ = ``K.ravel()`` (W fixed).
:meth:`GameBestResponse.leader_score` gives ``∇θ log f_θ(a|s)`` for batches.

Any game follower of the protocol (:mod:`bilevel_envs.followers.base`) can replace the exact
one (e.g. ``follower=make_follower("kstep:10:reset", game, beta, seed=0)``): the wrapper calls
``solve(game, leader_policy)`` on every leader-policy change, samples with ``act``, raises
:class:`~bilevel_envs.followers.base.NotPublishedError` from ``policy`` / ``soft_q`` / ``soft_v`` /
:meth:`GameBestResponse.follower_value` when the follower does not publish them, and then puts
NaN in ``info["follower_value"]`` and ``GameBatch.follower_value``.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import gymnasium as gym
import numpy as np

from bilevel_envs.followers.base import check_follower_beta, published, require_published
from bilevel_envs.games.base import LeaderFollowerGame
from bilevel_envs.games.policies import TabularSoftmax
from bilevel_envs.utils import as_real_array, check_beta

__all__ = ["GameBatch", "GameBestResponse"]


class GameBatch(NamedTuple):
    """``n_episodes`` complete episodes stepped together; arrays are ``(E, T, ...)``.

    ``obs`` is the leader's observation (= the state), ``next_obs`` the next state,
    ``follower_value`` is ``V_F(s_t, a_t)`` of the follower solution used for sampling.
    """

    obs: np.ndarray
    leader_actions: np.ndarray
    follower_actions: np.ndarray
    r_leader: np.ndarray
    r_follower: np.ndarray
    next_obs: np.ndarray
    follower_value: np.ndarray

    @property
    def n_episodes(self) -> int:
        """Number of episodes ``E`` (rows)."""
        return int(self.r_leader.shape[0])

    @property
    def horizon(self) -> int:
        """Steps per episode ``T`` (columns)."""
        return int(self.r_leader.shape[1])

    def returns(self, gamma: float = 1.0) -> np.ndarray:
        """Per-episode ``Σ_t γ^t r_L``, shape ``(E,)``."""
        return self.r_leader @ (gamma ** np.arange(self.horizon))


class GameBestResponse(gym.Env):
    """Single-agent Gymnasium env for the leader of a leader-follower Markov game.

    Args:
        game: a game of :mod:`bilevel_envs.games` (AEC, parallel or raw form).
        beta: the follower's entropy temperature β > 0 (paper: 0.05 toy, 0.1 LQR).
        leader_policy: the initial leader policy (uniform for the toy game; ``K = 0``,
            ``W = 1e-3`` for the LQR game).
        follower: a custom follower (default: ``game.make_follower(beta, **follower_kwargs)``).
        leader_parameterization: tabular games only: how θ maps to ``f`` (default
            ``TabularSoftmax``; ``MLPSoftmax(S, A)`` for an MLP leader).
        **follower_kwargs: e.g. ``bootstrap="official"``, ``tol``, ``max_iterations``.

    Example:
        >>> import numpy as np
        >>> from bilevel_envs.games import toy_game_v0
        >>> from bilevel_envs.wrappers import GameBestResponse
        >>> br = GameBestResponse(toy_game_v0.env(reward=2), beta=0.05)
        >>> br.set_leader_policy(np.array([[.5, .5], [.5, .5], [.5, .5]]))
        >>> br.policy.shape  # g(b|s, a)
        (3, 2, 3)
        >>> obs, info = br.reset(seed=0)
        >>> obs, r_leader, terminated, truncated, info = br.step(0)
        >>> sorted(info)
        ['follower_action', 'follower_reward', 'follower_value']
    """

    metadata = {"render_modes": []}

    def __init__(self, game: Any, beta: float, leader_policy: Any = None, follower: Any = None,
                 leader_parameterization: Any = None, **follower_kwargs: Any):
        super().__init__()
        problem = game.unwrapped
        if not isinstance(problem, LeaderFollowerGame):
            raise ValueError(f"game must be a bilevel_envs leader-follower game, got "
                             f"{type(problem).__name__}")
        self.game = game
        self.beta = check_beta(beta)
        self.observation_space = problem.observation_space("leader")
        self.action_space = problem.action_space("leader")
        if follower is None:
            follower = problem.make_follower(self.beta, **follower_kwargs)
        elif follower_kwargs:
            raise ValueError(f"follower_kwargs {sorted(follower_kwargs)} given with a follower")
        else:
            check_follower_beta(follower, self.beta)
        self.follower = follower
        self._is_toy = hasattr(problem, "model")
        if self._is_toy:
            self.leader_parameterization = leader_parameterization or TabularSoftmax(
                problem.n_states, problem.n_leader_actions)
        elif leader_parameterization is not None:
            raise ValueError("leader_parameterization is only supported for tabular games")
        self._score_cache: tuple[Any, np.ndarray] | None = None
        self._rng = np.random.default_rng()
        self.set_leader_policy(self._default_policy() if leader_policy is None else leader_policy)

    # ------------------------------------------------------------------ problem
    @property
    def problem(self) -> Any:
        """The raw game (used by :mod:`bilevel_agents.exact` for dispatch)."""
        return self.game.unwrapped

    @property
    def gamma_leader(self) -> float:
        """The leader's discount γ_L."""
        return self.problem.gamma_leader

    @property
    def gamma_follower(self) -> float:
        """The follower's discount γ_F."""
        return self.problem.gamma_follower

    @property
    def max_episode_steps(self) -> int:
        """Episode length: the game's ``max_cycles`` rounds."""
        return self.problem.max_cycles

    # ------------------------------------------------------------------ leader policy
    def _default_policy(self) -> Any:
        p = self.problem
        if self._is_toy:
            return np.full((p.n_states, p.n_leader_actions), 1.0 / p.n_leader_actions)
        k, n = p.leader_action_dim, p.state_dim
        return np.zeros((k, n)), 1e-3

    def set_leader_policy(self, policy: Any) -> None:
        """Set the leader's policy ``f`` and re-solve the follower's best response.

        Args:
            policy: toy game: ``(S, A)`` probabilities; LQR game: ``K`` ``(k, n)`` or
                ``(K, W)``.

        Raises:
            ValueError: malformed policy, or a non-stabilisable LQR at this ``K``.
        """
        self.follower.solve(self.problem, policy)
        self._theta = None
        self._sync_leader_policy(policy)

    def _sync_leader_policy(self, given: Any = None) -> None:
        """Cache the leader policy the follower has answered (sampling tables, K and W).

        Read from the follower (``leader_policy``, or ``K`` and ``W``) when it exposes it, else
        the policy given to :meth:`set_leader_policy` (``None``: keep the cached one).
        """
        self._score_cache = None
        if self._is_toy:
            probs = getattr(self.follower, "leader_policy", None)
            if probs is None:
                probs = self._leader_probs if given is None else self._parse_toy_policy(given)
            self._leader_probs = np.array(probs, dtype=np.float64, copy=True)
            self._leader_cdf = np.cumsum(self._leader_probs, axis=1)
        else:
            K, W = getattr(self.follower, "K", None), getattr(self.follower, "W", None)
            if K is None or W is None:
                K, W = (self._K, self._W) if given is None else self._parse_lqr_policy(given)
            self._K, self._W = np.array(K, np.float64, copy=True), np.array(W, np.float64,
                                                                             copy=True)

    def _parse_toy_policy(self, policy: Any) -> np.ndarray:
        p = self.problem
        f = np.asarray(policy, dtype=np.float64)
        if f.shape != (p.n_states, p.n_leader_actions):
            raise ValueError(f"leader_policy must have shape {(p.n_states, p.n_leader_actions)}, "
                             f"got {f.shape}")
        return f

    def _parse_lqr_policy(self, policy: Any) -> tuple[np.ndarray, np.ndarray]:
        p = self.problem
        k, n = p.leader_action_dim, p.state_dim
        K, W = policy if isinstance(policy, tuple) else (policy, getattr(self, "_W", None))
        W = np.full((k, k), 1e-3) * np.eye(k) if W is None else np.asarray(W, np.float64)
        W = W * np.eye(k) if W.ndim == 0 else W.reshape(k, k)
        return np.asarray(K, dtype=np.float64).reshape(k, n), W

    def state_dict(self) -> dict[str, Any]:
        """θ (as last set), the leader policy, the follower's state and the env's generators."""
        theta = None if self._theta is None else self._theta.copy()
        follower = self.follower.state_dict() if hasattr(self.follower, "state_dict") else None
        leader = (self._leader_probs.copy() if self._is_toy
                  else (self._K.copy(), self._W.copy()))
        return {"theta": theta, "follower": follower, "leader_policy": leader,
                "rng": self.np_random.bit_generator.state,
                "follower_rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` exactly (no solve).

        A follower without ``load_state_dict`` is re-solved at the stored leader policy.
        """
        if state.get("follower") is not None and hasattr(self.follower, "load_state_dict"):
            self.follower.load_state_dict(state["follower"])
            self._sync_leader_policy(state.get("leader_policy"))
        else:
            leader = state.get("leader_policy")
            if leader is None:
                raise ValueError("state has no leader_policy to re-solve the follower at (a "
                                 "state_dict of an older version?)")
            self.follower.solve(self.problem, leader)
            self._sync_leader_policy(leader)
        self._theta = None if state["theta"] is None else np.array(state["theta"], np.float64)
        if state.get("rng") is not None:
            self.np_random.bit_generator.state = state["rng"]
        if state.get("follower_rng") is not None:
            self._rng.bit_generator.state = state["follower_rng"]

    @property
    def leader_policy(self) -> Any:
        """Toy: ``(S, A)`` probabilities. LQR: ``(K, W)``."""
        if self._is_toy:
            return self._leader_probs.copy()
        return self._K.copy(), self._W.copy()

    # ------------------------------------------------------------------ θ (policy parameters)
    @property
    def config_space(self) -> gym.spaces.Box:
        """Box of the leader parameter θ (toy: ``S·A`` logits; LQR: ``K.ravel()``)."""
        if not hasattr(self, "_config_space"):
            p = self.problem
            d = (self.leader_parameterization.dim if self._is_toy
                 else p.leader_action_dim * p.state_dim)
            self._config_space = gym.spaces.Box(-np.inf, np.inf, (d,), dtype=np.float64)
        return self._config_space

    @property
    def config(self) -> np.ndarray:
        """The current θ (as last set; log-probabilities if the policy was set directly)."""
        if self._theta is not None:
            return self._theta.copy()
        if self._is_toy:
            return np.log(np.clip(self._leader_probs, 1e-300, None)).ravel()
        return self._K.ravel().copy()

    def theta_to_policy(self, theta: Any) -> Any:
        """The leader policy that θ encodes (the argument of :meth:`set_leader_policy`)."""
        theta = as_real_array("config (theta)", theta)
        if theta.shape != self.config_space.shape or not np.all(np.isfinite(theta)):
            raise ValueError(f"config (theta) must be a finite array of shape "
                             f"{self.config_space.shape}, got {theta.shape}")
        if self._is_toy:
            return self.leader_parameterization.probs(theta)
        p = self.problem
        return theta.reshape(p.leader_action_dim, p.state_dim), self._W

    def set_config(self, theta: Any) -> None:
        """Set θ and re-solve the follower (``ValueError`` for a non-stabilisable LQR ``K``)."""
        policy = self.theta_to_policy(theta)
        self.set_leader_policy(policy)
        self._theta = np.asarray(theta, dtype=np.float64).copy()

    def leader_score(self, obs: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``∇θ log f_θ(a|s)`` at the current θ for batches ``obs (..., ·)``, ``actions``.

        Toy: from the parameterisation (tabular: ``e_s ⊗ (e_a − f(·|s))``). LQR:
        ``vec(W⁻² (a − Ks) sᵀ)``. Shape ``(..., d)``.
        """
        if self._is_toy and self._theta is not None:
            if self._score_cache is None or not np.array_equal(self._score_cache[0], self._theta):
                self._score_cache = (self._theta.copy(),
                                     self.leader_parameterization.score_table(self._theta))
            return self._score_cache[1][np.asarray(obs, dtype=np.int64),
                                        np.asarray(actions, dtype=np.int64)]
        if self._is_toy:  # policy set directly: scores of the tabular logits θ = log f
            p = self.problem
            obs = np.asarray(obs, dtype=np.int64)
            actions = np.asarray(actions, dtype=np.int64)
            inner = np.eye(p.n_leader_actions)[actions] - self._leader_probs[obs]
            out = np.zeros(obs.shape + (p.n_states, p.n_leader_actions))
            np.put_along_axis(out, obs[..., None, None], inner[..., None, :], axis=-2)
            return out.reshape(obs.shape + (-1,))
        s = np.asarray(obs, dtype=np.float64)
        a = np.asarray(actions, dtype=np.float64).reshape(s.shape[:-1] + (-1,))
        resid = a - s @ self._K.T
        winv2 = np.linalg.inv(self._W @ self._W.T)
        g = (resid @ winv2.T)[..., :, None] * s[..., None, :]
        return g.reshape(s.shape[:-1] + (-1,))

    @property
    def leader_gain(self) -> np.ndarray:
        """LQR: the gain ``K`` ``(k, n)``."""
        return self._K.copy()

    @property
    def leader_noise(self) -> np.ndarray:
        """LQR: the noise scale ``W`` ``(k, k)``."""
        return self._W.copy()

    def sample_leader_actions(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample ``a ~ f(·|s)`` for a batch of leader observations."""
        if self._is_toy:
            cdf = self._leader_cdf[np.asarray(obs, dtype=np.int64)]
            u = rng.random(cdf.shape[0])[:, None]
            return np.minimum((u >= cdf).sum(axis=1), cdf.shape[1] - 1).astype(np.int64)
        s = np.atleast_2d(obs)
        eps = rng.standard_normal((s.shape[0], self._K.shape[0]))
        return s @ self._K.T + eps @ self._W.T

    # ------------------------------------------------------------------ follower
    @property
    def policy(self) -> Any:
        """``g^{θ†}(b|s, a)``: ``(S, A, B)`` array (toy) or a callable ``(s, a) -> (mean, cov)``.

        Raises:
            NotPublishedError: (an ``AttributeError``) the follower does not publish it.
        """
        return require_published(self.follower, "policy")

    @property
    def soft_q(self) -> Any:
        """``Q_F(s, a, b)``: ``(S, A, B)`` array or a callable on batches (or NotPublishedError)."""
        return require_published(self.follower, "soft_q")

    @property
    def soft_v(self) -> Any:
        """``V_F(s, a)``: ``(S, A)`` array or a callable on batches (or NotPublishedError)."""
        return require_published(self.follower, "soft_v")

    def observe(self, batch: GameBatch) -> None:
        """Hand episodes the leader collected to a follower that learns from them (``observe``).

        A no-op for followers without ``observe`` (exact and k-step solvers). The wrapper never
        calls it by itself: rollouts have no side effect on the follower.
        """
        fn = getattr(self.follower, "observe", None)
        if callable(fn):
            fn(batch)

    def follower_value(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``V_F(s, a)`` for batches ``s (N, ...)``, ``a (N, ...)``, shape ``(N,)``.

        Raises:
            NotPublishedError: the follower does not publish ``soft_v``.
        """
        soft_v = require_published(self.follower, "soft_v")
        if self._is_toy:
            return soft_v[np.asarray(s, dtype=np.int64), np.asarray(a, dtype=np.int64)]
        return soft_v(np.atleast_2d(s), np.asarray(a).reshape(len(s), -1))

    def _follower_value_or_nan(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        if published(self.follower, "soft_v") is None:
            return np.full(len(np.asarray(s)), np.nan)
        return self.follower_value(s, a)

    def follower_action(self, s: Any, a: Any, rng: np.random.Generator | None = None) -> Any:
        """Sample one ``b ~ g(·|s, a)``."""
        obs = self.problem.follower_obs(np.asarray([s]), np.asarray([a]))
        return self.follower.act(obs, rng or self._rng)[0]

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at the game's start state (Gymnasium API).

        Args:
            seed: seeds the follower's action sampling.
            options: ``{"leader_policy": θ}`` sets the leader's policy first (the follower
                re-solves); no other option exists.

        Raises:
            ValueError: an unknown option.
        """
        super().reset(seed=seed)
        options = dict(options or {})
        if "leader_policy" in options:
            self.set_leader_policy(options.pop("leader_policy"))
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; allowed: "
                             "['leader_policy']")
        self._state = self.problem.initial_states(1)[0]
        self._t = 0
        return self._obs(), {}

    def _obs(self):
        return self.problem.leader_obs(np.asarray([self._state]))[0]

    def step(self, action: Any):
        """Play the leader's action; the follower answers with ``b ~ g(·|s, a)`` (Gymnasium API).

        Returns:
            ``(obs, r_leader, False, truncated, info)`` with the follower's ``follower_action``,
            ``follower_reward`` and ``follower_value`` ``V_F(s, a)`` (``nan`` if not published).

        Raises:
            RuntimeError: before :meth:`reset`.
            ValueError: an action outside the leader's space, or a non-finite reward.
        """
        if not hasattr(self, "_state"):
            raise RuntimeError("call reset() before step()")
        a = self.problem.validate_action("leader", action)
        a_arr = np.asarray([a])
        s_arr = np.asarray([self._state])
        fobs = self.problem.follower_obs(s_arr, a_arr)
        b = self.follower.act(fobs, self.np_random)
        v_f = float(self._follower_value_or_nan(s_arr, a_arr)[0])
        nxt, r_f, r_l = self.problem.transition(s_arr, a_arr, b)
        if not (np.isfinite(r_f[0]) and np.isfinite(r_l[0])):
            raise ValueError(f"non-finite reward (leader {r_l[0]}, follower {r_f[0]})")
        self._state = nxt[0]
        self._t += 1
        truncated = self._t >= self.max_episode_steps
        b0 = b[0]
        info = {"follower_action": int(b0) if self._is_toy else np.array(b0, copy=True),
                "follower_reward": float(r_f[0]), "follower_value": v_f}
        return self._obs(), float(r_l[0]), False, bool(truncated), info

    # ------------------------------------------------------------------ batched rollouts
    def rollout(self, n_episodes: int, *, seed: int | None = None,
                rng: np.random.Generator | None = None,
                leader_sampler: Callable[[np.ndarray, np.random.Generator], np.ndarray]
                | None = None, horizon: int | None = None) -> GameBatch:
        """Roll out ``n_episodes`` complete episodes stepped together (loop over time only).

        Args:
            n_episodes: number of parallel episodes.
            seed: seed a fresh generator (reproducible batches); else ``rng`` or the env's.
            leader_sampler: ``(obs (E, ...), rng) -> actions``; default: the current ``f``
                (e.g. pass a uniform/random sampler for exploration).
            horizon: episode length (default ``max_cycles``).
        """
        n_episodes = int(n_episodes)
        if n_episodes < 1:
            raise ValueError(f"n_episodes must be >= 1, got {n_episodes}")
        if seed is not None:
            rng = np.random.default_rng(seed)
        rng = rng if rng is not None else self.np_random
        sampler = leader_sampler or self.sample_leader_actions
        T = int(horizon or self.max_episode_steps)
        prob = self.problem
        s = prob.initial_states(n_episodes)
        cols: dict[str, list] = {k: [] for k in GameBatch._fields}
        for _ in range(T):
            obs = prob.leader_obs(s)
            a = sampler(obs, rng)
            b = self.follower.act(prob.follower_obs(s, a), rng)
            v_f = self._follower_value_or_nan(s, a)
            nxt, r_f, r_l = prob.transition(s, a, b)
            for key, val in zip(GameBatch._fields, (obs, a, b, r_l, r_f, nxt, v_f)):
                cols[key].append(val)
            s = nxt
        return GameBatch(*(np.swapaxes(np.stack(cols[k]), 0, 1) for k in GameBatch._fields))
