"""NAIVE-PGD: the partial derivative only, ignoring the follower's response (paper App. C.1).

``ĝ = ∂̂θ J_L(θ, g)|_{g = g^{θ†}}`` (Alg. 8 line 29; Alg. 5 in Markov games): the first-order
policy-gradient leader of Rajeswaran et al. (2020) and Vu et al. (2022). On tabular problems it
needs no critic (Monte Carlo partial term); elsewhere the family's TD critic gives ``V_L`` or
``Q_L``.
"""

from __future__ import annotations

from bilevel_agents.leader import Leader

__all__ = ["NaivePGD"]


class NaivePGD(Leader):
    """First-order leader: no guiding term (Alg. 8 line 29), on every problem family."""

    name = "naive_pgd"
    default_critic = None
