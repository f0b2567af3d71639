"""Ground truth for tabular configurable MDPs: exact leader values and hypergradient.

The follower's soft best response is the fixed point of the soft Bellman equations; the leader's
objective is one linear solve under it, and its total derivative follows by implicit
differentiation of the fixed point (an adjoint linear solve, then one autograd pass through the
θ-dependent tables).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.exact.dispatch import (
    at_config,
    follower_metrics_impl,
    hypergradient_impl,
    leader_objective_impl,
)
from bilevel_envs.core import TabularConfigurableEnv
from bilevel_envs.followers.base import published
from bilevel_envs.followers.soft_value_iteration import (
    SoftVIResult,
    follower_optimality_gap,
    soft_value_iteration,
)
from bilevel_envs.model import TabularModel

__all__ = ["actual_policy", "best_response", "leader_state_values", "leader_values",
           "soft_policy_values", "tabular_hypergradient"]


def leader_values(model: TabularModel, policy: np.ndarray, gamma: float):
    """Exact ``(Q_L, V_L)`` of a fixed follower policy by one linear solve.

    ``V = Σ_b g (r_L + γ C V)`` ⇔ ``(I − γ P_g) V = r_g`` with terminal rows not continuing.
    ``model`` may be a :class:`~bilevel_envs.model.StackedTabularModel` with policies
    ``(N, S, B)`` (the same numbers run by run).
    """
    v = leader_state_values(model, policy, gamma)
    return model.r_leader + gamma * model.continuation_values(v), v


def leader_state_values(model: TabularModel, policy: np.ndarray, gamma: float) -> np.ndarray:
    """``V_L`` of :func:`leader_values` alone (the same numbers, without ``Q_L``)."""
    r_pi = (policy * model.r_leader).sum(axis=-1)
    return model.solve_discounted(model.policy_transition(policy), r_pi, gamma)


def _cont_transpose(model: TabularModel, y: np.ndarray) -> np.ndarray:
    """``(Cᵀ y)(s') = Σ_{s,b} C(s'|s,b) y(s,b)`` (``y`` may be a stack ``(N, S, B)`` with a
    stacked model)."""
    return model.transposed_continuation_values(y)


def tabular_hypergradient(problem: TabularConfigurableEnv, theta: np.ndarray,
                          policy: np.ndarray, beta: float, *, follower_v: np.ndarray | None = None,
                          mu0: np.ndarray | None = None, model: Any = None,
                          response: bool = True) -> np.ndarray:
    """Exact hypergradient of a tabular configurable MDP (Theorem 1 in occupancy form).

    With ``d_L`` the leader's discounted occupancy under ``g`` from ``mu0`` (default: the
    model's start distribution),
    ``∇J = Σ_{s,b} d_L(s) g(b|s) [∇r_L(s,b) + γ_L Σ_s' ∇p(s'|s,b) V_L(s') + B_L(s,b) ∇Q_F(s,b) / β]``
    and ``∇Q_F = (I − γ_F C Π_g)^{-1} [∇r_F + γ_F ∇C V_F]`` (implicit differentiation of the
    soft Bellman fixed point; eq. 6). The Jacobian is never formed: the adjoint
    ``z = (I − γ_F C Π_g)^{-T} y``, ``y = d_L g B_L / β``, costs one ``S × S`` solve, and one
    autograd pass gives ``∇θ [Σ w r_L^θ + Σ z r_F^θ]`` with ``w = d_L g``. Where the dynamics
    depend on θ, one more vector-Jacobian product adds
    ``∇θ Σ_{s,b,s'} p^θ(s'|s,b) [γ_L w(s,b) V_L(s') + γ_F z(s,b) V_F(s')]`` over non-terminal
    ``s`` (:meth:`~bilevel_envs.core.TabularConfigurableEnv.tabular_transitions_vjp`).

    Args:
        problem: the tabular problem.
        theta: θ (the model is built at it).
        policy: the follower's ``(S, B)`` policy at θ (its exact best response).
        beta: the follower's temperature β.
        follower_v: its soft values ``V_F`` (θ-dependent dynamics only; computed if ``None``).
        mu0: start distribution of the objective (e.g. one context's); default the model's.
        model: the model at θ if already built; with a
            :class:`~bilevel_envs.model.StackedTabularModel`, θ ``(N, d)`` and policies
            ``(N, S, B)`` give the N runs' hypergradients ``(N, d)`` (θ-independent dynamics).
        response: include the follower-response term (default); ``False`` gives the partial
            derivative alone, the follower held fixed (Theorem 1's first two terms).
    """
    model = problem.tabular_model(theta) if model is None else model
    gl, gf = problem.gamma_leader, problem.gamma_follower
    P_g = model.policy_transition(policy)
    q_l, v_l = leader_values(model, policy, gl)
    benefit = q_l - (policy * q_l).sum(axis=-1, keepdims=True)
    start = model.mu0 if mu0 is None else np.asarray(mu0, dtype=np.float64)
    d_l = model.solve_discounted(P_g, start, gl, transpose=True)  # Σ_t γ^t Pr(s_t = s)
    w = d_l[..., None] * policy
    # zᵀ(I − γ_F C Π_g) = yᵀ: with m = Cᵀz, z = y + γ_F g ⊙ m and (I − γ_F P_g)ᵀ m = Cᵀ y.
    y = w * benefit / beta if response else np.zeros_like(w)
    m = model.solve_discounted(P_g, _cont_transpose(model, y), gf, transpose=True)
    z = y + gf * policy * m[..., None]
    grad = problem.tabular_rewards_vjp(theta, z, w)
    if problem.config_dependent_dynamics:
        if follower_v is None:
            follower_v = soft_policy_values(model, policy, beta, gf)
        keep = (~model.terminal).astype(np.float64)[:, None, None]
        weights = keep * (gl * w[:, :, None] * v_l[None, None, :]
                          + gf * z[:, :, None] * np.asarray(follower_v)[None, None, :])
        grad = grad + problem.tabular_transitions_vjp(theta, weights)
    return grad


def soft_policy_values(model: TabularModel, policy: np.ndarray, beta: float,
                       gamma: float) -> np.ndarray:
    """The follower's soft values ``V^g(s) = Σ_b g (r_F − β log g + γ C V^g)`` (one solve)."""
    log_g = np.log(np.clip(policy, 1e-300, None))
    rhs = (policy * (model.r_follower - beta * log_g)).sum(axis=1)
    return model.solve_discounted(model.policy_transition(policy), rhs, gamma)


def best_response(br: Any) -> SoftVIResult:
    """The exact soft best response ``g*(θ)`` at the wrapper's θ.

    The follower's own solution when it is the exact solver (``follower.exact``); otherwise an
    exact solve (Newton to 1e-10), warm-started from the soft ``Q`` the follower publishes (a
    k-step follower's estimate) or from zeros — a function of the follower's state only, so a
    resumed run evaluates exactly as an uninterrupted one.
    """
    follower = br.follower
    problem = br.problem
    model = problem.tabular_model()
    if getattr(follower, "exact", False):
        return SoftVIResult(q=follower.soft_q, v=follower.soft_v, policy=follower.policy,
                            iterations=0, residual=0.0)
    q0 = published(follower, "soft_q")
    shape = (model.n_states, model.n_actions)
    if q0 is None or np.shape(q0) != shape or not np.all(np.isfinite(q0)):
        q0 = None
    return soft_value_iteration(model, br.beta, problem.gamma_follower, q0=q0)


def actual_policy(br: Any) -> np.ndarray | None:
    """The policy the follower acts with: published, or its evaluation read-out
    (``policy_readout()``); ``None`` if it offers neither."""
    policy = published(br.follower, "policy")
    if policy is None and callable(getattr(br.follower, "policy_readout", None)):
        policy = br.follower.policy_readout()
    return None if policy is None else np.asarray(policy, dtype=np.float64)


@leader_objective_impl.register
def _(problem: TabularConfigurableEnv, br: Any, theta: Any) -> float:
    with at_config(br, theta):
        model = problem.tabular_model()
        _, v = leader_values(model, best_response(br).policy, problem.gamma_leader)
        return float(model.mu0 @ v)


@hypergradient_impl.register
def _(problem: TabularConfigurableEnv, br: Any, theta: Any) -> np.ndarray:
    with at_config(br, theta):
        sol = best_response(br)
        return tabular_hypergradient(problem, problem.config, sol.policy, br.beta,
                                     follower_v=sol.v)


@follower_metrics_impl.register
def _(problem: TabularConfigurableEnv, br: Any) -> dict[str, float]:
    """``objective_actual``: J_L under the follower's actual policy; ``follower_gap``: its
    soft-value gap to ``g*(θ)`` at the start distribution (both only for non-exact followers)."""
    if getattr(br.follower, "exact", False):
        return {}
    policy = actual_policy(br)
    if policy is None:
        return {}
    model = problem.tabular_model()
    sol = best_response(br)
    _, v = leader_values(model, policy, problem.gamma_leader)
    gap = follower_optimality_gap(model, policy, br.beta, problem.gamma_follower, v_opt=sol.v)
    return {"objective_actual": float(model.mu0 @ v), "follower_gap": gap.start}
