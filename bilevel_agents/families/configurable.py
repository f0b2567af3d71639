"""What tabular and continuous configurable MDPs share: batches of transitions, the surrogate.

Every configurable-MDP estimate (paper Alg. 1 / Alg. 8) is

    ĝ = ∂̂θ J_L  (partial derivative)  +  Γ̂  (guiding term: the follower's response),

from one fresh batch per outer iteration, assembled as coefficients of one autograd surrogate
(:mod:`bilevel_agents.estimators.theorem1`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from bilevel_agents.estimators.returns import discounted_reverse_sum
from bilevel_agents.estimators.theorem1 import SurrogateTerm, benefit
from bilevel_agents.families.base import Family
from bilevel_envs.core import Batch
from bilevel_envs.utils import check_int

__all__ = ["ConfigurableFamily", "ConfigurableOptions"]


@dataclasses.dataclass(frozen=True)
class ConfigurableOptions:
    """Sampling options of configurable MDPs.

    Attributes:
        batch_size: transitions per outer iteration (the paper's "batch size"); every
            iteration restarts episodes from the start distribution.
        n_envs: episode streams stepped together (``batch_size`` must be a multiple).
        refine_after: if set, from this iteration on every batch has ``refine_batch_size``
            transitions (in ``refine_batch_size // 200`` streams, the authors' layout): small
            noisy batches to leave the no-incentive basin, then large ones to climb the basin
            found.
        refine_batch_size: batch size of the refinement phase.
    """

    batch_size: int = 100
    n_envs: int = 1
    refine_after: int | None = None
    refine_batch_size: int = 1000

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "batch_size", check_int("batch_size", self.batch_size, 1))
        set_(self, "n_envs", check_int("n_envs", self.n_envs, 1))
        if self.batch_size % self.n_envs:
            raise ValueError(f"n_envs must divide batch_size={self.batch_size}, "
                             f"got {self.n_envs!r}")
        set_(self, "refine_after", check_int("refine_after", self.refine_after, 0,
                                             allow_none=True))
        set_(self, "refine_batch_size", check_int("refine_batch_size",
                                                  self.refine_batch_size, 1))


class ConfigurableFamily(Family):
    """Shared part of the configurable-MDP families (batches, keys, the surrogate gradient)."""

    Options = ConfigurableOptions

    def collect(self, leader: Any) -> Batch:
        """``batch_size`` transitions in ``n_envs`` streams (or the refinement layout)."""
        opt = self.options
        if opt.refine_after is not None and leader.iteration >= opt.refine_after:
            n = opt.refine_batch_size
            streams = max(1, n // 200)
            return self.br.rollout(n - n % streams, streams, rng=leader.rng)
        return self.br.rollout(opt.batch_size, opt.n_envs, rng=leader.rng)

    def batch_metrics(self, batch: Batch) -> dict[str, float]:
        """The number of finished episodes."""
        return {"episodes": float(batch.n_finished_episodes)}

    @staticmethod
    def normaliser(batch: Batch) -> float:
        """Finished episodes in the batch, at least 1 (the paper's 1/|B|, as in its code)."""
        return float(max(batch.n_finished_episodes, 1))

    def keys(self, batch: Batch) -> tuple[np.ndarray, int]:
        """``(s, b)`` keys for every-visit pooling (unique per transition if continuous)."""
        return np.arange(len(batch)), len(batch)

    def soft_v(self, states: np.ndarray) -> np.ndarray:
        """The follower's published ``V_F(s)`` for a batch of states."""
        return np.asarray(self.br.soft_v(states))

    def benefit(self, leader: Any, batch: Batch) -> np.ndarray:
        """``B_L(s_k, b_k)`` from the critic (Alg. 1 lines 10–11)."""
        critic = leader.critic
        return benefit(critic.q(batch.obs, batch.actions), critic.v(batch.obs, self.br))

    def leader_q(self, leader: Any, batch: Batch) -> np.ndarray:
        """``Q_L(s_k, b_k)`` from the critic."""
        return leader.critic.q(batch.obs, batch.actions)

    def leader_return(self, leader: Any, batch: Batch) -> np.ndarray:
        """The discounted leader return-to-go of each transition's episode."""
        return discounted_reverse_sum(batch.r_leader, self.problem.gamma_leader,
                                      batch.episode_end)

    def gradient(self, leader: Any, batch: Batch, term: SurrogateTerm,
                 score_clip: float | None = None) -> np.ndarray:
        """One autograd pass per batch of the term (:class:`SurrogateTerm`); each transition's
        ``∇log p`` clipped to ``±score_clip`` if given."""
        return term.gradient(self.problem, leader.theta, score_clip)
