"""Exact leader objective and exact hypergradient: the ground truth every estimator is tested on.

``leader_objective(br, θ)`` is ``J_L(θ) = E_{s0~μ0} V_L^{θ†}(s0)`` under the follower's exact soft
best response, and ``hypergradient(br, θ)`` its total derivative ``∇θ J_L(θ, g^{θ†})`` (paper eq. 3
and Theorem 1), both computed from the problem's exact model.

Each problem family registers its implementation on the type of the unwrapped problem
(:func:`functools.singledispatch`), so a user's new problem plugs in without editing this file::

    @leader_objective_impl.register
    def _(problem: MyEnv, br, theta): ...

Tabular configurable MDPs are handled here, by implicit differentiation of the soft Bellman
fixed point (an adjoint linear solve, then one autograd pass through the θ-dependent tables).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from bilevel_envs.core import TabularConfigurableEnv, TabularModel

__all__ = [
    "hypergradient",
    "hypergradient_impl",
    "leader_objective",
    "leader_objective_impl",
    "leader_values",
    "tabular_hypergradient",
]


def _problem(br: Any) -> Any:
    return getattr(br, "problem", None) or br.unwrapped


def leader_objective(br: Any, theta: Any = None) -> float:
    """Exact ``J_L(θ)`` under the follower's best response (θ = current config if ``None``).

    The wrapper's θ is left as it was.
    """
    return float(leader_objective_impl(_problem(br), br, theta))


def hypergradient(br: Any, theta: Any = None) -> np.ndarray:
    """Exact ``∇θ J_L(θ, g^{θ†})`` (paper Theorem 1 / 2), an array shaped like θ.

    It differentiates the *exact* best response: with a k-step follower
    (``max_iterations=k``) it is the gradient the leader would have if the follower were
    optimal, evaluated at the k-step policy.
    """
    return np.asarray(hypergradient_impl(_problem(br), br, theta), dtype=np.float64)


@functools.singledispatch
def leader_objective_impl(problem: Any, br: Any, theta: Any) -> float:
    raise NotImplementedError(f"no exact leader objective for {type(problem).__name__}")


@functools.singledispatch
def hypergradient_impl(problem: Any, br: Any, theta: Any) -> np.ndarray:
    raise NotImplementedError(f"no exact hypergradient for {type(problem).__name__}")


# ---------------------------------------------------------------------- tabular problems
class _AtConfig:
    """Temporarily set the wrapper's θ (and re-solve), restoring the previous θ afterwards."""

    def __init__(self, br: Any, theta: Any):
        self.br, self.theta = br, theta

    def __enter__(self):
        if self.theta is not None:
            self.saved = self.br.config
            # Snapshot the follower (its solution, or a k-step follower's carried Q): re-solving
            # at the old θ on exit would move a k-step follower by k more backups.
            self.follower_state = dict(getattr(self.br.follower, "__dict__", None) or {})
            self.br.set_config(self.theta)
        return self.br

    def __exit__(self, *exc):
        if self.theta is not None:
            if self.follower_state:
                self.br.problem.set_config(self.saved)
                vars(self.br.follower).clear()
                vars(self.br.follower).update(self.follower_state)
            else:
                self.br.set_config(self.saved)


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
    with _AtConfig(br, theta):
        model = problem.tabular_model()
        _, v = leader_values(model, br.policy, problem.gamma_leader)
        return float(model.mu0 @ v)


@hypergradient_impl.register
def _(problem: TabularConfigurableEnv, br: Any, theta: Any) -> np.ndarray:
    with _AtConfig(br, theta):
        return tabular_hypergradient(problem, problem.config, br.policy, br.beta)

# Problem families registered in their own modules (imported here so that importing
# bilevel_agents.exact is enough to get every implementation).
import bilevel_agents.exact_building  # noqa: E402,F401
import bilevel_agents.exact_games  # noqa: E402,F401  (Markov games: toy and LQR)
