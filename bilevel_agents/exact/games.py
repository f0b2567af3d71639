"""Exact leader objectives and hypergradients of the two Markov games (paper eq. 4, Theorem 2).

Toy game (App. C.3): for a tabular leader policy ``f(a|s) = softmax(θ)`` the follower's soft
Q-function is the fixed point of eq. 32 (or of the official bootstrap). It is solved to
tolerance in numpy and differentiated by the implicit function theorem, ``dQ*/dθ = (I − ∂T/∂Q)⁻¹
∂T/∂θ``, through :func:`implicit_fixed_point`; the leader's objective is then an exact linear
solve (infinite horizon) or an exact forward propagation of the state distribution (finite
horizon), all in torch, so the hypergradient is one autograd pass.

LQR game (App. C.6): under ``a ~ N(Ks, W²)`` and the follower's Gaussian best response the state
stays Gaussian: ``s_{t+1} = M s_t + ε_t`` with ``M = A − BK_s + (C − BK_a)K`` and noise
covariance ``N = (C − BK_a)WWᵀ(C − BK_a)ᵀ + B(β/2)S⁻¹Bᵀ``, so mean and covariance propagate
linearly and ``E exp(−½(s − s*)ᵀΣ(s − s*))`` is the Gaussian integral
``det(I + C_tΣ)^{−1/2} exp(−½ dᵀΣ(I + C_tΣ)⁻¹d)``. The Riccati solution is differentiated
implicitly the same way, so ``∇_K J`` is exact too.

``leader_objective(br)`` / ``hypergradient(br)`` of :mod:`bilevel_agents.exact` dispatch here for
game wrappers (θ = leader logits ``(S, A)`` for the toy game, θ = ``K`` for the LQR game); they
use the infinite-horizon discounted objective of Theorem 2 (γ_L of the game). The reporting
functions take ``horizon`` and ``gamma`` (e.g. the 150-step undiscounted toy return).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import scipy.optimize as sopt
import torch

from bilevel_agents.exact.dispatch import (
    follower_metrics_impl,
    hypergradient_impl,
    leader_objective_impl,
    report_metrics_impl,
)
from bilevel_agents.exact.tabular import actual_policy
from bilevel_envs.followers.maxent_lqr_game import discounted_riccati
from bilevel_envs.followers.soft_q_iteration import (
    SoftQIterationFollower,
    game_follower_optimality_gap,
)
from bilevel_envs.games.toy_logic import ToyModel, toy_model
from bilevel_envs.games.lqr_game_v0 import LQRGameEnv, LQRGameParams
from bilevel_envs.games.toy_game_v0 import ToyGameEnv

__all__ = [
    "ToyExact",
    "implicit_fixed_point",
    "lqr_objective",
    "lqr_objective_and_grad",
    "toy_exact",
    "toy_hypergradient",
    "toy_leader_return",
    "toy_objective",
    "toy_optimum",
    "toy_policy_from_p",
]

DT = torch.float64


def implicit_fixed_point(T: Callable[[torch.Tensor], torch.Tensor], x_star: np.ndarray
                         ) -> torch.Tensor:
    """Differentiable fixed point ``x* = T(x*, θ)`` (θ captured by ``T``) from a numpy solution.

    Returns ``x̂ = x* + (I − J)⁻¹ (T(x*) − x*)`` with ``J = ∂T/∂x`` at ``x*`` (detached): its
    value is ``T(x*) ≈ x*`` and its θ-derivative is the implicit-function-theorem derivative
    ``(I − J)⁻¹ ∂T/∂θ``.
    """
    x0 = torch.as_tensor(x_star, dtype=DT)
    shape = x0.shape
    flat = x0.reshape(-1)
    J = torch.autograd.functional.jacobian(lambda x: T(x.reshape(shape)).reshape(-1),
                                           flat).detach()
    inv = torch.linalg.inv(torch.eye(flat.numel(), dtype=DT) - J)
    tx = T(x0).reshape(-1)
    return (flat + inv @ (tx - flat)).reshape(shape)


# ============================================================================ toy game
def toy_policy_from_p(p: float, n_states: int = 3) -> np.ndarray:
    """Leader policy with ``f(0|A) = p`` and uniform elsewhere (only A matters in the toy)."""
    f = np.full((n_states, 2), 0.5)
    f[1] = (p, 1.0 - p)
    return f


def _toy_backup_torch(q, f, model: ToyModel, gamma, beta, bootstrap):
    r = torch.tensor(model.r_follower, dtype=DT)
    P = torch.tensor(model.P, dtype=DT)
    if bootstrap == "paper":
        u = (f * beta * torch.logsumexp(q / beta, dim=2)).sum(dim=1)
    else:
        u = beta * torch.logsumexp(torch.einsum("sa,sab->sb", f, q) / beta, dim=1)
    return r + gamma * P @ u


@dataclass
class ToyExact:
    """Exact quantities of the toy game at one leader policy (torch tensors, differentiable).

    Attributes: ``f (S,A)``, ``q_f (S,A,B)``, ``v_f (S,A)``, ``g (S,A,B)``, ``q_l (S,A,B)``
    (infinite-horizon, γ_L), ``v_l (S,)``, ``occupancy (S,)`` = ``Σ_t γ_L^t Pr(s_t = s)``.
    """

    f: torch.Tensor
    q_f: torch.Tensor
    v_f: torch.Tensor
    g: torch.Tensor
    q_l: torch.Tensor
    v_l: torch.Tensor
    occupancy: torch.Tensor
    model: ToyModel
    gamma_leader: float
    gamma_follower: float
    beta: float

    def objective(self) -> torch.Tensor:
        """``J_L = Σ μ0(s) V_L(s)`` (infinite horizon, discount γ_L)."""
        return torch.tensor(self.model.mu0, dtype=DT) @ self.v_l

    def finite_horizon_return(self, horizon: int, gamma: float = 1.0) -> torch.Tensor:
        """``E Σ_{t<horizon} γ^t r_L`` from ``μ0`` by exact propagation of the state law."""
        P_pi, r_pi = _joint(self.f, self.g, self.model)
        d = torch.tensor(self.model.mu0, dtype=DT)
        total = torch.zeros((), dtype=DT)
        for t in range(int(horizon)):
            total = total + gamma ** t * (d @ r_pi)
            d = d @ P_pi
        return total

    def follower_q_grad_eq9(self, theta: torch.Tensor) -> np.ndarray:
        """Eq. 9 by linear solve: ``E[Σ_t γ_F^t V_F(s_t,a_t) ∇log f(a_t|s_t) | s,a,b]``.

        Returns ``(S, A, B, *θ.shape)`` (only valid for ``f = softmax(θ)`` with ``θ (S, A)``).
        """
        S, A, B = self.q_f.shape
        f = self.f.detach().numpy()
        g = self.g.detach().numpy()
        vf = self.v_f.detach().numpy()
        # score ∇_θ log f(a|s) for softmax logits θ (S, A): e_{s,a} − Σ_a' f(a'|s) e_{s,a'}
        score = np.zeros((S, A, S, A))
        idx = np.arange(S)
        score[idx, :, idx, :] = np.eye(A)[None] - f[:, None, :]
        c = vf[..., None, None] * score  # (S, A, S, A) per-(s, a) source term
        # x(s,a,b) = c(s,a) + γ_F Σ_s' P(s'|s,a,b) Σ_{a',b'} f g x(s',a',b')
        P = self.model.P.reshape(S * A * B, S)
        Pi = np.zeros((S, S * A * B))
        Pi[np.repeat(np.arange(S), A * B), np.arange(S * A * B)] = (f[..., None] * g).ravel()
        M = np.eye(S * A * B) - self.gamma_follower * P @ Pi
        rhs = np.repeat(c.reshape(S, A, 1, -1), B, axis=2).reshape(S * A * B, -1)
        return np.linalg.solve(M, rhs).reshape((S, A, B) + theta.shape)


def _joint(f, g, model: ToyModel):
    pi = f[..., None] * g  # (S, A, B)
    P_pi = torch.einsum("sab,sabt->st", pi, torch.tensor(model.P, dtype=DT))
    r_pi = (pi * torch.tensor(model.r_leader, dtype=DT)).sum(dim=(1, 2))
    return P_pi, r_pi


def toy_exact(theta: Any, model: ToyModel | None = None, *, beta: float = 0.05,
              gamma_follower: float = 0.99, gamma_leader: float = 0.99,
              bootstrap: str = "paper", reward: int = 2, probs: bool = False) -> ToyExact:
    """Exact follower and leader quantities at a tabular leader policy.

    Args:
        theta: ``(S, A)`` leader logits (torch tensor with ``requires_grad`` to differentiate),
            or probabilities if ``probs=True``.
        model: the toy model (``toy_model(reward)`` if ``None``).
        beta, gamma_follower, gamma_leader: β, γ_F, γ_L.
        bootstrap: the follower's Bellman form, ``"paper"`` or ``"official"``.
    """
    model = model if model is not None else toy_model(reward)
    th = torch.as_tensor(theta, dtype=DT)
    f = th if probs else torch.softmax(th, dim=1)
    fol = SoftQIterationFollower(beta=beta, gamma=gamma_follower, bootstrap=bootstrap,
                                 tol=1e-12)
    fol.solve(model, f.detach().numpy())
    q_f = implicit_fixed_point(
        lambda q: _toy_backup_torch(q, f, model, gamma_follower, beta, bootstrap), fol.soft_q)
    v_f = beta * torch.logsumexp(q_f / beta, dim=2)
    g = torch.softmax(q_f / beta, dim=2)
    P_pi, r_pi = _joint(f, g, model)
    eye = torch.eye(P_pi.shape[0], dtype=DT)
    v_l = torch.linalg.solve(eye - gamma_leader * P_pi, r_pi)
    q_l = (torch.tensor(model.r_leader, dtype=DT)
           + gamma_leader * torch.tensor(model.P, dtype=DT) @ v_l)
    occ = torch.linalg.solve((eye - gamma_leader * P_pi).T, torch.tensor(model.mu0, dtype=DT))
    return ToyExact(f, q_f, v_f, g, q_l, v_l, occ, model, gamma_leader, gamma_follower, beta)


def toy_leader_return(model: ToyModel, f: Any, g: Any, gamma: float,
                      horizon: int | None = None) -> float:
    """The leader's exact objective when the follower plays an arbitrary policy ``g``.

    ``J_L = Σ_s μ0(s) V_L(s)`` with ``V_L = (I − γ P_fg)⁻¹ r_fg`` (``horizon=None``), or the
    ``horizon``-step return ``Σ_{t<horizon} γ^t μ0 P_fg^t r_fg`` by exact propagation of the
    state law; ``P_fg(s'|s) = Σ_{a,b} f(a|s) g(b|s,a) P(s'|s,a,b)``.

    Args:
        model: the toy model.
        f: ``(S, A)`` leader policy.
        g: ``(S, A, B)`` follower policy (any, e.g. a learning follower's).
        gamma: the leader's discount (1.0 with a finite horizon: undiscounted).
        horizon: ``None`` (infinite, needs ``gamma < 1``) or a number of rounds.
    """
    pi = np.asarray(f, dtype=np.float64)[..., None] * np.asarray(g, dtype=np.float64)
    P_pi = np.einsum("sab,sabt->st", pi, model.P)
    r_pi = (pi * model.r_leader).sum(axis=(1, 2))
    if horizon is None:
        return float(model.mu0 @ np.linalg.solve(np.eye(len(r_pi)) - gamma * P_pi, r_pi))
    d, total = np.asarray(model.mu0, dtype=np.float64), 0.0
    for t in range(int(horizon)):  # a loop over time only (3 states)
        total += gamma ** t * float(d @ r_pi)
        d = d @ P_pi
    return total


def toy_objective(f: Any, *, horizon: int | None = None, gamma: float | None = None,
                  **kwargs: Any) -> float:
    """Exact leader objective at leader probabilities ``f (S, A)``.

    ``horizon=None``: infinite-horizon discounted ``J_L`` (γ_L); else the ``horizon``-step
    return with discount ``gamma`` (1.0 = undiscounted, the paper's R = 2 metric).
    """
    ex = toy_exact(np.asarray(f, dtype=np.float64), probs=True, **kwargs)
    with torch.no_grad():
        if horizon is None:
            return float(ex.objective())
        return float(ex.finite_horizon_return(horizon, 1.0 if gamma is None else gamma))


def toy_hypergradient(logits: Any, *, horizon: int | None = None, gamma: float | None = None,
                      **kwargs: Any) -> np.ndarray:
    """Exact ``∇_θ J_L`` for ``f = softmax(θ)``, ``θ (S, A)`` (Theorem 2's left-hand side)."""
    th = torch.tensor(np.asarray(logits, dtype=np.float64), requires_grad=True)
    ex = toy_exact(th, **kwargs)
    J = ex.objective() if horizon is None else ex.finite_horizon_return(
        horizon, 1.0 if gamma is None else gamma)
    (grad,) = torch.autograd.grad(J, th)
    return grad.numpy()


def toy_optimum(reward: int = 2, bootstrap: str = "paper", *, horizon: int = 150,
                gamma: float = 1.0, grid: int = 201, **kwargs: Any) -> tuple[float, float]:
    """``(best p = f(0|A), best return)`` by a dense grid over p then a bounded refinement."""
    model = toy_model(reward)

    def ret(p: float) -> float:
        return toy_objective(toy_policy_from_p(p), model=model, bootstrap=bootstrap,
                             horizon=horizon, gamma=gamma, **kwargs)

    ps = np.linspace(0.0, 1.0, grid)
    vals = np.array([ret(p) for p in ps])
    i = int(np.argmax(vals))
    lo, hi = ps[max(i - 1, 0)], ps[min(i + 1, grid - 1)]
    res = sopt.minimize_scalar(lambda p: -ret(p), bounds=(lo, hi), method="bounded",
                               options={"xatol": 1e-6})
    if -res.fun >= vals[i]:
        return float(res.x), float(-res.fun)
    return float(ps[i]), float(vals[i])


def toy_indifference(reward: int = 2, bootstrap: str = "paper", **kwargs: Any) -> float:
    """The p = f(0|A) where the follower at S is indifferent between ``a`` and ``b``."""
    model = toy_model(reward)

    def gap(p):
        ex = toy_exact(toy_policy_from_p(p), model=model, probs=True, bootstrap=bootstrap,
                       **kwargs)
        q = ex.q_f.detach().numpy()
        return q[0, 0, 1] - q[0, 0, 2]

    return float(sopt.brentq(gap, 0.05, 0.95, xtol=1e-10))


# ============================================================================ LQR game
def _riccati_map(P, A_eff, p: LQRGameParams, gamma):
    B = torch.tensor(p.B, dtype=DT)
    Q = torch.tensor(p.Qbar, dtype=DT)
    R = torch.tensor(p.Rbar, dtype=DT)
    S = R + gamma * B.T @ P @ B
    APB = A_eff.T @ P @ B
    return Q + gamma * A_eff.T @ P @ A_eff - gamma ** 2 * APB @ torch.linalg.solve(S, APB.T)


def lqr_objective_torch(K: torch.Tensor, params: LQRGameParams | None = None, *,
                        beta: float = 0.1, gamma_follower: float = 0.95, W: float = 1e-3,
                        horizon: int = 100, gamma: float = 1.0,
                        follower_fixed: bool = False) -> torch.Tensor:
    """Exact ``E Σ_{t<horizon} γ^t r_L(s_t)`` as a differentiable function of ``K (k, n)``.

    ``follower_fixed=True`` detaches the follower's solution (its gains as functions of
    ``(s, a)``), so the gradient is the partial derivative ``∂_K J`` that NAIVE-PGD estimates.

    Raises:
        ValueError: if the follower's LQR at ``K`` is not stabilisable.
    """
    p = params if params is not None else LQRGameParams()
    n, m, k = p.dims
    K = K.reshape(k, n)
    A = torch.tensor(p.A, dtype=DT)
    B = torch.tensor(p.B, dtype=DT)
    C = torch.tensor(p.C, dtype=DT)
    A_eff = A + C @ K
    P_star = discounted_riccati(A_eff.detach().numpy(), p.B, p.Qbar, p.Rbar, gamma_follower)
    P = implicit_fixed_point(lambda X: _riccati_map(X, A_eff, p, gamma_follower), P_star)
    P = (P + P.T) / 2
    if follower_fixed:
        P = P.detach()
    S = torch.tensor(p.Rbar, dtype=DT) + gamma_follower * B.T @ P @ B
    Ks = gamma_follower * torch.linalg.solve(S, B.T @ P @ A)
    Ka = gamma_follower * torch.linalg.solve(S, B.T @ P @ C)
    Wm = torch.as_tensor(np.asarray(W, dtype=np.float64) * np.eye(k), dtype=DT)
    G = C - B @ Ka
    M = A - B @ Ks + G @ K
    N = G @ Wm @ Wm.T @ G.T + B @ (0.5 * beta * torch.linalg.inv(S)) @ B.T
    Lam = torch.tensor(p.sharpness, dtype=DT)
    tgt = torch.tensor(p.target, dtype=DT)
    mu = torch.tensor(p.s0, dtype=DT)
    cov = torch.zeros((n, n), dtype=DT)
    eye = torch.eye(n, dtype=DT)
    total = torch.zeros((), dtype=DT)
    for t in range(int(horizon)):
        d = mu - tgt
        IC = eye + cov @ Lam
        er = torch.linalg.det(IC) ** -0.5 * torch.exp(-0.5 * d @ Lam @ torch.linalg.solve(IC, d))
        total = total + gamma ** t * er
        mu = M @ mu
        cov = M @ cov @ M.T + N
    return total


def lqr_objective(K: Any, **kwargs: Any) -> float:
    """Exact finite-horizon leader return at gain ``K`` (default: 100-step undiscounted)."""
    with torch.no_grad():
        return float(lqr_objective_torch(torch.as_tensor(np.asarray(K, dtype=np.float64)),
                                         **kwargs))


def lqr_objective_and_grad(K: Any, **kwargs: Any) -> tuple[float, np.ndarray]:
    """``(J(K), ∇_K J(K))`` exactly (autograd + implicit Riccati derivative)."""
    Kt = torch.tensor(np.asarray(K, dtype=np.float64), requires_grad=True)
    J = lqr_objective_torch(Kt, **kwargs)
    (grad,) = torch.autograd.grad(J, Kt)
    return float(J.detach()), grad.numpy()


# ============================================================================ dispatch
def _toy_kwargs(br: Any) -> dict:
    game = br.problem
    return dict(model=game.model, beta=br.beta, gamma_follower=game.gamma_follower,
                gamma_leader=game.gamma_leader, bootstrap=br.follower.bootstrap)


@leader_objective_impl.register
def _(problem: ToyGameEnv, br: Any, theta: Any) -> float:
    f = br.leader_policy if theta is None else br.theta_to_policy(theta)
    return toy_objective(f, **_toy_kwargs(br))


@hypergradient_impl.register
def _(problem: ToyGameEnv, br: Any, theta: Any) -> np.ndarray:
    theta = br.config if theta is None else np.asarray(theta, dtype=np.float64)
    shape = (br.problem.n_states, br.problem.n_leader_actions)
    return toy_hypergradient(theta.reshape(shape), **_toy_kwargs(br)).reshape(theta.shape)


def _lqr_kwargs(br: Any) -> dict:
    game = br.problem
    return dict(params=game.params, beta=br.beta, gamma_follower=game.gamma_follower,
                W=float(np.asarray(br.leader_noise).reshape(-1)[0]),
                horizon=_infinite_horizon(game.gamma_leader), gamma=game.gamma_leader)


def _infinite_horizon(gamma: float, tol: float = 1e-10) -> int:
    return int(np.ceil(np.log(tol) / np.log(gamma))) if gamma > 0 else 1


@leader_objective_impl.register
def _(problem: LQRGameEnv, br: Any, theta: Any) -> float:
    K = br.leader_gain if theta is None else br.theta_to_policy(theta)[0]
    return lqr_objective(K, **_lqr_kwargs(br))


@hypergradient_impl.register
def _(problem: LQRGameEnv, br: Any, theta: Any) -> np.ndarray:
    theta = br.config if theta is None else np.asarray(theta, dtype=np.float64)
    K = br.theta_to_policy(theta)[0]
    return lqr_objective_and_grad(K, **_lqr_kwargs(br))[1].reshape(theta.shape)


@report_metrics_impl.register
def _(problem: ToyGameEnv, br: Any) -> dict[str, float]:
    """The paper's toy metrics: the undiscounted and the discounted 150-step return."""
    kw = _toy_kwargs(br)
    T = problem.max_cycles
    return {f"return_{T}": toy_objective(br.leader_policy, horizon=T, gamma=1.0, **kw),
            f"discounted_{T}": toy_objective(br.leader_policy, horizon=T,
                                             gamma=problem.gamma_leader, **kw)}


@follower_metrics_impl.register
def _(problem: ToyGameEnv, br: Any) -> dict[str, float]:
    """For a follower that is not exact: ``objective_actual`` (J_L under the follower's actual
    policy), the 150-step return under it (``return_150_actual``) and, for a follower of the
    paper's Bellman form, ``follower_gap`` (its soft-value gap to the best response at S)."""
    fol = br.follower
    g = None if getattr(fol, "exact", False) else actual_policy(br)
    if g is None:
        return {}
    f, T = br.leader_policy, problem.max_cycles
    out = {"objective_actual": toy_leader_return(problem.model, f, g, problem.gamma_leader),
           f"return_{T}_actual": toy_leader_return(problem.model, f, g, 1.0, horizon=T)}
    if getattr(fol, "bootstrap", "paper") == "paper":
        out["follower_gap"] = game_follower_optimality_gap(
            problem.model, f, g, br.beta, problem.gamma_follower).start
    return out


@report_metrics_impl.register
def _(problem: LQRGameEnv, br: Any) -> dict[str, float]:
    """The paper's LQR metric: the undiscounted 100-step leader return from s0."""
    kw = {**_lqr_kwargs(br), "horizon": problem.max_cycles, "gamma": 1.0}
    return {f"return_{problem.max_cycles}": lqr_objective(br.leader_gain, **kw)}
