"""Exact leader objective and hypergradient of building thermal control (paper App. C.5).

Under the follower's best response ``b = −K s + ε``, ``ε ~ N(0, Σ_b)``, ``Σ_b = (β/2)S⁻¹``
(Proposition 1, eq. 57), the closed loop ``s' = F s + B ε + w`` with ``F = A_θ − B K`` is
linear-Gaussian, and the leader reward (eqs. 106-107) is quadratic::

    E[r_L(s, b) | s] = −sᵀ M s − 0.5 tr Σ_b − c(θ),   M = (I − 11ᵀ/n)/n + 0.5 KᵀK

(``Var_pop(s) = sᵀ(I − 11ᵀ/n)s / n``; ``c(θ) = 0.1(‖α‖² + ‖β‖²)``). From ``s0 ~ N(0, Σ_0)`` the
state stays zero-mean Gaussian with ``Σ_{t+1} = F Σ_t Fᵀ + B Σ_b Bᵀ + W``, so

    J(θ) = Σ_{t<T} γ_L^t [−tr(M Σ_t) − 0.5 tr Σ_b − c(θ)]

is exact (``T = 100`` steps, the episodes the leader is scored on; ``horizon=None`` gives the
infinite-horizon value by a discounted Lyapunov equation). ``∇θ J`` is the *total* derivative
(paper eq. 3 / Theorem 1): autograd through ``σ(θ) → A_θ → P (DARE) → K, S → J``, where the
DARE is differentiated implicitly (:func:`bilevel_envs.followers.maxent_lqr.riccati_torch`).
With ``response=False`` the follower's ``K, Σ_b`` are held fixed: that is the partial derivative
``∂θ J_L(θ, g)|_{g = g^{θ†}}`` that NAIVE-PGD estimates.

Also here: the exact stationary leader critic ``Q_L(s, b)``, ``V_L(s)`` (infinite horizon),
used to test sample-based critics and estimators.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla
import torch

from bilevel_agents.exact.dispatch import (
    at_config,
    follower_metrics_impl,
    hypergradient_impl,
    leader_objective_impl,
)
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.followers.base import published
from bilevel_envs.followers.maxent_lqr import (
    lqr_policy_evaluation,
    riccati_torch,
    solve_maxent_lqr,
)

__all__ = [
    "LeaderQuadratic",
    "building_objective",
    "building_objective_torch",
    "building_objective_under",
    "exact_leader_critic",
    "partial_gradient",
]


def _as_theta(problem: BuildingThermalEnv, theta: Any) -> np.ndarray:
    return problem.config if theta is None else problem.validate_config(theta)


def building_objective_torch(problem: BuildingThermalEnv, insulation, airflow, beta: float,
                             horizon: int | None = 100, response: bool = True):
    """Exact ``J`` as a torch function of post-sigmoid ``(α, β_air)``.

    Args:
        problem: the env (supplies B, Q̄, R̄, W, γ, σ0).
        insulation, airflow: torch ``(4,)`` tensors in [0, 1] (may require grad).
        beta: follower temperature β.
        horizon: number of steps ``T`` (default 100); ``None`` = infinite horizon.
        response: if False, the follower's gain and covariance are constants (detached), giving
            the partial derivative with the best response held fixed.
    """
    dt = torch.float64
    A = BuildingThermalEnv.dynamics_matrix_torch(insulation, airflow)
    B = torch.as_tensor(problem.B, dtype=dt)
    Qb = torch.as_tensor(problem.Q_bar, dtype=dt)
    Rb = torch.as_tensor(problem.R_bar, dtype=dt)
    g_f = problem.gamma_follower
    A_f = A if response else A.detach()
    P = riccati_torch(A_f, B, Qb, Rb, g_f)
    S = Rb + g_f * B.T @ P @ B
    K = g_f * torch.linalg.solve(S, B.T @ P @ A_f)           # eq. 57
    cov_b = 0.5 * beta * torch.linalg.inv(S)                   # eq. 69
    return _closed_loop_objective(problem, A, K, cov_b, insulation, airflow, horizon)


def _closed_loop_objective(problem: BuildingThermalEnv, A, K, cov_b, insulation, airflow,
                           horizon: int | None):
    """``J`` (torch) when the follower plays ``b = −K s + ε``, ``ε ~ N(0, cov_b)``."""
    dt = torch.float64
    n = problem.n_zones
    B = torch.as_tensor(problem.B, dtype=dt)
    W = torch.as_tensor(problem.W, dtype=dt)
    g_l = problem.gamma_leader
    F = A - B @ K
    center = (torch.eye(n, dtype=dt) - torch.full((n, n), 1.0 / n, dtype=dt)) / n
    M = center + 0.5 * K.T @ K
    config_cost = 0.1 * ((insulation * insulation).sum() + (airflow * airflow).sum())
    const = 0.5 * torch.trace(cov_b) + config_cost
    noise = B @ cov_b @ B.T + W
    sigma = problem.init_std**2 * torch.eye(n, dtype=dt)
    if horizon is None:
        # X = M + γ FᵀXF; J = −tr(X Σ0) − [const + γ tr(X noise)]/(1 − γ) … (discounted Lyapunov)
        X = _dlyap_torch(np.sqrt(g_l) * F.T, M)
        return -(torch.trace(X @ sigma) + (const + g_l * torch.trace(X @ noise)) / (1 - g_l))
    total = torch.zeros((), dtype=dt)
    disc = 1.0
    for _ in range(int(horizon)):
        total = total - disc * (torch.trace(M @ sigma) + const)
        sigma = F @ sigma @ F.T + noise
        disc *= g_l
    return total


def building_objective_under(problem: BuildingThermalEnv, K: Any, cov: Any, theta: Any = None,
                             horizon: int | None = 100) -> float:
    """Exact ``J`` at ``theta`` when the follower plays an arbitrary linear-Gaussian policy
    ``b = −K s + ε``, ``ε ~ N(0, cov)`` (e.g. a k-step follower's), instead of its best
    response: the same closed-loop propagation as :func:`building_objective`."""
    th = torch.as_tensor(_as_theta(problem, theta), dtype=torch.float64)
    p = torch.sigmoid(th)
    with torch.no_grad():
        A = BuildingThermalEnv.dynamics_matrix_torch(p[:4], p[4:])
        return float(_closed_loop_objective(
            problem, A, torch.as_tensor(np.asarray(K, dtype=np.float64)),
            torch.as_tensor(np.asarray(cov, dtype=np.float64)), p[:4], p[4:], horizon))


def _dlyap_torch(a, q):
    """``X = a X aᵀ + q`` by a vectorised linear solve (small n), differentiable."""
    n = a.shape[0]
    eye = torch.eye(n * n, dtype=a.dtype)
    x = torch.linalg.solve(eye - torch.kron(a, a), q.reshape(-1))
    return x.reshape(n, n)


def building_objective(problem: BuildingThermalEnv, beta: float, theta: Any = None,
                       horizon: int | None = 100) -> float:
    """Exact ``J(θ)`` (numpy in, float out) at pre-sigmoid ``theta`` (current if ``None``)."""
    th = torch.as_tensor(_as_theta(problem, theta), dtype=torch.float64)
    p = torch.sigmoid(th)
    with torch.no_grad():
        return float(building_objective_torch(problem, p[:4], p[4:], beta, horizon))


def _gradient(problem: BuildingThermalEnv, beta: float, theta: Any, response: bool,
              horizon: int | None = 100) -> np.ndarray:
    th = torch.tensor(_as_theta(problem, theta), dtype=torch.float64, requires_grad=True)
    p = torch.sigmoid(th)
    J = building_objective_torch(problem, p[:4], p[4:], beta, horizon, response=response)
    (grad,) = torch.autograd.grad(J, th)
    return grad.numpy()


def partial_gradient(br: Any, theta: Any = None, horizon: int | None = 100) -> np.ndarray:
    """Exact partial derivative ``∂θ J_L(θ, g)|_{g=g^{θ†}}`` (follower response held fixed).

    This is the target of NAIVE-PGD (paper App. C.1) and of the first two terms of eq. (5).
    """
    problem = br.problem if hasattr(br, "problem") else br.unwrapped
    return _gradient(problem, br.beta, theta, response=False, horizon=horizon)


@dataclass(frozen=True)
class LeaderQuadratic:
    """Exact stationary leader values under the best response (infinite horizon).

    ``V_L(s) = −(sᵀ X s + c)``, ``Q_L(s, b) = r_L(s, b) + γ_L E V_L(A s + B b + w)``.
    """

    X: np.ndarray
    c: float
    A: np.ndarray
    B: np.ndarray
    W: np.ndarray
    gamma: float
    config_cost: float

    def v(self, states: np.ndarray) -> np.ndarray:
        """``V_L(s) = −(sᵀX s + c)`` for an ``(N, n)`` batch of states."""
        s = np.asarray(states, dtype=np.float64)
        return -(np.einsum("ni,ij,nj->n", s, self.X, s) + self.c)

    def q(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``Q_L(s, b) = r_L(s, b) + γ E[V_L(s')]`` for ``(N, n)`` states and ``(N, m)`` actions."""
        s = np.asarray(states, dtype=np.float64)
        b = np.asarray(actions, dtype=np.float64)
        r = -s.var(axis=1) - 0.5 * np.einsum("ni,ni->n", b, b) - self.config_cost
        nxt = s @ self.A.T + b @ self.B.T
        ev = -(np.einsum("ni,ij,nj->n", nxt, self.X, nxt) + np.trace(self.X @ self.W) + self.c)
        return r + self.gamma * ev


def exact_leader_critic(br: Any, theta: Any = None) -> LeaderQuadratic:
    """The exact ``Q_L, V_L`` of the current best response (infinite-horizon, stationary).

    The paper's critic (Alg. 3) is stationary, so this is what it should converge to (up to the
    time-limit effect ``O(γ^{T−t})`` near the end of the 100-step episodes).
    """
    with at_config(br, theta):
        problem = br.problem
        m = problem.lqr_model()  # the exact best response, whatever follower trains
        sol = solve_maxent_lqr(m.A, m.B, m.Q, m.R, m.W, m.gamma, br.beta)
        n = problem.n_zones
        g = problem.gamma_leader
        F = problem.A - problem.B @ sol.K
        center = (np.eye(n) - np.full((n, n), 1.0 / n)) / n
        M = center + 0.5 * sol.K.T @ sol.K
        X = sla.solve_discrete_lyapunov(np.sqrt(g) * F.T, M)
        noise = problem.B @ sol.cov @ problem.B.T + problem.W
        c = (0.5 * np.trace(sol.cov) + problem.config_cost + g * np.trace(X @ noise)) / (1 - g)
        return LeaderQuadratic(X=X, c=float(c), A=problem.A.copy(), B=problem.B.copy(),
                               W=problem.W.copy(), gamma=g, config_cost=problem.config_cost)


@leader_objective_impl.register
def _(problem: BuildingThermalEnv, br: Any, theta: Any) -> float:
    return building_objective(problem, br.beta, theta)


@hypergradient_impl.register
def _(problem: BuildingThermalEnv, br: Any, theta: Any) -> np.ndarray:
    return _gradient(problem, br.beta, theta, response=True)


@follower_metrics_impl.register
def _(problem: BuildingThermalEnv, br: Any) -> dict[str, float]:
    """For a follower that is not exact but publishes a linear-Gaussian policy (the k-step
    MaxEnt-LQR follower): ``objective_actual`` (J under that policy) and ``follower_gap``
    (``E_{s0}[V*(s0) − V^g(s0)]``, :func:`~bilevel_envs.followers.maxent_lqr.
    lqr_policy_evaluation`). A follower whose policy is not linear-Gaussian (SAC) or not
    published has no exact value here."""
    policy = published(br.follower, "policy")
    if getattr(br.follower, "exact", False) or not (hasattr(policy, "K")
                                                    and hasattr(policy, "cov")):
        return {}
    model = problem.lqr_model()
    X, c = lqr_policy_evaluation(model, policy.K, policy.cov, br.beta)
    best = solve_maxent_lqr(model.A, model.B, model.Q, model.R, model.W, model.gamma, br.beta)
    var0 = problem.init_std ** 2
    return {"objective_actual": building_objective_under(problem, policy.K, policy.cov),
            "follower_gap": var0 * float(np.trace(X - best.P)) + c - best.v}
