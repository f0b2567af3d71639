"""NAIVE-PGD: the partial derivative only, ignoring the follower's response (paper App. C.1).

``ĝ = ∂̂θ J_L(θ, g)|_{g = g^{θ†}}`` (Alg. 8 line 29): the first-order policy-gradient leader of
Rajeswaran et al. (2020) and Vu et al. (2022). It needs no critic on tabular problems (Monte
Carlo partial term); with ``partial="td"`` it uses one for ``V_L``.
"""

from __future__ import annotations

from bilevel_agents.configurable import ConfigurableLeader

__all__ = ["NaivePGD"]


class NaivePGD(ConfigurableLeader):
    """First-order leader: the guiding term is zero (Alg. 8 line 29)."""

    name = "naive_pgd"
    default_critic = None
