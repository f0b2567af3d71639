"""Tabular configurable MDPs (Four-Rooms): every-visit averages pool visits of the same state.

Partial derivative: the Monte Carlo form of Alg. 8 lines 12–16 (``partial="mc"``; it drops
the ``∇log p`` term, so it assumes θ-independent dynamics) or the TD form of Alg. 4
(``partial="td"``, with the ``V_L(s') ∇log p`` term, uses the critic's ``V_L``). By default
(``partial=None``) the family picks ``"mc"``, or ``"td"`` on problems whose dynamics depend on
θ (``problem.config_dependent_dynamics``, e.g. tax design); ``"mc"`` asked for on such a problem
raises. Follower response: Alg. 6's every-visit ``∇̂Q_F(s, b)``, or HPGD's
``∇̂Q_F(s, b) − ∇̂V_F(s)`` (Alg. 8 lines 19–22), both in coefficient form. Critics: SARSA
(``"td"``/``"sarsa"``, Alg. 10), Monte Carlo (``"mc"``, Alg. 9), exact (``"exact"``).

Contexts (contextual problems, :class:`~bilevel_envs.core.ContextualMixin`): by default
(``contexts="per_episode"``) every episode of a batch starts in a context drawn by the problem
(its own uniform mixture). ``contexts="per_iteration"`` is HPGD's protocol: each outer iteration
draws *one* context from the leader's generator (:func:`draw_context`) and every episode and
restart of that iteration's on-policy batch starts in it; the mixture is restored afterwards
(``set_context(None)``). An extra statistics batch (HPGD's oracle) keeps its own start layout.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np

from bilevel_agents.critics.follower import TabularFollowerValue
from bilevel_agents.critics.oracle import exact_critic
from bilevel_agents.critics.tabular import MonteCarloCritic, SarsaCritic, StateValueModelCritic
from bilevel_agents.estimators.theorem1 import (
    SurrogateTerm,
    follower_advantage_grad_coefficients,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_mc,
    partial_derivative_td,
)
from bilevel_agents.families.configurable import ConfigurableFamily, ConfigurableOptions
from bilevel_envs.core import Batch, ContextualMixin
from bilevel_envs.followers.base import published
from bilevel_envs.utils import check_choice, check_float

__all__ = ["CONTEXT_SAMPLING", "TabularFamily", "TabularOptions", "draw_context",
           "in_context", "is_contextual", "start_distribution"]

PARTIALS = ("mc", "td")
#: how the episodes of an iteration choose their context (module docstring)
CONTEXT_SAMPLING = ("per_episode", "per_iteration")


def is_contextual(problem: Any) -> bool:
    """Whether ``problem`` has several contexts (:class:`~bilevel_envs.core.ContextualMixin`
    with ``n_contexts >= 2``)."""
    return isinstance(problem, ContextualMixin) and int(problem.n_contexts) >= 2


def draw_context(problem: Any, rng: np.random.Generator) -> int | None:
    """One context drawn uniformly from ``rng`` (HPGD's one context per outer iteration), or
    ``None`` for a problem without several contexts (nothing is drawn from ``rng`` then)."""
    if not is_contextual(problem):
        return None
    return int(rng.integers(problem.n_contexts))


def start_distribution(problem: Any, context: int | None) -> np.ndarray:
    """``(S,)`` start distribution of ``context`` (``problem.context_mu0``), or the model's
    ``mu0`` (the problem's own mixture) for ``None``."""
    if context is None:
        return np.asarray(problem.tabular_model().mu0, dtype=np.float64)
    return np.asarray(problem.context_mu0(context), dtype=np.float64)


@contextlib.contextmanager
def in_context(problem: Any, context: int | None) -> Iterator[None]:
    """Start every episode in ``context`` inside the block (``set_context``), then restore the
    context the problem had (the mixture, normally). ``None``: leave the problem as it is."""
    if context is None:
        yield
        return
    saved = problem.context
    problem.set_context(context)
    try:
        yield
    finally:
        problem.set_context(saved)


@dataclasses.dataclass(frozen=True)
class TabularOptions(ConfigurableOptions):
    """Sampling options of tabular configurable MDPs (and :class:`ConfigurableOptions`).

    Attributes:
        partial: ``"mc"`` (Alg. 8 l. 12–16, θ-independent dynamics), ``"td"`` (Alg. 4) or
            ``None``: ``"td"`` where the dynamics depend on θ, else ``"mc"`` (the family
            resolves it; its options then hold the choice).
        sarsa_alpha: α_SA of the SARSA critic (critic ``"td"`` or ``"sarsa"``).
        contexts: ``"per_episode"`` (the problem's mixture; default) or ``"per_iteration"``
            (one context per outer iteration from the leader's generator, HPGD's protocol;
            contextual problems only).
    """

    partial: str | None = None
    sarsa_alpha: float = 0.5
    contexts: str = "per_episode"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.partial is not None:
            check_choice("partial", self.partial, PARTIALS)
        check_choice("contexts", self.contexts, CONTEXT_SAMPLING)
        object.__setattr__(self, "sarsa_alpha", check_float("sarsa_alpha", self.sarsa_alpha,
                                                            low=0.0, high=1.0, low_open=True))


class TabularFamily(ConfigurableFamily):
    """Tabular configurable MDPs (:class:`~bilevel_envs.core.TabularConfigurableEnv`)."""

    label = "tabular configurable MDPs"
    Options = TabularOptions

    def __init__(self, br: Any, **options: Any):
        super().__init__(br, **options)
        problem = self.problem
        dependent = bool(getattr(problem, "config_dependent_dynamics", False))
        needs_v = dependent and published(br.follower, "soft_v") is None
        self.follower_value = (TabularFollowerValue(problem.n_states, problem.n_actions,
                                                    beta=br.beta,
                                                    gamma=problem.gamma_follower)
                               if needs_v else None)
        if self.options.partial is None:
            self.options = dataclasses.replace(self.options, partial="td" if dependent else "mc")
        elif self.options.partial == "mc" and dependent:
            raise ValueError(
                f"partial='mc' (Alg. 8) drops the ∇log p term and assumes θ-independent "
                f"dynamics, but the dynamics of {type(problem).__name__} depend on θ: use "
                f"partial='td' (Alg. 4; the default on such problems)")
        if self.options.contexts == "per_iteration" and not is_contextual(problem):
            raise ValueError(f"contexts='per_iteration' needs a contextual problem (a "
                             f"ContextualMixin with several contexts), got "
                             f"{type(problem).__name__} with "
                             f"{getattr(problem, 'n_contexts', 1)} context(s)")
        #: the context of the last on-policy batch (``None``: the problem's mixture)
        self.last_context: int | None = None

    def initial_theta(self, rng: np.random.Generator, init_scale: float) -> np.ndarray:
        """θ0 = the problem's default config + N(0, init_scale²): the authors' N(0, 0.01²) on
        Four-Rooms (default 0), HPGD's rates 0.3 on tax design (default logit(0.15))."""
        noise = rng.normal(0.0, init_scale, size=self.br.config_space.shape)
        default = np.asarray(self.problem.default_config(), dtype=np.float64)
        if not np.any(default):
            return noise  # bit for bit the authors' initialisation
        space = self.br.config_space
        return np.clip(default.reshape(noise.shape) + noise, space.low, space.high)

    def hparams(self) -> dict[str, Any]:
        """The sampling options (``contexts`` only when not the default, so that the run
        folders of earlier releases keep their identity)."""
        out = super().hparams()
        if out.get("contexts") == CONTEXT_SAMPLING[0]:
            del out["contexts"]
        return out

    def collect(self, leader: Any) -> Batch:
        """The on-policy batch; with ``contexts="per_iteration"`` all in one context drawn from
        the leader's generator (the problem's mixture is restored afterwards)."""
        if self.options.contexts == "per_episode":
            self.last_context = None
            return super().collect(leader)
        self.last_context = draw_context(self.problem, leader.rng)
        with in_context(self.problem, self.last_context):
            return super().collect(leader)

    def batch_metrics(self, batch: Batch) -> dict[str, float]:
        """The number of finished episodes (and the drawn context, one per iteration)."""
        out = super().batch_metrics(batch)
        if self.last_context is not None:
            out["context"] = float(self.last_context)
        return out

    @property
    def partial_needs_critic(self) -> bool:  # type: ignore[override]
        """Only the TD partial derivative needs ``V_L``."""
        return self.options.partial == "td"

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """``"td"``/``"sarsa"``: SARSA (its table drawn from the leader's generator);
        ``"mc"``: Monte Carlo; ``"model"``: Monte Carlo state values through the leader's model
        (:class:`~bilevel_agents.critics.StateValueModelCritic`); ``"exact"``: the exact
        ``Q_L``."""
        if kind is None or not isinstance(kind, str):
            return kind
        problem = self.problem
        shape = (problem.n_states, problem.n_actions)
        gamma = problem.gamma_leader
        if kind in ("td", "sarsa"):
            if published(self.br.follower, "policy") is None:
                # no published policy: V_L by TD instead of Σ_b g Q_L
                critic_kwargs = {"state_values": "td", **critic_kwargs}
            return SarsaCritic(*shape, alpha=self.options.sarsa_alpha, gamma=gamma,
                               rng=leader.rng, **critic_kwargs)
        if kind == "mc":
            return MonteCarloCritic(*shape, gamma=gamma, **critic_kwargs)
        if kind == "model":
            return StateValueModelCritic(*shape, gamma=gamma, **critic_kwargs)
        if kind == "exact":
            return exact_critic(self.br, **critic_kwargs)
        raise ValueError(f"critic must be a Critic or one of ['exact', 'mc', 'model', 'sarsa', "
                         f"'td'] on {self.label}, got {kind!r}")

    def keys(self, batch: Batch) -> tuple[np.ndarray, int]:
        """``s·|B| + b`` keys and their number."""
        B = self.problem.n_actions
        return batch.obs * B + batch.actions, self.problem.n_states * B

    def soft_v(self, states: np.ndarray) -> np.ndarray:
        """``V_F(s)`` where the estimators need it: only the ``∇log p`` terms use it, so zeros on
        problems whose dynamics do not depend on θ (the follower is not asked); else the
        follower's published table, or the leader's own estimate for a follower that publishes
        none (:class:`~bilevel_agents.critics.follower.TabularFollowerValue`)."""
        if not self.problem.config_dependent_dynamics:
            return np.zeros(np.shape(states))
        if self.follower_value is not None:
            return self.follower_value.v(states)
        return self.br.soft_v[states]

    def learn(self, leader: Any, batch: Batch) -> dict[str, float]:
        """Fit the leader's own ``V_F`` estimate when it is needed and not published."""
        if self.follower_value is None:
            return {}
        return self.follower_value.update(batch, self.br)

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
