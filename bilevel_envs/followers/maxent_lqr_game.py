"""MaxEnt LQR follower that observes the leader's action (paper App. C.4, Prop. 2, eqs. 75–94).

With the leader's policy ``a ~ N(K s, W Wᵀ)`` the game ``s' = A s + B b + C a`` becomes an LQR
with an *observable* disturbance ``w̃ = C (a − K s)`` and effective state matrix ``A' = A + C K``
(eq. 54c). Its entropy-regularised optimum (β, γ_F) is, with ``P = RICCATI(A', B, Q̄, R̄, γ_F)``
(eq. 55) and ``S = R̄ + γ_F BᵀPB``:

* policy (eq. 75, 77): ``g(b|s, a) = N(−K_s s − K_a a, (β/2) S⁻¹)``,
  ``K_s = γ_F S⁻¹BᵀPA``, ``K_a = γ_F S⁻¹BᵀPC``;
* soft value (eq. 76, 93–94, as a reward = −cost):
  ``V_F(s, a) = −[sᵀQ̄s + (As + Ca)ᵀ P_aa (As + Ca) + v]`` with
  ``P_aa = γ_F P − γ_F² PBS⁻¹BᵀP`` and
  ``v = [−(βm/2) log(πβ) + (β/2) log det S + γ_F tr(P_aa C WWᵀ Cᵀ)] / (1 − γ_F)``;
* soft action value: ``Q_F(s, a, b) = r_F(s, b) + γ_F E_{a'~f(·|s')} V_F(s', a')``.

The Riccati equation is solved in closed form by ``scipy.linalg.solve_discrete_are`` on the
discount-scaled system ``(√γ A', √γ B)``; a non-stabilisable pair raises ``ValueError``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.linalg as sla

from bilevel_envs.utils import check_beta

__all__ = ["MaxEntLQRGameFollower", "discounted_riccati"]


def discounted_riccati(A: np.ndarray, B: np.ndarray, Q: np.ndarray, R: np.ndarray,
                       gamma: float) -> np.ndarray:
    """Stabilising solution ``P`` of ``P = Q + γAᵀPA − γ²AᵀPB(R + γBᵀPB)⁻¹BᵀPA`` (eq. 55).

    Raises:
        ValueError: if ``(√γ A, √γ B)`` is not stabilisable (no stabilising solution).
    """
    sg = np.sqrt(gamma)
    try:
        P = sla.solve_discrete_are(sg * A, sg * B, Q, R)
    except (np.linalg.LinAlgError, ValueError) as err:
        raise ValueError(f"LQR not stabilisable: (A, B) = ({A.tolist()}, {B.tolist()}) with "
                         f"gamma={gamma} has no stabilising Riccati solution ({err})") from None
    P = (P + P.T) / 2
    S = R + gamma * B.T @ P @ B
    Ks = gamma * np.linalg.solve(S, B.T @ P @ A)
    rho = np.max(np.abs(np.linalg.eigvals(sg * (A - B @ Ks))))
    resid = Q + gamma * A.T @ P @ A - gamma ** 2 * A.T @ P @ B @ np.linalg.solve(S, B.T @ P @ A) - P
    bad_resid = np.max(np.abs(resid)) > 1e-6 * (1 + np.abs(P).max())
    if not np.all(np.isfinite(P)) or rho >= 1.0 or bad_resid:
        raise ValueError(f"LQR not stabilisable: A={A.tolist()}, B={B.tolist()}, gamma={gamma} "
                         f"(closed-loop spectral radius {rho:.4g})")
    return P


class MaxEntLQRGameFollower:
    """Closed-form soft best response of the follower in the LQR game (Prop. 2).

    Args:
        beta: entropy temperature β > 0 (paper: 0.1).
        gamma: follower discount γ_F (paper: 0.95).

    After :meth:`solve` (``game``, leader gain ``K`` of shape ``(k, n)`` and noise ``W``):
    ``P``, ``S``, ``K_s``, ``K_a``, ``P_aa``, ``v``, ``cov`` = ``(β/2)S⁻¹``, and the callables
    ``policy(s, a) -> (mean, cov)``, ``soft_v(s, a)``, ``soft_q(s, a, b)`` on batches.
    """

    #: the exact best response (solved to tolerance)
    exact = True

    def __init__(self, beta: float, gamma: float = 0.95):
        self.beta = check_beta(beta)
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        self.gamma = float(gamma)
        self.K: np.ndarray | None = None

    def solve(self, game: Any, leader_policy: Any = None) -> None:
        """Solve against the leader's linear-Gaussian policy ``N(K s, W Wᵀ)``.

        Args:
            game: the LQR game (its ``params`` hold A, B, C, Q̄, R̄).
            leader_policy: ``(K, W)`` or just ``K`` (keeping the previous W, default 1e-3);
                the previous policy if ``None``.

        Raises:
            ValueError: bad shapes, or a ``K`` for which the follower's LQR is not stabilisable.
        """
        p = game.unwrapped.params if hasattr(game, "unwrapped") else game.params
        self._solve(p, leader_policy)

    def _solve(self, p: Any, leader_policy: Any) -> None:
        n, m, k = p.dims
        if leader_policy is None:
            if self.K is None:
                raise ValueError("leader_policy must be given on the first solve")
            K, W = self.K, self.W
        else:
            if isinstance(leader_policy, tuple):
                K, W = leader_policy
            else:
                K, W = leader_policy, getattr(self, "W", np.full((k, k), 1e-3) * np.eye(k))
            K = np.asarray(K, dtype=np.float64).reshape(k, n) if np.size(K) == k * n else None
            if K is None:
                raise ValueError(f"leader gain K must have {k * n} entries (shape {(k, n)})")
            W = np.asarray(W, dtype=np.float64)
            W = W * np.eye(k) if W.ndim == 0 else W.reshape(k, k)
            if not (np.all(np.isfinite(K)) and np.all(np.isfinite(W))):
                raise ValueError("leader gain K and noise W must be finite")
            if np.linalg.eigvalsh(W @ W.T).min() <= 0.0:
                # a degenerate Gaussian leader has no density: ∇log f does not exist
                raise ValueError(f"leader noise W must be non-singular (W Wᵀ positive "
                                 f"definite), got W={W.tolist()!r}")
        g = self.gamma
        A_eff = p.A + p.C @ K
        P = discounted_riccati(A_eff, p.B, p.Qbar, p.Rbar, g)
        S = p.Rbar + g * p.B.T @ P @ p.B
        S_inv_BtP = np.linalg.solve(S, p.B.T @ P)
        self.K, self.W, self.params = K.copy(), W.copy(), p
        self.P, self.S = P, S
        self.K_s = g * S_inv_BtP @ p.A
        self.K_a = g * S_inv_BtP @ p.C
        self.P_aa = g * P - g ** 2 * P @ p.B @ S_inv_BtP
        self.cov = 0.5 * self.beta * np.linalg.inv(S)
        self._chol = np.linalg.cholesky(self.cov)
        Wc = p.C @ W
        _, logdet = np.linalg.slogdet(S)
        self.v = (-(self.beta * m / 2) * np.log(np.pi * self.beta) + 0.5 * self.beta * logdet
                  + g * np.trace(self.P_aa @ Wc @ Wc.T)) / (1 - g)

    def state_dict(self) -> dict:
        """The leader policy ``(K, W)`` last answered (the solution is a function of it)."""
        if self.K is None:
            return {"K": None}
        return {"K": self.K.copy(), "W": self.W.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (re-solves for the stored ``(K, W)``; needs a prior
        :meth:`solve` on the same game, as every wrapped follower has had)."""
        if state["K"] is None:
            self.K = None
            return
        if getattr(self, "params", None) is None:
            raise RuntimeError("load_state_dict needs a follower solved once on its game")
        self._solve(self.params, (np.array(state["K"], np.float64),
                                  np.array(state["W"], np.float64)))

    # ------------------------------------------------------------------ callables on batches
    def _check(self) -> None:
        if self.K is None:
            raise RuntimeError("call solve() first")

    def mean_action(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``−K_s s − K_a a`` for ``s (N, n)``, ``a (N, k)`` (eq. 77)."""
        self._check()
        return -(np.atleast_2d(s) @ self.K_s.T + np.atleast_2d(a) @ self.K_a.T)

    def policy(self, s: np.ndarray, a: np.ndarray):
        """``(mean (N, m), cov (m, m))`` of ``g(·|s, a)``."""
        return self.mean_action(s, a), self.cov

    def soft_v(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``V_F(s, a)`` for batches (eq. 76 with A → A + CK, w → C(a − Ks)), shape ``(N,)``."""
        self._check()
        p = self.params
        s, a = np.atleast_2d(s), np.atleast_2d(a)
        x = s @ p.A.T + a @ p.C.T
        return -(np.einsum("ni,ij,nj->n", s, p.Qbar, s)
                 + np.einsum("ni,ij,nj->n", x, self.P_aa, x) + self.v)

    def soft_q(self, s: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """``Q_F(s, a, b) = r_F(s, b) + γ_F E_{a'~N(Ks', WWᵀ)} V_F(s', a')``, shape ``(N,)``."""
        self._check()
        p = self.params
        s, a, b = np.atleast_2d(s), np.atleast_2d(a), np.atleast_2d(b)
        nxt = s @ p.A.T + b @ p.B.T + a @ p.C.T
        r_f = -(np.einsum("ni,ij,nj->n", s, p.Qbar, s) + np.einsum("ni,ij,nj->n", b, p.Rbar, b))
        mean_next = self.soft_v(nxt, nxt @ self.K.T)
        Wc = p.C @ self.W
        return r_f + self.gamma * (mean_next - np.trace(self.P_aa @ Wc @ Wc.T))

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample ``b ~ g(·|s, a)`` for follower observations ``obs = [s, a]`` of shape (N, n+k)."""
        self._check()
        n = self.params.dims[0]
        obs = np.atleast_2d(np.asarray(obs, dtype=np.float64))
        mean = self.mean_action(obs[:, :n], obs[:, n:])
        return mean + rng.standard_normal(mean.shape) @ self._chol.T
