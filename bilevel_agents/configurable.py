"""Sample-based leaders for configurable MDPs: one estimator pipeline, methods as guiding terms.

Every method of the paper's configurable-MDP experiments computes

    ĝ = ∂̂θ J_L  (partial derivative)  +  Γ̂  (guiding term: the follower's response),

from one fresh batch per outer iteration (Alg. 1 / Alg. 8). They differ only in Γ̂ and in the
critic that feeds it, so a method here is a subclass overriding :meth:`guiding_coefficients`
(and choosing a default critic). All estimates are assembled as coefficients of one autograd
surrogate (:mod:`bilevel_agents.estimators`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.base import Leader
from bilevel_agents.critics import Critic, ExactCritic, MonteCarloCritic, SarsaCritic
from bilevel_agents.estimators import (
    Coefficients,
    partial_derivative_mc,
    partial_derivative_td,
    surrogate_gradient,
)
from bilevel_envs.core import Batch, TabularConfigurableEnv

__all__ = ["ConfigurableLeader"]

_PARTIALS = ("mc", "td")


class ConfigurableLeader(Leader):
    """Shared pipeline of the configurable-MDP leaders (subclass and override the guiding term).

    Args:
        br: the follower's best response (``BestResponse`` over a configurable MDP).
        batch_size: transitions per outer iteration (the paper's "batch size"); every
            iteration restarts episodes from the start distribution.
        n_envs: episode streams stepped together (``batch_size`` must be a multiple).
        refine_after: if set, from this iteration on every batch has ``refine_batch_size``
            transitions (in ``refine_batch_size // 200`` streams, the authors' layout). A
            two-phase schedule: small noisy batches to leave the no-incentive basin, then
            large ones to climb the basin found (see docs/results/four_rooms.md).
        refine_batch_size: batch size of the refinement phase.
        critic: a :class:`~bilevel_agents.critics.Critic`, or ``"sarsa"``, ``"exact"``,
            ``"mc"`` for the tabular ones; ``None`` = the method's default.
        sarsa_alpha: α_SA of the default SARSA critic.
        critic_kwargs: extra options of a critic named by string (e.g. ``{"init_std": 0.0,
            "expected": True}`` for SARSA).
        partial: ``"mc"`` (Alg. 8 l. 12–16, tabular, θ-independent dynamics) or ``"td"``
            (Alg. 4, uses the critic's ``V_L``); default ``"mc"`` on tabular problems.
        **kwargs: :class:`~bilevel_agents.base.Leader` arguments (lr, max_grad_norm, seed, ...).
    """

    name = "configurable"
    default_critic: str | None = "sarsa"

    def __init__(self, br: Any, *, batch_size: int = 100, n_envs: int = 1,
                 refine_after: int | None = None, refine_batch_size: int = 1000,
                 critic: Critic | str | None = None, sarsa_alpha: float = 0.5,
                 critic_kwargs: dict[str, Any] | None = None, partial: str | None = None,
                 **kwargs: Any):
        super().__init__(br, **kwargs)
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if int(n_envs) < 1 or int(batch_size) % int(n_envs):
            raise ValueError(f"n_envs must divide batch_size={batch_size}, got {n_envs!r}")
        problem = br.problem
        self.tabular = isinstance(problem, TabularConfigurableEnv)
        partial = partial or ("mc" if self.tabular else "td")
        if partial not in _PARTIALS:
            raise ValueError(f"partial must be one of {_PARTIALS}, got {partial!r}")
        if partial == "mc" and not self.tabular:
            raise ValueError("partial='mc' needs a tabular problem; use partial='td'")
        if refine_after is not None and (int(refine_after) < 0 or int(refine_batch_size) < 1):
            raise ValueError(f"refine_after must be >= 0 and refine_batch_size >= 1, got "
                             f"{refine_after!r}, {refine_batch_size!r}")
        self.batch_size, self.n_envs, self.partial = int(batch_size), int(n_envs), partial
        self.refine_after = None if refine_after is None else int(refine_after)
        self.refine_batch_size = int(refine_batch_size)
        self.sarsa_alpha = float(sarsa_alpha)
        self.critic_kwargs = dict(critic_kwargs or {})
        self.critic = self._make_critic(critic if critic is not None else self.default_critic)

    def _make_critic(self, critic: Critic | str | None) -> Critic | None:
        if critic is None or not isinstance(critic, str):
            return critic
        problem, gamma = self.br.problem, self.br.problem.gamma_leader
        if not self.tabular:
            raise ValueError(f"critic={critic!r} is tabular; pass a Critic object for "
                             f"{type(problem).__name__}")
        shape = (problem.n_states, problem.n_actions)
        factories = {
            "sarsa": lambda: SarsaCritic(*shape, alpha=self.sarsa_alpha, gamma=gamma,
                                         rng=self.rng, **self.critic_kwargs),
            "exact": lambda: ExactCritic(gamma=gamma, **self.critic_kwargs),
            "mc": lambda: MonteCarloCritic(*shape, gamma=gamma, **self.critic_kwargs),
        }
        if critic not in factories:
            raise ValueError(f"critic must be a Critic or one of {sorted(factories)}, "
                             f"got {critic!r}")
        return factories[critic]()

    # ------------------------------------------------------------------ helpers for methods
    @property
    def problem(self):
        return self.br.problem

    def keys(self, batch: Batch) -> tuple[np.ndarray, int]:
        """``(s, b)`` keys for every-visit pooling; unique per transition if continuous."""
        if self.tabular:
            return batch.obs * self.problem.n_actions + batch.actions, \
                self.problem.n_states * self.problem.n_actions
        return np.arange(len(batch)), len(batch)

    def soft_v(self, states: np.ndarray) -> np.ndarray:
        """``V_F(s)`` of the follower for a batch of states."""
        sv = self.br.soft_v
        return sv[states] if isinstance(sv, np.ndarray) else np.asarray(sv(states))

    @staticmethod
    def normaliser(batch: Batch) -> float:
        """Finished episodes in the batch, at least 1 (the paper's 1/|B|, as in its code)."""
        return float(max(batch.n_finished_episodes, 1))

    # ------------------------------------------------------------------ the estimate
    def collect(self) -> Batch:
        if self.refine_after is not None and self.iteration >= self.refine_after:
            n = self.refine_batch_size
            streams = max(1, n // 200)
            return self.br.rollout(n - n % streams, streams, rng=self.rng)
        return self.br.rollout(self.batch_size, self.n_envs, rng=self.rng)

    def partial_coefficients(self, batch: Batch) -> Coefficients:
        gamma = self.problem.gamma_leader
        if self.partial == "mc":
            return partial_derivative_mc(batch, batch.obs, self.problem.n_states, gamma)
        if self.critic is None:
            raise ValueError("partial='td' needs a critic")
        next_v = self.critic.v(batch.next_obs, self.br)
        return partial_derivative_td(batch, next_v, gamma, self.normaliser(batch))

    def guiding_coefficients(self, batch: Batch) -> Coefficients:
        """Γ̂ as surrogate coefficients; zero here (override in a method)."""
        return Coefficients.zeros(len(batch))

    def gradient_from_batch(self, batch: Batch) -> np.ndarray:
        """``∂̂J + Γ̂`` for a given batch (the critic is updated on it first)."""
        metrics: dict[str, float] = {"episodes": float(batch.n_finished_episodes)}
        if self.critic is not None:
            metrics.update(self.critic.update(batch, self.br))
        coef = self.partial_coefficients(batch) + self.guiding_coefficients(batch)
        self.last_metrics = metrics
        return surrogate_gradient(self.problem, self.theta, batch, coef)

    def estimate_gradient(self) -> np.ndarray:
        return self.gradient_from_batch(self.collect())

    def hparams(self) -> dict[str, Any]:
        critic = type(self.critic).__name__ if self.critic is not None else None
        return {**super().hparams(), "batch_size": self.batch_size, "n_envs": self.n_envs,
                "refine_after": self.refine_after, "refine_batch_size": self.refine_batch_size,
                "critic": critic, "sarsa_alpha": self.sarsa_alpha,
                "critic_kwargs": self.critic_kwargs, "partial": self.partial,
                "beta": self.br.beta}
