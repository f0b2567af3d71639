"""Tabular configurable MDPs (Four-Rooms): every-visit averages pool visits of the same state.

Partial derivative: the Monte Carlo form of Alg. 8 lines 12–16 (θ-independent dynamics;
default) or the TD form of Alg. 4 (``partial="td"``, uses the critic's ``V_L``). Follower
response: Alg. 6's every-visit ``∇̂Q_F(s, b)``, or HPGD's ``∇̂Q_F(s, b) − ∇̂V_F(s)`` (Alg. 8
lines 19–22), both in coefficient form. Critics: SARSA (``"td"``/``"sarsa"``, Alg. 10), Monte
Carlo (``"mc"``, Alg. 9), exact (``"exact"``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bilevel_agents.critics.oracle import exact_critic
from bilevel_agents.critics.tabular import MonteCarloCritic, SarsaCritic
from bilevel_agents.estimators.theorem1 import (
    SurrogateTerm,
    follower_advantage_grad_coefficients,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_mc,
    partial_derivative_td,
)
from bilevel_agents.families.configurable import ConfigurableFamily, ConfigurableOptions
from bilevel_envs.core import Batch
from bilevel_envs.utils import check_choice, check_float

__all__ = ["TabularFamily", "TabularOptions"]

PARTIALS = ("mc", "td")


@dataclasses.dataclass(frozen=True)
class TabularOptions(ConfigurableOptions):
    """Sampling options of tabular configurable MDPs (and :class:`ConfigurableOptions`).

    Attributes:
        partial: ``"mc"`` (Alg. 8 l. 12–16, θ-independent dynamics) or ``"td"`` (Alg. 4).
        sarsa_alpha: α_SA of the SARSA critic (critic ``"td"`` or ``"sarsa"``).
    """

    partial: str = "mc"
    sarsa_alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_choice("partial", self.partial, PARTIALS)
        object.__setattr__(self, "sarsa_alpha", check_float("sarsa_alpha", self.sarsa_alpha,
                                                            low=0.0, high=1.0, low_open=True))


class TabularFamily(ConfigurableFamily):
    """Tabular configurable MDPs (:class:`~bilevel_envs.core.TabularConfigurableEnv`)."""

    label = "tabular configurable MDPs"
    Options = TabularOptions

    @property
    def partial_needs_critic(self) -> bool:  # type: ignore[override]
        """Only the TD partial derivative needs ``V_L``."""
        return self.options.partial == "td"

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """``"td"``/``"sarsa"``: SARSA (its table drawn from the leader's generator);
        ``"mc"``: Monte Carlo; ``"exact"``: the exact ``Q_L``."""
        if kind is None or not isinstance(kind, str):
            return kind
        problem = self.problem
        shape = (problem.n_states, problem.n_actions)
        gamma = problem.gamma_leader
        if kind in ("td", "sarsa"):
            return SarsaCritic(*shape, alpha=self.options.sarsa_alpha, gamma=gamma,
                               rng=leader.rng, **critic_kwargs)
        if kind == "mc":
            return MonteCarloCritic(*shape, gamma=gamma, **critic_kwargs)
        if kind == "exact":
            return exact_critic(self.br, **critic_kwargs)
        raise ValueError(f"critic must be a Critic or one of ['exact', 'mc', 'sarsa', 'td'] "
                         f"on {self.label}, got {kind!r}")

    def keys(self, batch: Batch) -> tuple[np.ndarray, int]:
        """``s·|B| + b`` keys and their number."""
        B = self.problem.n_actions
        return batch.obs * B + batch.actions, self.problem.n_states * B

    def soft_v(self, states: np.ndarray) -> np.ndarray:
        """``V_F(s)`` from the follower's published table."""
        return self.br.soft_v[states]

    def partial_term(self, leader: Any, batch: Batch) -> SurrogateTerm:
        """Alg. 8 lines 12–16 (``partial="mc"``) or Alg. 4 (``"td"``)."""
        gamma = self.problem.gamma_leader
        if self.options.partial == "mc":
            coef = partial_derivative_mc(batch, batch.obs, self.problem.n_states, gamma)
        else:
            next_v = leader.critic.v(batch.next_obs, self.br)
            coef = partial_derivative_td(batch, next_v, gamma, self.normaliser(batch))
        return SurrogateTerm.on(batch, coef)

    def response_term(self, leader: Any, batch: Batch, stats: Batch, factor: np.ndarray,
                      advantage: bool) -> SurrogateTerm:
        """Alg. 6 (``∇̂Q_F``) or Alg. 8 l. 19–22 (``∇̂Q_F − ∇̂V_F``), statistics from ``stats``."""
        problem = self.problem
        S, B = problem.n_states, problem.n_actions
        w = guiding_weights(batch, factor, self.br.beta, problem.gamma_leader,
                            self.normaliser(batch))
        sb, n_sb = self.keys(batch)
        next_v = self.soft_v(stats.next_obs)
        if advantage:
            stat_sb, _ = self.keys(stats)
            coef = follower_advantage_grad_coefficients(
                batch, w, sb, n_sb, batch.obs, S, problem.gamma_follower, next_v, stats,
                stat_sb, stats.obs)
        elif stats is batch:
            coef = follower_q_grad_coefficients(batch, w, sb, n_sb, problem.gamma_follower,
                                                next_v)
        else:
            coef = follower_q_grad_coefficients(batch, w, sb, S * B, problem.gamma_follower,
                                                next_v, stats, self.keys(stats)[0])
        return SurrogateTerm.on(stats, coef)
