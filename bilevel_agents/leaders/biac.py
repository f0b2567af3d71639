"""Bi-AC adapted to the decentralised setting (paper App. C.1, eqs. 44–45).

NAIVE-PGD's actor with the Bi-AC critic target: the next actions of the TD target are the
Stackelberg solution of the stage game under the follower's best response,
``Q(s', a*, b*(a*))``, instead of actions drawn from the current policies. Defined on tabular
Markov games (the Stackelberg stage game needs finitely many leader actions).
"""

from __future__ import annotations

from bilevel_agents.families import TabularGameFamily
from bilevel_agents.leaders.naive_pgd import NaivePGD

__all__ = ["BiAC"]


class BiAC(NaivePGD):
    """Bi-AC: NAIVE-PGD with the Stackelberg critic target (``critic="stackelberg"``)."""

    name = "biac"
    families = (TabularGameFamily,)
    default_critic = "stackelberg"
