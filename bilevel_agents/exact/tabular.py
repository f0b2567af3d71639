"""Ground truth for tabular configurable MDPs: exact leader values and hypergradient.

The follower's soft best response is the fixed point of the soft Bellman equations; the leader's
objective is one linear solve under it, and its total derivative follows by implicit
differentiation of the fixed point (an adjoint linear solve, then one autograd pass through the
θ-dependent tables).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.exact.dispatch import at_config, hypergradient_impl, leader_objective_impl
from bilevel_envs.core import TabularConfigurableEnv
from bilevel_envs.model import TabularModel

__all__ = ["leader_values", "tabular_hypergradient"]


def leader_values(model: TabularModel, policy: np.ndarray, gamma: float):
    """Exact ``(Q_L, V_L)`` of a fixed follower policy by one linear solve.

    ``V = Σ_b g (r_L + γ C V)`` ⇔ ``(I − γ P_g) V = r_g`` with terminal rows not continuing.
    """
    r_pi = (policy * model.r_leader).sum(axis=1)
    v = model.solve_discounted(model.policy_transition(policy), r_pi, gamma)
    return model.r_leader + gamma * model.continuation_values(v), v


def _cont_transpose(model: TabularModel, y: np.ndarray) -> np.ndarray:
    """``(Cᵀ y)(s') = Σ_{s,b} C(s'|s,b) y(s,b)``."""
    if model.cont3 is not None:
        return np.einsum("sbt,sb->t", model.cont3, y)
    return model.cont.T @ y.ravel()


def tabular_hypergradient(problem: TabularConfigurableEnv, theta: np.ndarray,
                          policy: np.ndarray, beta: float) -> np.ndarray:
    """Exact hypergradient of a tabular configurable MDP with θ-independent dynamics.

    Theorem 1 in occupancy form: with ``d_L`` the leader's discounted occupancy under ``g``,
    ``∇J = Σ_{s,b} d_L(s) g(b|s) [∇r_L(s,b) + B_L(s,b) ∇Q_F(s,b) / β]`` and
    ``∇Q_F = (I − γ_F C Π_g)^{-1} ∇r_F`` (implicit differentiation of the soft Bellman fixed
    point; eq. 6). The Jacobian is never formed: the adjoint ``z = (I − γ_F C Π_g)^{-T} y``,
    ``y = d_L g B_L / β``, costs one ``S × S`` solve, and one autograd pass gives
    ``∇θ [Σ w r_L^θ + Σ z r_F^θ]`` with ``w = d_L g``.
    """
    model = problem.tabular_model(theta)
    if type(problem).log_transition_torch is not TabularConfigurableEnv.log_transition_torch:
        raise NotImplementedError("θ-dependent tabular dynamics are not supported yet")
    gl, gf = problem.gamma_leader, problem.gamma_follower
    P_g = model.policy_transition(policy)
    q_l, _ = leader_values(model, policy, gl)
    benefit = q_l - (policy * q_l).sum(axis=1, keepdims=True)
    d_l = model.solve_discounted(P_g, model.mu0, gl, transpose=True)  # Σ_t γ^t Pr(s_t = s)
    w = d_l[:, None] * policy
    # zᵀ(I − γ_F C Π_g) = yᵀ: with m = Cᵀz, z = y + γ_F g ⊙ m and (I − γ_F P_g)ᵀ m = Cᵀ y.
    y = w * benefit / beta
    m = model.solve_discounted(P_g, _cont_transpose(model, y), gf, transpose=True)
    z = y + gf * policy * m[:, None]
    return problem.tabular_rewards_vjp(theta, z, w)


@leader_objective_impl.register
def _(problem: TabularConfigurableEnv, br: Any, theta: Any) -> float:
    with at_config(br, theta):
        model = problem.tabular_model()
        _, v = leader_values(model, br.policy, problem.gamma_leader)
        return float(model.mu0 @ v)


@hypergradient_impl.register
def _(problem: TabularConfigurableEnv, br: Any, theta: Any) -> np.ndarray:
    with at_config(br, theta):
        return tabular_hypergradient(problem, problem.config, br.policy, br.beta)
