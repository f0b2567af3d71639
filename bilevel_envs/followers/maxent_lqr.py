"""Maximum-entropy LQR: the exact soft best response of a linear-Gaussian follower.

Paper App. C.4, Proposition 1 (unobservable disturbance). For the system

    s' = A s + B b + w,   w ~ N(0, W)            (eq. 48, W is the noise *covariance* here)
    r_F(s, b) = -(sᵀ Q̄ s + bᵀ R̄ b)               (eq. 49)

the entropy-regularised follower maximising ``E Σ_t γ^t (r_F + β H(g(·|s_t)))`` plays

    g(b|s) = N(-K s, (β/2) S⁻¹),  K = γ S⁻¹ Bᵀ P A,  S = R̄ + γ Bᵀ P B      (eqs. 57, 64, 69)

where ``P`` solves the discounted Riccati equation (eqs. 55, 72)

    P = Q̄ + γ AᵀPA − γ² AᵀPB (R̄ + γ BᵀPB)⁻¹ BᵀPA,

which is the ordinary DARE of the scaled system ``(√γ A, √γ B)``; it is solved by
:func:`scipy.linalg.solve_discrete_are` (the paper and the authors' code use Riccati iteration,
eq. 108: both reach the same unique stabilising solution; ours is exact to round-off). The soft
values are closed form (eqs. 61-63, 70-73):

    V_F(s) = -(sᵀ P s + v),   v = [-(βm/2) log(πβ) + (β/2) log det S + γ tr(P W)] / (1 − γ)
    Q_F(s, b) = r_F(s, b) + γ E_w V_F(A s + B b + w).

Note: the paper prints ``Tr(WᵀPW)`` in eq. 58 with ``W`` a noise *factor*; here ``W`` is the
covariance ``WWᵀ`` throughout (eq. 73's ``Tr(P WWᵀ)``).

Everything here is generic over ``(A, B, Q̄, R̄, W, γ, β)``: :func:`solve_maxent_lqr` is a pure
function, :func:`riccati_torch` is a differentiable DARE solve (implicit differentiation of the
Riccati fixed point, one discrete Lyapunov solve per backward pass) for exact hypergradients,
and :class:`MaxEntLQRFollower` is the :class:`~bilevel_envs.followers.Follower` that the
:class:`~bilevel_envs.wrappers.BestResponse` wrapper drives. A problem plugs in by exposing
``lqr_model() -> LQRModel``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg as sla

from bilevel_envs.utils import check_beta

__all__ = [
    "GaussianLinearPolicy",
    "LQRModel",
    "MaxEntLQRFollower",
    "MaxEntLQRSolution",
    "check_stabilisable",
    "lqr_policy_evaluation",
    "riccati_iteration",
    "riccati_torch",
    "solve_discounted_dare",
    "solve_maxent_lqr",
]


@dataclass(frozen=True)
class LQRModel:
    """A discounted linear-Gaussian control problem (paper eqs. 48-49).

    Attributes:
        A: ``(n, n)`` state matrix.
        B: ``(n, m)`` input matrix.
        Q: ``(n, n)`` state cost ``Q̄ ⪰ 0``.
        R: ``(m, m)`` input cost ``R̄ ≻ 0``.
        W: ``(n, n)`` noise covariance ``WWᵀ`` (zero allowed).
        gamma: discount ``γ ∈ (0, 1)``.
    """

    A: np.ndarray
    B: np.ndarray
    Q: np.ndarray
    R: np.ndarray
    W: np.ndarray
    gamma: float


@dataclass(frozen=True)
class MaxEntLQRSolution:
    """The solved best response (paper Proposition 1).

    Attributes:
        P: ``(n, n)`` Riccati solution (eq. 72).
        v: the constant of the soft value (eq. 73).
        K: ``(m, n)`` gain, mean action ``−K s`` (eq. 57).
        S: ``(m, m)`` ``R̄ + γ BᵀPB`` (eq. 64).
        cov: ``(m, m)`` action covariance ``(β/2) S⁻¹`` (eq. 69).
        beta: the entropy temperature β.
    """

    P: np.ndarray
    v: float
    K: np.ndarray
    S: np.ndarray
    cov: np.ndarray
    beta: float


# ---------------------------------------------------------------------- validation helpers
def _matrix(name: str, x: Any, shape: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr


def _check_model(A, B, Q, R, W, gamma):
    A = np.asarray(A, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square matrix, got shape {A.shape}")
    n = A.shape[0]
    A = _matrix("A", A, (n, n))
    B = np.asarray(B, dtype=np.float64)
    if B.ndim != 2 or B.shape[0] != n:
        raise ValueError(f"B must have shape ({n}, m), got {B.shape}")
    m = B.shape[1]
    B = _matrix("B", B, (n, m))
    Q = _matrix("Q", Q, (n, n))
    R = _matrix("R", R, (m, m))
    W = _matrix("W", W, (n, n))
    gamma = float(gamma)
    if not 0.0 < gamma < 1.0:
        raise ValueError(f"gamma must be in (0, 1), got {gamma!r}")
    if not np.allclose(Q, Q.T) or np.linalg.eigvalsh((Q + Q.T) / 2).min() < -1e-12:
        raise ValueError("Q (state cost Q̄) must be symmetric positive semi-definite")
    if not np.allclose(R, R.T) or np.linalg.eigvalsh((R + R.T) / 2).min() <= 0.0:
        raise ValueError("R (input cost R̄) must be symmetric positive definite")
    if not np.allclose(W, W.T) or np.linalg.eigvalsh((W + W.T) / 2).min() < -1e-12:
        raise ValueError("W (noise covariance) must be symmetric positive semi-definite")
    return A, B, Q, R, W, gamma


def check_stabilisable(A: np.ndarray, B: np.ndarray, gamma: float, tol: float = 1e-9) -> None:
    """Raise ``ValueError`` unless ``(√γ A, √γ B)`` is stabilisable (PBH test).

    Every eigenvalue ``λ`` of ``√γ A`` with ``|λ| ≥ 1`` must satisfy
    ``rank [λI − √γA, √γB] = n``; otherwise no policy has a finite discounted cost and the
    discounted Riccati equation (eq. 55) has no stabilising solution.
    """
    sa, sb = np.sqrt(gamma) * A, np.sqrt(gamma) * B
    n = A.shape[0]
    for lam in np.linalg.eigvals(sa):
        if abs(lam) < 1.0 - 1e-12:
            continue
        pbh = np.hstack([lam * np.eye(n) - sa, sb.astype(complex)])
        sv = np.linalg.svd(pbh, compute_uv=False)
        if sv[-1] <= tol * max(1.0, sv[0]):
            raise ValueError(
                f"(A, B) is not stabilisable at gamma={gamma}: the mode with eigenvalue "
                f"{lam / np.sqrt(gamma):.6g} of A (|√γ λ| = {abs(lam):.4g} ≥ 1) is not "
                "controllable, so the follower's discounted cost is infinite"
            )


# ---------------------------------------------------------------------- Riccati solvers
def solve_discounted_dare(A, B, Q, R, gamma: float) -> np.ndarray:
    """Stabilising solution ``P`` of the discounted Riccati equation (paper eq. 55).

    Solved as the standard DARE of ``(√γ A, √γ B, Q̄, R̄)`` with
    :func:`scipy.linalg.solve_discrete_are`.

    Raises:
        ValueError: if the system is not stabilisable or the solver fails.
    """
    A, B, Q, R, _, gamma = _check_model(A, B, Q, R, np.zeros_like(np.asarray(Q, float)), gamma)
    check_stabilisable(A, B, gamma)
    sg = np.sqrt(gamma)
    try:
        P = sla.solve_discrete_are(sg * A, sg * B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as exc:  # e.g. undetectable unstable modes
        raise ValueError(
            f"the discounted Riccati equation has no stabilising solution ({exc}); check that "
            "(A, B) is stabilisable and (A, Q^1/2) detectable"
        ) from exc
    P = (P + P.T) / 2
    K = gamma * np.linalg.solve(R + gamma * B.T @ P @ B, B.T @ P @ A)
    rho = np.max(np.abs(np.linalg.eigvals(sg * (A - B @ K))))
    if not np.all(np.isfinite(P)) or rho >= 1.0:
        raise ValueError(
            f"the Riccati solution is not stabilising (spectral radius of √γ(A−BK) = {rho:.6g})"
        )
    return P


def riccati_iteration(A, B, Q, R, gamma: float, tol: float = 1e-12,
                      max_iterations: int = 100_000, P0: np.ndarray | None = None):
    """Plain Riccati value iteration (paper eq. 108), for tests and for k-step followers.

    ``P_{k+1} = Q̄ + γ AᵀP_kA − γ² AᵀP_kB (R̄ + γ BᵀP_kB)⁻¹ BᵀP_kA`` from ``P0`` (default
    ``Q̄``, as in the authors' code) until the relative Frobenius change is below ``tol``.

    Returns:
        ``(P, iterations)``.
    """
    A, B, Q, R, _, gamma = _check_model(A, B, Q, R, np.zeros_like(np.asarray(Q, float)), gamma)
    P = Q.copy() if P0 is None else np.array(P0, dtype=np.float64)
    for k in range(1, int(max_iterations) + 1):
        PA, PB = P @ A, P @ B
        S = R + gamma * B.T @ PB
        P_new = Q + gamma * A.T @ PA - gamma**2 * PA.T @ B @ np.linalg.solve(S, PB.T @ A)
        P_new = (P_new + P_new.T) / 2
        if not np.all(np.isfinite(P_new)):
            raise ValueError("Riccati iteration diverged (system not stabilisable?)")
        change = np.linalg.norm(P_new - P) / max(np.linalg.norm(P_new), 1e-300)
        P = P_new
        if change <= tol:
            return P, k
    return P, int(max_iterations)


def solve_maxent_lqr(A, B, Q, R, W, gamma: float, beta: float,
                     P: np.ndarray | None = None) -> MaxEntLQRSolution:
    """The soft best response of Proposition 1 (eqs. 57, 64, 69, 72, 73).

    Args:
        A, B, Q, R, W, gamma: the :class:`LQRModel` (``W`` = noise covariance).
        beta: entropy temperature β > 0.
        P: a precomputed Riccati solution (skips the DARE solve).

    Raises:
        ValueError: bad shapes, non-finite entries, β ≤ 0, or a non-stabilisable system.
    """
    A, B, Q, R, W, gamma = _check_model(A, B, Q, R, W, gamma)
    beta = check_beta(beta)
    if P is None:
        P = solve_discounted_dare(A, B, Q, R, gamma)
    m = B.shape[1]
    S = R + gamma * B.T @ P @ B
    S = (S + S.T) / 2
    K = gamma * np.linalg.solve(S, B.T @ P @ A)
    cov = 0.5 * beta * np.linalg.inv(S)
    cov = (cov + cov.T) / 2
    _, logdet = np.linalg.slogdet(S)
    v = (-0.5 * beta * m * np.log(np.pi * beta) + 0.5 * beta * logdet
         + gamma * np.trace(P @ W)) / (1.0 - gamma)
    return MaxEntLQRSolution(P=P, v=float(v), K=K, S=S, cov=cov, beta=beta)


def lqr_policy_evaluation(model: LQRModel, K: Any, cov: Any, beta: float
                          ) -> tuple[np.ndarray, float]:
    """Exact soft value of an arbitrary linear-Gaussian follower policy ``b = −K s + ε``,
    ``ε ~ N(0, Σ)``: ``V^g(s) = −(sᵀ X s + c)`` (the policy-evaluation form of Proposition 1).

    With ``F = A − BK`` and ``H = ½ log det(2πe Σ)`` the policy's entropy::

        X = Q̄ + KᵀR̄K + γ FᵀXF                          (a discounted Lyapunov equation)
        c = [tr(R̄Σ) + γ tr(X (BΣBᵀ + W)) − β H] / (1 − γ)

    For the best response (``K``, ``Σ = (β/2)S⁻¹``) this is ``(P, v)`` of
    :func:`solve_maxent_lqr` (tested), so ``V*(s) − V^g(s) = sᵀ(X − P)s + c − v ≥ 0`` is the
    follower's sub-optimality.

    Raises:
        ValueError: if the closed loop ``√γ F`` is not stable (the value is infinite) or
            ``Σ`` is not positive definite.
    """
    A, B, Q, R, W, gamma = _check_model(model.A, model.B, model.Q, model.R, model.W,
                                        model.gamma)
    beta = check_beta(beta)
    K = np.asarray(K, dtype=np.float64)
    cov = np.asarray(cov, dtype=np.float64)
    F = A - B @ K
    if np.max(np.abs(np.linalg.eigvals(np.sqrt(gamma) * F))) >= 1.0:
        raise ValueError("the follower's closed loop is not stable at this discount: its value "
                         "is infinite")
    sign, logdet = np.linalg.slogdet(2 * np.pi * np.e * cov)
    if sign <= 0:
        raise ValueError("cov must be positive definite")
    X = sla.solve_discrete_lyapunov(np.sqrt(gamma) * F.T, Q + K.T @ R @ K)
    X = (X + X.T) / 2
    c = (np.trace(R @ cov) + gamma * np.trace(X @ (B @ cov @ B.T + W))
         - 0.5 * beta * logdet) / (1.0 - gamma)
    return X, float(c)


# ---------------------------------------------------------------------- differentiable DARE
@functools.cache
def _riccati_function():
    import torch

    class _Riccati(torch.autograd.Function):
        """``P(A, B, Q, R)`` with the backward pass of the implicit function theorem.

        At the fixed point ``P = f(P, A, B, Q, R)`` (eq. 55) the Jacobian of the Riccati map in
        ``P`` is ``X ↦ γ FᵀXF`` with ``F = A − BK`` (envelope theorem), so for an upstream
        gradient ``Ḡ`` the adjoint ``Λ`` solves ``Λ − γ F Λ Fᵀ = Ḡ`` and the input gradients are
        the vector-Jacobian product of ``f`` at fixed ``P`` with ``Λ``.
        """

        @staticmethod
        def forward(ctx, A, B, Q, R, gamma):
            P = solve_discounted_dare(A.detach().numpy(), B.detach().numpy(),
                                      Q.detach().numpy(), R.detach().numpy(), gamma)
            P_t = torch.as_tensor(P, dtype=A.dtype)
            ctx.save_for_backward(A, B, Q, R, P_t)
            ctx.gamma = gamma
            return P_t

        @staticmethod
        def backward(ctx, grad_P):
            A, B, Q, R, P = ctx.saved_tensors
            g = ctx.gamma
            with torch.enable_grad():
                A_, B_, Q_, R_ = (t.detach().requires_grad_(True) for t in (A, B, Q, R))
                f = _riccati_map(P, A_, B_, Q_, R_, g)
                K = g * torch.linalg.solve(R_ + g * B_.T @ P @ B_, B_.T @ P @ A_)
                F = (A_ - B_ @ K).detach().numpy()
                G = grad_P.detach().numpy()
                lam = sla.solve_discrete_lyapunov(np.sqrt(g) * F, (G + G.T) / 2)
                grads = torch.autograd.grad(f, (A_, B_, Q_, R_),
                                            torch.as_tensor(lam, dtype=P.dtype),
                                            allow_unused=True)
            grads = tuple(torch.zeros_like(t) if gr is None else gr
                          for gr, t in zip(grads, (A, B, Q, R)))
            return (*grads, None)

    return _Riccati


def _riccati_map(P, A, B, Q, R, gamma):
    """One Riccati backup ``f(P)`` (eq. 55 right-hand side), torch."""
    import torch

    PA = P @ A
    S = R + gamma * B.T @ P @ B
    return Q + gamma * A.T @ PA - gamma**2 * PA.T @ B @ torch.linalg.solve(S, B.T @ PA)


def riccati_torch(A, B, Q, R, gamma: float):
    """Differentiable stabilising solution of the discounted Riccati equation (eq. 55).

    Forward: :func:`solve_discounted_dare` (scipy). Backward: implicit differentiation of the
    fixed point, exact up to round-off (one discrete Lyapunov solve). Gradients flow to every
    torch input that requires them (``A``, ``B``, ``Q̄``, ``R̄``).
    """
    return _riccati_function().apply(A, B, Q, R, float(gamma))


# ---------------------------------------------------------------------- follower
class GaussianLinearPolicy:
    """The follower's best response ``g(b|s) = N(−K s, Σ)`` (eq. 57), vectorised over states.

    Calling it on ``(N, n)`` states returns ``(means (N, m), cov (m, m))``.
    """

    def __init__(self, K: np.ndarray, cov: np.ndarray):
        self.K = np.asarray(K, dtype=np.float64)
        self.cov = np.asarray(cov, dtype=np.float64)
        self._chol = np.linalg.cholesky(self.cov)
        self._cov_inv = np.linalg.inv(self.cov)
        m = self.cov.shape[0]
        self._log_norm = -0.5 * (m * np.log(2 * np.pi) + np.linalg.slogdet(self.cov)[1])

    def mean(self, states: np.ndarray) -> np.ndarray:
        """``−K s`` for each row of ``states``."""
        return -np.asarray(states, dtype=np.float64) @ self.K.T

    def __call__(self, states: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.mean(states), self.cov

    def sample(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One action per state, ``(N, m)``."""
        mu = self.mean(states)
        return mu + rng.standard_normal(mu.shape) @ self._chol.T

    def log_prob(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``log g(b|s)`` per row."""
        d = np.asarray(actions, dtype=np.float64) - self.mean(states)
        return self._log_norm - 0.5 * np.einsum("ni,ij,nj->n", d, self._cov_inv, d)

    def entropy(self) -> float:
        """Differential entropy ``H(g(·|s))`` (state independent)."""
        m = self.cov.shape[0]
        return 0.5 * (m * (1 + np.log(2 * np.pi)) + np.linalg.slogdet(self.cov)[1])


class MaxEntLQRFollower:
    """Exact MaxEnt-LQR best response (paper Proposition 1) for a linear-Gaussian problem.

    ``solve(problem)`` reads ``problem.lqr_model()`` (an :class:`LQRModel`) and solves the
    discounted DARE. Afterwards :attr:`policy` is a :class:`GaussianLinearPolicy` and
    :attr:`soft_q` / :attr:`soft_v` are vectorised callables:

    - ``soft_v(states) = −(sᵀPs + v)``                      (eqs. 60, 72, 73)
    - ``soft_q(states, actions) = r_F(s,b) + γ E_w V_F(As + Bb + w)``   (eqs. 61-63)

    Args:
        beta: entropy temperature β > 0.
        model: solve this fixed :class:`LQRModel` instead of asking the problem (optional).
    """

    #: the exact best response (solved to tolerance)
    exact = True

    def __init__(self, beta: float, model: LQRModel | None = None):
        self.beta = check_beta(beta)
        self.solution: MaxEntLQRSolution | None = None
        self.model: LQRModel | None = None
        if model is not None:
            self.solve_model(model)

    # -------------------------------------------------------------- solving
    def solve(self, problem: Any) -> None:
        """Re-solve for the problem's current θ (``problem.lqr_model()``)."""
        self.solve_model(problem.lqr_model())

    def solve_model(self, model: LQRModel) -> MaxEntLQRSolution:
        """Solve a given :class:`LQRModel` and make it the current best response."""
        sol = solve_maxent_lqr(model.A, model.B, model.Q, model.R, model.W, model.gamma,
                               self.beta)
        self.model, self.solution = model, sol
        self._policy = GaussianLinearPolicy(sol.K, sol.cov)
        return sol

    def _require(self) -> MaxEntLQRSolution:
        if self.solution is None:
            raise RuntimeError("call solve(problem) before using the follower")
        return self.solution

    def state_dict(self) -> dict:
        """The model last solved (the solution is a deterministic function of it)."""
        if self.model is None:
            return {"model": None}
        m = self.model
        return {"model": {"A": m.A.copy(), "B": m.B.copy(), "Q": m.Q.copy(), "R": m.R.copy(),
                          "W": m.W.copy(), "gamma": float(m.gamma)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (re-solves the stored model: the DARE has no warm start)."""
        m = state["model"]
        if m is None:
            self.model = self.solution = None
            return
        self.solve_model(LQRModel(**{k: (float(v) if k == "gamma" else np.array(v, np.float64))
                                     for k, v in m.items()}))

    # -------------------------------------------------------------- protocol
    @property
    def policy(self) -> GaussianLinearPolicy:
        """The Gaussian policy ``g(b|s) = N(−K s, (β/2) S⁻¹)`` of the last solve."""
        self._require()
        return self._policy

    def act(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``b ~ N(−K s, (β/2)S⁻¹)`` for each row of ``states`` (``(N, n)`` → ``(N, m)``)."""
        self._require()
        return self._policy.sample(np.asarray(states, dtype=np.float64), rng)

    @property
    def soft_v(self):
        """``V_F(s) = −(sᵀP s + v)`` as a function of an ``(N, n)`` batch of states."""
        sol = self._require()

        def soft_v(states: np.ndarray) -> np.ndarray:
            s = np.asarray(states, dtype=np.float64)
            return -(np.einsum("ni,ij,nj->n", s, sol.P, s) + sol.v)

        return soft_v

    @property
    def soft_q(self):
        """``Q_F(s, b) = r_F(s, b) + γ E[V_F(s')]``, a function of ``(N, n)`` states and
        ``(N, m)`` actions."""
        sol, mdl = self._require(), self.model

        def soft_q(states: np.ndarray, actions: np.ndarray) -> np.ndarray:
            s = np.asarray(states, dtype=np.float64)
            b = np.asarray(actions, dtype=np.float64)
            nxt = s @ mdl.A.T + b @ mdl.B.T
            r_f = -(np.einsum("ni,ij,nj->n", s, mdl.Q, s) + np.einsum("ni,ij,nj->n", b, mdl.R, b))
            ev = -(np.einsum("ni,ij,nj->n", nxt, sol.P, nxt) + np.trace(sol.P @ mdl.W) + sol.v)
            return r_f + mdl.gamma * ev

        return soft_q

    @property
    def gain(self) -> np.ndarray:
        """The gain ``K`` of the mean action ``−K s``."""
        return self._require().K
