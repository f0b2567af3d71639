"""The problem-family strategy: everything a method needs that depends on the kind of problem.

A leader holds one :class:`Family` object, chosen by the type of the problem behind its best
response (:func:`bilevel_agents.families.family_for`). The family knows how a batch is sampled,
how the partial derivative is estimated, how the follower's response to a weighting of the
batch is estimated, which critics exist, and how a term becomes a gradient. It never knows
which method uses it: a method only chooses *what* to weight (the Benefit, ``Q_L``, ...) and
*which* follower-gradient form to use (``∇Q_F``, or HPGD's ``∇Q_F − ∇V_F``).

Terms are additive objects (:class:`~bilevel_agents.estimators.theorem1.SurrogateTerm` for
configurable MDPs, per-step weight arrays for Markov games), so that the estimate is
``family.gradient(partial_term + guiding_term)`` for every method.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

__all__ = ["Family"]


class Family:
    """Base class of the problem families (see the module docstring).

    Args:
        br: the best-response wrapper.
        **options: the family's sampling options (its :attr:`Options` dataclass).
    """

    #: human-readable name used in messages ("tabular configurable MDPs", ...)
    label: ClassVar[str] = "problems"
    #: the sampling options of this family (a dataclass that validates itself)
    Options: ClassVar[type] = type("Options", (), {})
    #: default options of sample-based leaders on this family: its documented protocol
    defaults: ClassVar[dict[str, Any]] = {}
    #: default options of every leader on this family, exact ones included
    init_defaults: ClassVar[dict[str, Any]] = {}
    #: whether a step to a θ the problem refuses is rejected instead of raising
    rejects_infeasible_steps: ClassVar[bool] = False
    #: whether the partial-derivative estimate needs a leader critic
    partial_needs_critic: ClassVar[bool] = True

    def __init__(self, br: Any, **options: Any):
        self.br = br
        self.options = self.Options(**options)

    @classmethod
    def default_options(cls, br: Any, samples: bool) -> dict[str, Any]:
        """The defaults a leader starts from (:attr:`init_defaults`, plus :attr:`defaults` for
        sample-based leaders); the method's own defaults and the caller's options win."""
        return {**cls.init_defaults, **(cls.defaults if samples else {})}

    @property
    def problem(self) -> Any:
        """The unwrapped problem."""
        return self.br.problem

    def hparams(self) -> dict[str, Any]:
        """The sampling options, for the run's configuration file."""
        return dataclasses.asdict(self.options)

    # ------------------------------------------------------------------ θ and critics
    def initial_theta(self, rng: np.random.Generator, init_scale: float) -> np.ndarray:
        """θ0 ~ N(0, init_scale²) (the authors' initialisation)."""
        return rng.normal(0.0, init_scale, size=self.br.config_space.shape)

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """A critic of the given kind (a critic object is returned as it is)."""
        if kind is None or not isinstance(kind, str):
            return kind
        raise ValueError(f"critic {kind!r} is not available on {self.label}")

    # ------------------------------------------------------------------ sampling
    def collect(self, leader: Any) -> Any:
        """A fresh batch at the current θ."""
        raise NotImplementedError

    def critic_data(self, leader: Any, batch: Any) -> Any:
        """What the critic learns from this iteration (default: the batch)."""
        return batch

    def batch_metrics(self, batch: Any) -> dict[str, float]:
        """Diagnostics of the batch."""
        return {}

    def learn(self, leader: Any, batch: Any) -> dict[str, float]:
        """Learn what the family estimates itself from the batch (e.g. the follower's value
        when the follower publishes none); default nothing."""
        return {}

    def exploring(self, leader: Any) -> bool:
        """Whether this iteration only collects data (no gradient)."""
        return False

    # ------------------------------------------------------------------ the estimate
    def partial_term(self, leader: Any, batch: Any) -> Any:
        """The partial derivative ``∂θ J_L`` (follower held fixed) as a term."""
        raise NotImplementedError

    def benefit(self, leader: Any, batch: Any) -> np.ndarray:
        """The leader's Benefit ``B_L`` at every sample, from the critic."""
        raise NotImplementedError

    def leader_q(self, leader: Any, batch: Any) -> np.ndarray:
        """The critic's ``Q_L`` at every sample."""
        raise NotImplementedError

    def leader_return(self, leader: Any, batch: Any) -> np.ndarray:
        """The discounted leader return-to-go at every sample (a Monte Carlo ``Q_L``)."""
        raise NotImplementedError

    def response_term(self, leader: Any, batch: Any, stats: Any, factor: np.ndarray,
                      advantage: bool) -> Any:
        """``(1/(βN)) Σ_t γ_L^t factor_t ∇̂Q_F(s_t, b_t)`` as a term (the follower's response).

        Args:
            leader: the leader (its critic, generator and θ).
            batch: the on-policy batch carrying ``factor``.
            stats: the batch the follower-gradient statistics come from.
            factor: per-sample weights (the Benefit for BC-HG).
            advantage: use ``∇̂Q_F − ∇̂V_F`` (HPGD's form, eq. 37) instead of ``∇̂Q_F``.
        """
        raise NotImplementedError

    def gradient(self, leader: Any, batch: Any, term: Any) -> np.ndarray:
        """``∇θ`` of a term at the leader's current θ."""
        raise NotImplementedError

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """State carried across iterations (e.g. a replay buffer); default none."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
