"""BC-HG: Boltzmann Covariance HyperGradient (paper Alg. 1; Theorem 1 eq. 5, Theorem 2 eq. 8).

The guiding term in its Boltzmann-covariance form::

    Γ̂ = (1 / (β N)) Σ_τ Σ_t γ_L^t B_L(s_t, b_t) ∇̂Q_F(s_t, b_t),     B_L = Q_L − E_{b~g} Q_L,

with ``B_L`` from the leader's critic and ``∇̂Q_F`` the Monte Carlo estimate of eq. 6 (Alg. 6)
or, in a Markov game, of eq. 9 (Alg. 7). No ``∇V_F`` is needed: that is what makes the estimate
work from on-policy samples alone.

Defaults per family (the paper's protocols): tabular SARSA critic (Alg. 10) with the Monte
Carlo partial derivative (Alg. 8) on tabular configurable MDPs; an MLP TD critic (Alg. 3) with
the variance-reduced estimator on continuous ones; a TD critic of ``Q_L(s, a, b)`` and Adam on
Markov games.
"""

from __future__ import annotations

from typing import Any

from bilevel_agents.leader import Leader

__all__ = ["BCHG"]


class BCHG(Leader):
    """BC-HG (paper Alg. 1) on every problem family.

    Args:
        br: the follower's best response (any problem of the suite).
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments: ``lr``, ``seed``,
            ``critic``, and the family's sampling options (``batch_size``, ``sarsa_alpha``,
            ... or ``episodes``, ...).

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
    default_critic = "td"

    def guiding_term(self, batch: Any, stats: Any) -> Any:
        """The Benefit-weighted ``∇̂Q_F`` (Alg. 1 line 16)."""
        family = self.family
        return family.response_term(self, batch, stats, family.benefit(self, batch),
                                    advantage=False)
