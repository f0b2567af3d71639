"""Zero-order leader: a two-point Gaussian-smoothing estimate of the exact objective (HPGD's
baseline, Thoma et al. 2024).

At outer iteration ``t`` (1-based) draw a context ξ and ``Z ~ N(0, I_d)`` from the leader's
generator, set the radius ``u = c / t`` and estimate::

    ĝ = (J_ξ(θ + uZ) − J_ξ(θ)) Z / u,

with ``J_ξ`` the exact per-context objective (``context_mu0(ξ) @ V_L`` on a contextual tabular
problem, the exact objective ``J`` elsewhere) under the follower's exact best response:
the follower is re-solved at ``θ + uZ`` and restored exactly afterwards
(:func:`~bilevel_agents.exact.at_config`). ``E[ĝ]`` is the gradient of the Gaussian smoothing
of ``J_ξ`` with radius ``u`` (``∇J_ξ + O(u)`` for smooth ``J_ξ``), so the shrinking radius makes
the estimate asymptotically unbiased; its variance grows with the dimension ``d``.

HPGD's grid: ``c ∈ {0.01, 0.1, 0.5, 1.0}`` with ``lr ∈ {0.5, 0.1, 0.05, 0.01}``, clip 1 and SGD
(the shared step). A perturbed point outside ``config_space`` is clipped to it; a perturbed
point a Markov game refuses (a non-stabilising LQR gain) gives no gradient that iteration.
Defined on every problem with an exact objective (:func:`~bilevel_agents.exact.leader_objective`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.exact import at_config, has_exact_objective, leader_objective, leader_values
from bilevel_agents.families.tabular import CONTEXT_SAMPLING, draw_context, start_distribution
from bilevel_agents.leader import Leader
from bilevel_envs.utils import check_choice, check_float

__all__ = ["C_GRID", "ZeroOrder", "context_objective"]

#: HPGD's grid of the radius constant c (u = c / t)
C_GRID = (0.01, 0.1, 0.5, 1.0)


def context_objective(br: Any, context: int | None) -> float:
    """Exact ``J_ξ = context_mu0(ξ) @ V_L`` at the wrapper's θ, or ``J`` for ``None``."""
    if context is None:
        return leader_objective(br)
    problem = br.problem
    _, v_l = leader_values(problem.tabular_model(), br.policy, problem.gamma_leader)
    return float(start_distribution(problem, context) @ v_l)


class ZeroOrder(Leader):
    """Two-point zero-order ascent on the exact objective (module docstring).

    Args:
        br: any best response whose problem has an exact objective.
        c: radius constant, ``u = c / t`` at iteration ``t`` (HPGD's grid :data:`C_GRID`).
        contexts: ``"per_iteration"`` (one context per iteration on contextual problems,
            HPGD's protocol) or ``"per_episode"`` (the mixture objective ``J``).
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments (``lr``, ``seed``, ...).

    Raises:
        ValueError: a problem without an exact objective, a bad option.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> from bilevel_agents import ZeroOrder
        >>> br = BestResponse(gym.make("BiLevel/ContextualFourRooms-v0"), beta=0.003)
        >>> ZeroOrder(br, c=0.1, lr=0.1, seed=0).estimate_gradient().shape
        (105,)
    """

    name = "zero_order"
    samples = False

    def __init__(self, br: Any, *, c: float = 0.1, contexts: str = "per_iteration",
                 **kwargs: Any):
        if not has_exact_objective(br):
            raise ValueError(f"zero_order needs an exact objective, which "
                             f"{type(br.problem).__name__} does not have")
        super().__init__(br, **kwargs)
        self.c = check_float("c", c, low=0.0, low_open=True)
        self.contexts = check_choice("contexts", contexts, CONTEXT_SAMPLING)

    def estimate_gradient(self) -> np.ndarray | None:
        """``(J_ξ(θ + uZ) − J_ξ(θ)) Z / u`` with ``u = c / t``."""
        context = (draw_context(self.br.problem, self.rng)
                   if self.contexts == "per_iteration" else None)
        space = self.br.config_space
        z = self.rng.standard_normal(space.shape)
        u = self.c / (self.iteration + 1)
        theta = self.theta
        self.last_metrics = {"radius": u}
        if context is not None:
            self.last_metrics["context"] = float(context)
        j0 = context_objective(self.br, context)
        try:
            with at_config(self.br, np.clip(theta + u * z, space.low, space.high)):
                j1 = context_objective(self.br, context)
        except ValueError:
            if not self.family.rejects_infeasible_steps:
                raise
            self.last_metrics["rejected_probe"] = 1.0
            return None
        return (j1 - j0) * z / u

    def hparams(self) -> dict[str, Any]:
        """Leader settings plus the radius constant and the context sampling."""
        return {**super().hparams(), "c": self.c, "contexts": self.contexts}
