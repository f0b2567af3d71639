"""Base classes shared by every configurable MDP of the suite.

A *configurable MDP* (paper §2) is an MDP ``M_θ`` whose rewards and/or dynamics depend on a
leader parameter ``θ``. The follower acts in it; the leader chooses ``θ``. Each problem is one
subclass of :class:`ConfigurableEnv` that implements a *batched* simulator
(:meth:`ConfigurableEnv.transition`) used both by :meth:`step` and by the vectorised rollouts of
:class:`bilevel_envs.wrappers.BestResponse`, so the single-env simulator and the batch sampler
can never disagree.

The θ-dependent terms (follower reward, leader reward, log transition density) are also given
as torch functions, so leaders obtain ∇θ by autograd and a new problem needs no gradient code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np

from bilevel_envs.followers.soft_value_iteration import TabularSoftFollower
from bilevel_envs.model import TabularModel
from bilevel_envs.utils import as_real_array, check_beta

__all__ = ["Batch", "ConfigurableEnv", "ContextualMixin", "TabularConfigurableEnv", "TabularModel",
           "check_beta"]


class Batch(NamedTuple):
    """Transitions from ``n_envs`` episodes streams stepped together, stored env-major.

    Entries ``k`` and ``k+1`` belong to the same episode unless ``episode_end[k]``. All arrays
    have leading dimension ``N = n_envs * steps_per_env``.
    """

    obs: np.ndarray
    actions: np.ndarray
    r_follower: np.ndarray
    r_leader: np.ndarray
    next_obs: np.ndarray
    terminated: np.ndarray  # reached a terminal state (true episode end)
    truncated: np.ndarray  # hit the time limit
    batch_end: np.ndarray  # cut by the end of the batch (episode unfinished)
    time: np.ndarray  # within-episode time step t (0-based)
    env_id: np.ndarray

    @property
    def episode_end(self) -> np.ndarray:
        """True where the next entry starts a new episode (or the stream stops)."""
        return self.terminated | self.truncated | self.batch_end

    @property
    def n_finished_episodes(self) -> int:
        """Episodes that ended by termination or time limit (the paper's normaliser)."""
        return int(np.count_nonzero(self.terminated | self.truncated))

    def __len__(self) -> int:  # type: ignore[override]
        return int(self.time.shape[0])


class ConfigurableEnv(gym.Env):
    """A follower-facing Gymnasium env whose reward/dynamics depend on a leader parameter θ.

    Subclasses set ``observation_space``, ``action_space``, ``config_space`` and implement
    :meth:`sample_initial_states`, :meth:`transition`, :meth:`state_to_obs`, the torch terms and
    :meth:`make_follower`.

    ``info["leader_reward"]`` carries ``r_L`` at each step; ``r_F`` is the Gymnasium reward.
    """

    config_space: gym.spaces.Box
    gamma_follower: float
    gamma_leader: float
    max_episode_steps: int
    #: sizes of consecutive groups of θ with separate meanings (leaders may clip them
    #: separately); ``None``: one group
    config_groups: tuple[int, ...] | None = None
    #: the follower temperature β of the problem's documented experiments (CLI default)
    default_beta: float | None = None
    #: what θ is: ``"free"`` (any coordinates) or ``"softmax"`` (the logits of one softmax
    #: over its entries; leaders may then take natural-gradient steps, ``geometry="simplex"``)
    config_parameterisation: str = "free"

    # ------------------------------------------------------------------ θ plumbing
    def validate_config(self, theta: Any) -> np.ndarray:
        """Return θ as a float64 array, or raise ``ValueError`` naming the problem."""
        arr = as_real_array("config (theta)", theta)
        shape = self.config_space.shape
        if arr.shape != shape:
            raise ValueError(f"config (theta) must have shape {shape}, got {arr.shape}")
        if not np.all(np.isfinite(arr)):
            raise ValueError("config (theta) contains NaN or inf")
        lo, hi = self.config_space.low, self.config_space.high
        if np.any(arr < lo) or np.any(arr > hi):
            bad = int(np.argmax((arr < lo) | (arr > hi)))
            raise ValueError(
                f"config (theta) outside config_space: theta[{bad}]={arr[bad]!r} not in "
                f"[{lo[bad]}, {hi[bad]}]"
            )
        return arr.copy()

    def set_config(self, theta: Any) -> None:
        """Set the leader parameter θ (validated) for all following steps and models."""
        self._config = self.validate_config(theta)
        self._on_config_change()

    @property
    def config(self) -> np.ndarray:
        """A copy of the current θ."""
        return self._config.copy()

    def _on_config_change(self) -> None:
        """Hook: recompute θ-dependent tables."""

    def default_config(self) -> np.ndarray:
        """θ used when none is given (zeros unless a problem says otherwise)."""
        return np.zeros(self.config_space.shape)

    # ------------------------------------------------------------------ simulator
    def sample_initial_states(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Draw ``n`` start states (internal representation)."""
        raise NotImplementedError

    def transition(
        self, states: np.ndarray, actions: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Batched dynamics at the current θ.

        Returns ``(next_states, r_follower, r_leader, terminated)``; rewards are those of the
        state where the action is taken.
        """
        raise NotImplementedError

    def state_to_obs(self, state: Any) -> Any:
        """Observation for one internal state."""
        return state

    def validate_action(self, action: Any) -> Any:
        """The action as the simulator takes it; ``ValueError`` if not in ``action_space``."""
        if not self.action_space.contains(action):
            raise ValueError(f"action {action!r} is not in the action space {self.action_space}")
        return action

    # ------------------------------------------------------------------ Gymnasium API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode (Gymnasium API).

        Args:
            seed: seeds the simulator's ``np_random``.
            options: ``{"config": θ}`` sets the leader's parameter first (the only option).

        Returns:
            ``(obs, info)`` at a start state drawn by :meth:`sample_initial_states`.

        Raises:
            ValueError: an unknown option or a bad θ (θ is then left unchanged).
        """
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"config"})
        if unknown:  # reject before changing anything (θ must not change on a failed reset)
            raise ValueError(f"unknown reset options {unknown}; allowed: ['config']")
        if "config" in options:
            self.set_config(options["config"])
        self._state = self.sample_initial_states(1, self.np_random)[0]
        return self.state_to_obs(self._state), {}

    def step(self, action: Any):
        """One follower step at the current θ (Gymnasium API).

        Returns:
            ``(obs, r_follower, terminated, truncated, info)``; ``info["leader_reward"]`` is the
            leader's reward of the same transition (rewards of the state where the action is taken).

        Raises:
            RuntimeError: before :meth:`reset`.
            ValueError: an action outside the action space, or a non-finite reward.
        """
        if not hasattr(self, "_state"):
            raise RuntimeError("call reset() before step()")
        action = self.validate_action(action)
        nxt, r_f, r_l, term = self.transition(
            np.asarray([self._state]), np.asarray([action]), self.np_random
        )
        if not (np.isfinite(r_f[0]) and np.isfinite(r_l[0])):
            raise ValueError(f"non-finite reward (follower {r_f[0]}, leader {r_l[0]})")
        self._state = nxt[0]
        info = {"leader_reward": float(r_l[0])}
        return self.state_to_obs(self._state), float(r_f[0]), bool(term[0]), False, info

    # ------------------------------------------------------------------ differentiable terms
    def follower_reward_torch(self, theta, states, actions):
        """``r_F^θ(s, b)`` as a differentiable torch function of ``theta`` (shape ``(N,)``)."""
        raise NotImplementedError

    def leader_reward_torch(self, theta, states, actions):
        """``r_L^θ(s, b)`` as a differentiable torch function of ``theta`` (shape ``(N,)``)."""
        raise NotImplementedError

    def log_transition_torch(self, theta, states, actions, next_states):
        """``log p^θ(s'|s, b)``; ``None`` when the dynamics do not depend on θ."""
        return None

    def next_state_sigma_points(self, states: np.ndarray, actions: np.ndarray):
        """Optional: ``(points (N, k, n), weights (k,))`` integrating ``p^θ(·|s, b)`` exactly for
        the functions a problem cares about (e.g. quadratics under Gaussian noise). Leaders
        use them to Rao-Blackwellise score terms; problems without them raise here."""
        raise NotImplementedError(f"{type(self).__name__} has no next-state sigma points")

    # ------------------------------------------------------------------ follower
    def make_follower(self, beta: float, **kwargs: Any):
        """The exact soft best-response solver for this problem."""
        raise NotImplementedError


class TabularConfigurableEnv(ConfigurableEnv):
    """A configurable MDP with finite states and actions and an exact :class:`TabularModel`.

    Subclasses implement :meth:`tabular_rewards_torch` (``(S, B)`` reward tables as torch
    functions of θ) and :meth:`tabular_model`; per-sample torch terms come from indexing them.
    """

    n_states: int
    n_actions: int

    def tabular_model(self, theta: Any = None) -> TabularModel:
        """The exact model at ``theta`` (the current config if ``None``)."""
        raise NotImplementedError

    def tabular_rewards_torch(self, theta):
        """``(r_F, r_L)`` tables of shape ``(S, B)`` as torch functions of ``theta``."""
        raise NotImplementedError

    def sampling_transitions(self):
        """The ``(S·B, S)`` matrix the simulator samples from: the model's own, unless a problem
        deliberately simulates other dynamics than it solves (e.g. the authors' Four-Rooms)."""
        return self.tabular_model().transitions

    def tabular_rewards_vjp(self, theta: np.ndarray, c_follower: np.ndarray,
                            c_leader: np.ndarray) -> np.ndarray:
        """``∇θ Σ_{s,b} [c_F(s,b) r_F^θ(s,b) + c_L(s,b) r_L^θ(s,b)]`` (a vector-Jacobian product).

        Default: one autograd pass through :meth:`tabular_rewards_torch`; problems may override
        it with a closed form (it is on every leader's hot path).
        """
        import torch

        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        r_f, r_l = self.tabular_rewards_torch(th)
        total = (torch.from_numpy(np.asarray(c_follower, dtype=np.float64)) * r_f).sum() \
            + (torch.from_numpy(np.asarray(c_leader, dtype=np.float64)) * r_l).sum()
        if not total.requires_grad:
            return np.zeros_like(theta, dtype=np.float64)
        (grad,) = torch.autograd.grad(total, th)
        return grad.numpy()

    def tabular_transitions_torch(self, theta):
        """``p^θ(s'|s, b)`` as a dense ``(S, B, S)`` torch function of ``theta``: needed only by
        problems whose dynamics depend on θ (their :meth:`log_transition_torch` is not None)."""
        raise NotImplementedError(f"{type(self).__name__} has θ-independent dynamics")

    def tabular_transitions_vjp(self, theta: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """``∇θ Σ_{s,b,s'} w(s,b,s') p^θ(s'|s,b)`` for an ``(S, B, S)`` weight array.

        Default: one autograd pass through :meth:`tabular_transitions_torch`; problems may
        override it with a cheaper form.
        """
        import torch

        th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
        total = (torch.from_numpy(np.asarray(weights, dtype=np.float64))
                 * self.tabular_transitions_torch(th)).sum()
        (grad,) = torch.autograd.grad(total, th)
        return grad.numpy()

    @property
    def config_dependent_dynamics(self) -> bool:
        """Whether ``p^θ`` depends on θ (the problem overrides :meth:`log_transition_torch`)."""
        return type(self).log_transition_torch is not TabularConfigurableEnv.log_transition_torch

    def follower_reward_torch(self, theta, states, actions):
        """``r_F^θ(s, b)`` read from :meth:`tabular_rewards_torch` (differentiable in θ)."""
        return self.tabular_rewards_torch(theta)[0][states, actions]

    def leader_reward_torch(self, theta, states, actions):
        """``r_L^θ(s, b)`` read from :meth:`tabular_rewards_torch` (differentiable in θ)."""
        return self.tabular_rewards_torch(theta)[1][states, actions]

    def make_follower(self, beta: float, **kwargs: Any):
        """The exact soft best response: a :class:`~bilevel_envs.followers.TabularSoftFollower`.

        Args:
            beta: the follower's entropy temperature β > 0.
            **kwargs: solver options (``tol``, ``max_iterations``, ``solver``, ``warm_start``).
        """
        return TabularSoftFollower(beta=beta, **kwargs)


class ContextualMixin:
    """Contexts ξ as part of the state, and the choice of the context new episodes start in.

    A *contextual* problem (Thoma et al. 2024) has ``n_contexts`` contexts (e.g. goals or
    preferences). The context is part of the state and never changes within an episode, so the
    problem is one ordinary MDP whose start distribution mixes the contexts uniformly; its
    exact model (``mu0``) and exact objective ``J = mean_ξ J_ξ`` are those of the mixture.

    :meth:`set_context` *conditions the sampler*: with ``set_context(k)`` every start drawn by
    ``sample_initial_states`` (``reset``, and every episode and restart of
    ``BestResponse.rollout``) is in context ``k``, as HPGD draws one context per outer
    iteration; ``set_context(None)`` restores the mixture. It never changes the model, the
    rewards or the follower's solution (the follower's policy covers every context).
    """

    n_contexts: int
    _context: int | None = None

    @property
    def context(self) -> int | None:
        """The context new episodes start in, or ``None`` (uniform over the contexts)."""
        return self._context

    def set_context(self, context: int | None) -> None:
        """Start every following episode in ``context`` (an integer in ``[0, n_contexts)``),
        or in a uniformly drawn context if ``None`` (the default)."""
        if context is not None:
            if isinstance(context, (bool, np.bool_)) or not isinstance(context, (int, np.integer)) \
                    or not 0 <= int(context) < self.n_contexts:
                raise ValueError(f"context must be None or an integer in [0, "
                                 f"{self.n_contexts - 1}], got {context!r}")
            context = int(context)
        self._context = context

    def _draw_contexts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``(n,)`` contexts of fresh episodes: the set context, else uniform draws (no draw is
        consumed from ``rng`` when there is a single context or a context is set)."""
        if self._context is not None:
            return np.full(int(n), self._context, dtype=np.int64)
        if self.n_contexts == 1:
            return np.zeros(int(n), dtype=np.int64)
        return rng.integers(self.n_contexts, size=int(n))
