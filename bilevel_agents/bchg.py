"""BC-HG: Boltzmann Covariance HyperGradient leader for configurable MDPs (paper Alg. 1, 8).

The guiding term of Theorem 1 (eq. 5) in its Boltzmann-covariance form::

    Γ̂ = (1 / (β N)) Σ_τ Σ_t γ_L^t B_L(s_t, b_t) ∇̂Q_F(s_t, b_t),     B_L = Q_L − E_{b~g} Q_L,

with ``B_L`` from the critic (tabular SARSA by default, Alg. 10) and ``∇̂Q_F`` the every-visit
Monte Carlo estimate of eq. 6 over trajectory segments (Alg. 6). No ``∇V_F`` is needed: that is
what makes the estimate work from on-policy samples alone.
"""

from __future__ import annotations

from bilevel_agents.configurable import ConfigurableLeader
from bilevel_agents.estimators import (
    Coefficients,
    benefit,
    follower_q_grad_coefficients,
    guiding_weights,
)
from bilevel_envs.core import Batch

__all__ = ["BCHG"]


class BCHG(ConfigurableLeader):
    """BC-HG (paper Alg. 1 with Alg. 2/4/6; Four-Rooms form Alg. 8 line 30).

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> from bilevel_agents import BCHG
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
        >>> leader = BCHG(br, batch_size=100, lr=0.1, sarsa_alpha=0.5, seed=0)
        >>> leader.estimate_gradient().shape
        (105,)
    """

    name = "bchg"

    def benefit(self, batch: Batch):
        """``B_L(s_k, b_k)`` from the critic (Alg. 1 lines 10–11)."""
        return benefit(self.critic.q(batch.obs, batch.actions), self.critic.v(batch.obs, self.br))

    def guiding_coefficients(self, batch: Batch) -> Coefficients:
        problem = self.problem
        w = guiding_weights(batch, self.benefit(batch), self.br.beta, problem.gamma_leader,
                            self.normaliser(batch))
        keys, n_keys = self.keys(batch)
        return follower_q_grad_coefficients(batch, w, keys, n_keys, problem.gamma_follower,
                                            self.soft_v(batch.next_obs))
