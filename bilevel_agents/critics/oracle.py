"""Exact (oracle) leader critics: the ground truth with the critic protocol, for tests and for
separating critic error from sampling noise. Not for learning from samples.

* :class:`ExactCritic`: tabular configurable MDPs (``Q_L`` by one linear solve);
* :class:`ExactBuildingCritic`: building thermal control (stationary quadratic ``Q_L``);
* :class:`LQRExactLeaderCritic`: the LQR Markov game (Gaussian integrals).

:func:`exact_critic` picks the one for a best response (``critic="exact"`` in every leader).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from bilevel_agents.critics.model import expected_action_value
from bilevel_agents.critics.tabular import TableCritic
from bilevel_agents.exact.building import LeaderQuadratic, exact_leader_critic
from bilevel_agents.exact.tabular import leader_values
from bilevel_envs.core import TabularConfigurableEnv
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.games.lqr_game_v0 import LQRGameEnv

__all__ = ["ExactBuildingCritic", "ExactCritic", "LQRExactLeaderCritic", "exact_critic"]


class ExactCritic(TableCritic):
    """The exact ``Q_L^{θ†}`` from the tabular model (for tests and analysis, not for learning
    from samples): with it, BC-HG's average estimate equals the exact hypergradient.
    """

    def __init__(self, gamma: float = 0.99):
        self.gamma = float(gamma)
        self.table = np.zeros((0, 0))

    def update(self, batch: Any, br: Any) -> dict[str, float]:
        """Solve for the exact ``Q_L`` of the follower's current policy (the batch is unused)."""
        self.table, _ = leader_values(br.problem.tabular_model(), br.policy, self.gamma)
        return {}


class ExactBuildingCritic:
    """The exact stationary ``Q_L``/``V_L`` as a :class:`~bilevel_agents.critics.Critic`.

    For tests and for separating critic error from sampling noise: with it, BC-HG's estimate is
    unbiased for the (infinite-horizon) hypergradient.
    """

    def __init__(self) -> None:
        self.exact: LeaderQuadratic | None = None

    def update(self, batch: Any, br: Any) -> dict[str, float]:
        """Recompute the exact critic at the wrapper's current θ (the batch is unused)."""
        self.exact = exact_leader_critic(br)
        return {}

    def q(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Exact ``Q_L(s, b)``."""
        return self.exact.q(states, actions)

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """Exact ``V_L(s)``."""
        return self.exact.v(states)

    def state_dict(self) -> dict[str, Any]:
        """Nothing: the critic is recomputed from the model at every update."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Nothing to restore (module docstring)."""
        self.exact = None




class LQRExactLeaderCritic:
    """Exact ``Q_L(s, a, b) = r_L(s) + γ_L V_L(As + Bb + Ca)`` of the LQR game (an oracle critic).

    ``V_L(x) = Σ_t γ_L^t E[r_L(s_t) | s_0 ~ N(x, Σ_0)]`` under the current leader gain and the
    follower's best response: the state law is ``N(M^t x, C_t + M^t Σ_0 M^tᵀ)`` with a covariance
    sequence ``C_t`` independent of ``x``, so all samples share ``M^t`` and the covariances, and
    the Gaussian integral ``E exp(−½(s − s*)ᵀΛ(s − s*))`` is vectorised over samples. ``update``
    re-reads the wrapper's current gain; ``q`` and ``v`` evaluate batches.

    Args:
        tol: truncate the discounted sum where ``γ_L^t < tol``.
    """

    def __init__(self, tol: float = 1e-8):
        self.tol = float(tol)

    def update(self, batch: Any, br: Any) -> dict[str, float]:
        """Recompute ``V_L`` at the wrapper's current leader gain (the batch is unused)."""
        gamma = br.gamma_leader
        p = br.problem.params
        fol = br.follower
        n, _, _ = p.dims
        K, W = br.leader_gain, br.leader_noise
        G = p.C - p.B @ fol.K_a
        M = p.A - p.B @ fol.K_s + G @ K
        N = G @ W @ W.T @ G.T + p.B @ fol.cov @ p.B.T
        T = int(np.ceil(np.log(self.tol) / np.log(gamma)))
        Mt = np.empty((T, n, n))
        Ct = np.empty((T, n, n))
        C = np.zeros((n, n))
        Mk = np.eye(n)
        for t in range(T):
            Mt[t], Ct[t] = Mk, C
            Mk = M @ Mk
            C = M @ C @ M.T + N
        self._Mt, self._Ct = Mt, Ct
        self._gain, self._scale = self._integrals(Ct, p.sharpness, gamma)
        # Mcat[j, t*n + i] = (M^t)[i, j]
        self._Mcat = np.ascontiguousarray(Mt.transpose(2, 0, 1).reshape(n, T * n))
        self._gamma, self._p = gamma, p
        self._G, self._A_cl = G, p.A - p.B @ fol.K_s
        self._noise_b, self._noise_ab = p.B @ fol.cov @ p.B.T, N
        self._K = K
        return {"critic_td_mse": 0.0}

    @staticmethod
    def _integrals(covs: np.ndarray, lam: np.ndarray, gamma: float):
        """Gains ``Λ(I + C_tΛ)⁻¹`` and scales ``γ^t det(I + C_tΛ)^{-1/2}`` of the integrals."""
        n = lam.shape[0]
        IC = np.eye(n)[None] + covs @ lam
        gain = lam[None] @ np.linalg.inv(IC)
        scale = gamma ** np.arange(len(covs)) / np.sqrt(np.linalg.det(IC))
        return gain, scale

    def leader_value(self, x: np.ndarray, start_cov: np.ndarray | None = None) -> np.ndarray:
        """``V_L`` from ``s_0 ~ N(x, start_cov)`` (deterministic ``x`` if ``None``), ``(N,)``."""
        x = np.asarray(x, dtype=np.float64)
        if start_cov is None:
            gain, scale = self._gain, self._scale
        else:
            covs = self._Ct + self._Mt @ start_cov @ self._Mt.transpose(0, 2, 1)
            gain, scale = self._integrals(covs, self._p.sharpness, self._gamma)
        T, n = gain.shape[:2]
        # one BLAS product for all t: d[:, t, i] = (M^t x)_i − s*_i
        d = (x @ self._Mcat).reshape(len(x), T, n) - self._p.target
        quad = np.zeros((len(x), T))
        for i in range(n):  # n² elementwise terms (n = 2), vectorised over samples and time
            for j in range(n):
                quad += gain[:, i, j] * d[..., i] * d[..., j]
        return np.exp(-0.5 * quad) @ scale

    def q(self, s, a, b) -> np.ndarray:
        """Exact ``Q_L(s, a, b)`` for batches with leading dimensions ``(...)``."""
        p = self._p
        s = np.asarray(s, dtype=np.float64)
        lead = s.shape[:-1]
        s2 = s.reshape(-1, s.shape[-1])
        a2 = np.asarray(a, dtype=np.float64).reshape(len(s2), -1)
        b2 = np.asarray(b, dtype=np.float64).reshape(len(s2), -1)
        nxt = s2 @ p.A.T + b2 @ p.B.T + a2 @ p.C.T
        q = p.leader_reward(s2) + self._gamma * self.leader_value(nxt)
        return q.reshape(lead)

    def v(self, s, br: Any, leader_actions=None) -> np.ndarray:
        """Exact ``E_{b~g(·|s,a)} Q_L(s, a, b)`` given ``a``, else ``E_{a~f, b~g} Q_L(s, a, b)``.

        With ``b = −K_s s − K_a a + ε`` the next state is Gaussian given ``s``: mean
        ``(A − BK_s)s + (C − BK_a)a`` and covariance ``B Σ_b Bᵀ`` (plus ``G WWᵀ Gᵀ`` when ``a`` is
        drawn too, with mean action ``Ks``), so the expectation is one more Gaussian integral.
        """
        return expected_action_value(self, s, leader_actions, self._p.leader_reward)

    def state_dict(self) -> dict:
        """Nothing: the critic is recomputed from the model at every update."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore."""


@functools.singledispatch
def _exact_critic(problem: Any, br: Any, **kwargs: Any) -> Any:
    raise ValueError(f"no exact critic for {type(problem).__name__}; pass a critic object")


@_exact_critic.register
def _(problem: TabularConfigurableEnv, br: Any, **kwargs: Any) -> ExactCritic:
    return ExactCritic(gamma=problem.gamma_leader, **kwargs)


@_exact_critic.register
def _(problem: BuildingThermalEnv, br: Any, **kwargs: Any) -> "ExactBuildingCritic":
    return ExactBuildingCritic(**kwargs)


@_exact_critic.register
def _(problem: LQRGameEnv, br: Any, **kwargs: Any) -> "LQRExactLeaderCritic":
    return LQRExactLeaderCritic(**kwargs)


def exact_critic(br: Any, **kwargs: Any) -> Any:
    """The exact critic of ``br``'s problem (``ValueError`` if the problem has none)."""
    return _exact_critic(br.problem, br, **kwargs)
