"""A plug-in model-based leader critic for linear-Gaussian Markov games (the LQR game).

The LQR game's leader reward is a Gaussian bump ``r_L(s) = exp(−½(s − s*)ᵀΛ(s − s*))`` and its
dynamics are linear-Gaussian, so the leader's action value has a closed form::

    Q_L(s, a, b) = r_L(s) + γ_L E_w V_L(Âs + B̂b + Ĉa + w),
    V_L(x)       = Σ_t γ_L^t E[r_L(s_t) | s_0 ~ N(x, Σ_0)]   (Gaussian integrals),

under the closed loop ``s' = M s + noise`` with ``M = Â − B̂K̂_s + (Ĉ − B̂K̂_a)K`` and noise
covariance ``N = Ĝ WWᵀ Ĝᵀ + B̂Σ̂_bB̂ᵀ + Σ̂_w`` (``Ĝ = Ĉ − B̂K̂_a``). The oracle
:class:`~bilevel_agents.critics.LQRExactLeaderCritic` computes this from the true matrices;
:class:`LQRModelCritic` computes it from *estimates*:

* dynamics ``(Â, B̂, Ĉ)`` and the process-noise covariance ``Σ̂_w``: least squares of ``s'`` on
  ``(s, a, b)`` over every transition the critic has seen (sufficient statistics, optionally
  forgotten by a factor ``forget`` per update; the dynamics do not move with θ, so the default
  keeps everything), ``Σ̂_w`` from the residuals;
* the follower ``b ~ N(−K̂_s s − K̂_a a, Σ̂_b)``: read from the follower's *published* policy
  (``follower="published"``, the white-box assumption of Theorem 2 that BC-HG's Benefit already
  uses), or fitted by least squares of ``b`` on ``(s, a)`` with its residual covariance
  (``follower="fit"``), forgetting old iterations by ``follower_forget`` per update because the
  follower re-solves whenever θ moves;
* the leader's own policy ``(K, W)``, its discount and its reward function ``r_L`` are its own.

Nothing exact enters: only transitions ``(s, a, b, s')`` (and, with ``follower="published"``,
the follower's published policy). The Benefit ``B_L = Q_L − E_{b~ĝ(·|s,a)} Q_L`` is computed in
closed form (one more Gaussian integral, :meth:`LQRModelCritic.v`); the Markov-game family uses
it instead of follower samples for critics with ``expected_benefit = True``.

Why it fits: on-policy leader actions lie within ``W = 1e-3`` of ``Ks``, so a generic TD critic
cannot identify ``∂Q_L/∂a`` (docs/results/games.md §4). Here ``∂Q_L/∂a = γ_L Ĉᵀ∇V_L`` comes
from the structure, and ``Ĉ`` is identified by the dynamics regression, which sees every
leader action (the exploration phase's and those of earlier gains as well).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_envs.utils import check_choice, check_float
from bilevel_envs.wrappers import GameBatch

__all__ = ["LQRModelCritic", "bump_factors", "expected_action_value", "gaussian_bump_values"]

FOLLOWER_MODELS = ("published", "fit")


def bump_factors(mean_maps: np.ndarray, covs: np.ndarray, weights: np.ndarray,
                 target: np.ndarray, lam: np.ndarray, start_cov: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Factors of the Gaussian integrals of :func:`gaussian_bump_values` (reused across calls).

    ``E exp(−½(s − s*)ᵀΛ(s − s*))`` for ``s ~ N(μ, Σ)`` is
    ``det(I + ΣΛ)^{-1/2} exp(−½(μ − s*)ᵀ G (μ − s*))`` with ``G = Λ(I + ΣΛ)⁻¹`` (symmetric
    PSD). With ``G_t = L_t L_tᵀ`` and ``μ_t = M_t x`` the exponent is ``|L_tᵀM_t x − L_tᵀs*|²``:
    one affine map of ``x`` for all ``t`` (``Φ (n, T·n)``, ``c (T·n,)``) and the scales
    ``w_t det(I + Σ_tΛ)^{-1/2}``.
    """
    n = lam.shape[0]
    if start_cov is not None:
        covs = covs + mean_maps @ start_cov @ mean_maps.transpose(0, 2, 1)
    with np.errstate(all="ignore"):
        IC = np.eye(n)[None] + covs @ lam
        gain = lam[None] @ np.linalg.inv(IC)
        gain = np.nan_to_num((gain + gain.transpose(0, 2, 1)) / 2)
        w, V = np.linalg.eigh(gain)
        L = V * np.sqrt(np.clip(w, 0.0, None))[:, None, :]        # G_t = L_t L_tᵀ
        phi = np.nan_to_num(L.transpose(0, 2, 1) @ mean_maps)     # (T, n, n): L_tᵀ M_t
        scale = np.nan_to_num(weights / np.sqrt(np.linalg.det(IC)))
    T = len(mean_maps)
    # column i·T + t of Φ is row i of L_tᵀM_t (blocks of T contiguous columns per i)
    cat = np.ascontiguousarray(phi.transpose(2, 1, 0).reshape(n, n * T))
    offset = (L.transpose(0, 2, 1) @ target).T.reshape(n * T)
    return cat, offset, scale


def gaussian_bump_values(mean_maps: np.ndarray, covs: np.ndarray, weights: np.ndarray,
                         x: np.ndarray, target: np.ndarray, lam: np.ndarray,
                         start_cov: np.ndarray | None = None,
                         factors: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
                         ) -> np.ndarray:
    """``Σ_t w_t E exp(−½(s_t − s*)ᵀΛ(s_t − s*))`` for ``s_t ~ N(M_t x, C_t + M_t Σ_0 M_tᵀ)``.

    Args:
        mean_maps: ``(T, n, n)`` the maps ``M_t`` (``M^t`` for a linear closed loop).
        covs: ``(T, n, n)`` the covariances ``C_t`` independent of ``x``.
        weights: ``(T,)`` the weights ``w_t`` (``γ^t``).
        x: ``(N, n)`` start means.
        target, lam: the bump's centre ``s*`` ``(n,)`` and precision ``Λ`` ``(n, n)``.
        start_cov: ``(n, n)`` covariance ``Σ_0`` of the start state (``None``: deterministic).
        factors: :func:`bump_factors` of the same arguments, if already computed.

    Returns:
        ``(N,)`` values (the terms of a diverging closed loop that overflow count as 0).
    """
    cat, offset, scale = factors if factors is not None else bump_factors(
        mean_maps, covs, weights, target, lam, start_cov)
    x = np.asarray(x, dtype=np.float64)
    T, n = len(scale), lam.shape[0]
    with np.errstate(all="ignore"):
        y = x @ cat
        y -= offset
        y *= y
        quad = y[:, :T]
        for i in range(1, n):
            quad += y[:, i * T:(i + 1) * T]
        quad *= -0.5
        out = np.exp(quad, out=quad) @ scale
    return np.where(np.isfinite(out), out, 0.0)


def expected_action_value(critic: Any, s: Any, leader_actions: Any, reward: Any) -> np.ndarray:
    """``E_b Q_L(s, a, b)`` given ``a`` (else ``E_{a,b}``) of a Gaussian closed-loop critic.

    With ``b = −K_s s − K_a a + ε`` the next state is Gaussian given ``s``: mean
    ``A_cl s + G a`` and covariance ``critic._noise_b`` (``critic._noise_ab`` when ``a ~ N(Ks,
    WWᵀ)`` is drawn too), so the expectation is ``r_L(s) + γ_L`` times one more Gaussian
    integral (``critic.leader_value``). Shared by the model critic (estimated matrices) and the
    exact LQR critic (true matrices).
    """
    s = np.asarray(s, dtype=np.float64)
    flat = s.reshape(-1, s.shape[-1])
    if leader_actions is None:
        mean = flat @ (critic._A_cl + critic._G @ critic._K).T
        cov = critic._noise_ab
    else:
        a = np.asarray(leader_actions, dtype=np.float64).reshape(len(flat), -1)
        mean = flat @ critic._A_cl.T + a @ critic._G.T
        cov = critic._noise_b
    out = reward(flat) + critic._gamma * critic.leader_value(mean, cov)
    return out.reshape(s.shape[:-1])


class LQRModelCritic:
    """Plug-in model-based ``Q_L(s, a, b)`` of the LQR game (module docstring).

    Args:
        follower: ``"published"`` (read ``K_s``, ``K_a``, ``Σ_b`` from the follower's published
            policy) or ``"fit"`` (least squares of ``b`` on ``(s, a)``).
        forget: factor applied to the dynamics statistics at every update (1: keep all).
        follower_forget: the same for the fitted follower's statistics (``follower="fit"``).
        ridge: ridge penalty of both regressions, relative to the mean diagonal of the Gram
            matrix (tiny: on-policy leader actions excite ``Ĉ`` at the scale ``W²``).
        tol: truncate the discounted sums where ``γ_L^t < tol``.

    After :meth:`update`: ``A``, ``B``, ``C``, ``noise_cov`` (``Σ̂_w``), ``K_s``, ``K_a``,
    ``follower_cov`` (``Σ̂_b``), and :meth:`leader_value`, :meth:`q`, :meth:`v`,
    :meth:`objective`.
    """

    #: the Benefit's ``E_b Q_L`` is exact under the fitted model (:meth:`v` with actions)
    expected_benefit = True

    def __init__(self, follower: str = "published", forget: float = 1.0,
                 follower_forget: float = 0.5, ridge: float = 1e-12, tol: float = 1e-4):
        self.follower = check_choice("follower", follower, FOLLOWER_MODELS)
        self.forget = check_float("forget", forget, low=0.0, high=1.0, low_open=True)
        self.follower_forget = check_float("follower_forget", follower_forget, low=0.0,
                                           high=1.0, low_open=True)
        self.ridge = check_float("ridge", ridge, low=0.0)
        self.tol = check_float("tol", tol, low=0.0, high=1.0, low_open=True, high_open=True)
        self._dyn: dict[str, np.ndarray] | None = None
        self._fol: dict[str, np.ndarray] | None = None
        self.fitted = False

    # ------------------------------------------------------------------ statistics
    @staticmethod
    def _accumulate(stats: dict[str, np.ndarray] | None, z: np.ndarray, y: np.ndarray,
                    forget: float) -> dict[str, np.ndarray]:
        zz, zy, yy = z.T @ z, z.T @ y, y.T @ y
        if stats is None:
            return {"zz": zz, "zy": zy, "yy": yy, "count": np.array(float(len(z)))}
        return {"zz": forget * stats["zz"] + zz, "zy": forget * stats["zy"] + zy,
                "yy": forget * stats["yy"] + yy,
                "count": np.array(forget * float(stats["count"]) + len(z))}

    def _solve(self, stats: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Ridge least squares ``Θ (d_z, d_y)`` and the residual covariance ``(d_y, d_y)``."""
        zz, zy, yy, count = stats["zz"], stats["zy"], stats["yy"], float(stats["count"])
        d = zz.shape[0]
        reg = self.ridge * max(np.trace(zz) / d, 1e-300)
        coef = np.linalg.solve(zz + reg * np.eye(d), zy)
        resid = yy - zy.T @ coef - coef.T @ zy + coef.T @ zz @ coef
        cov = (resid + resid.T) / 2 / max(count - d, 1.0)
        w, V = np.linalg.eigh(cov)
        return coef, (V * np.clip(w, 0.0, None)) @ V.T

    # ------------------------------------------------------------------ the protocol
    def update(self, batch: GameBatch, br: Any) -> dict[str, float]:
        """Add the batch's transitions to the regressions, refit, recompute ``V_L``."""
        p = br.problem
        n, m, k = p.state_dim, p.follower_action_dim, p.leader_action_dim
        s = np.asarray(batch.obs, dtype=np.float64).reshape(-1, n)
        a = np.asarray(batch.leader_actions, dtype=np.float64).reshape(len(s), k)
        b = np.asarray(batch.follower_actions, dtype=np.float64).reshape(len(s), m)
        s2 = np.asarray(batch.next_obs, dtype=np.float64).reshape(len(s), n)
        self._dyn = self._accumulate(self._dyn, np.concatenate([s, a, b], axis=1), s2,
                                     self.forget)
        if self.follower == "fit":
            self._fol = self._accumulate(self._fol, np.concatenate([s, a], axis=1), b,
                                         self.follower_forget)
        self._n, self._m, self._k = n, m, k
        self._gamma = float(br.gamma_leader)
        # the leader's own reward function, discount and policy
        self._target = np.asarray(p.params.target, dtype=np.float64)
        self._lam = np.asarray(p.params.sharpness, dtype=np.float64)
        self._reward = p.params.leader_reward
        self.refit(br)
        return {"critic_td_mse": self.dynamics_mse, "model_value_s0": float(
            self.leader_value(np.asarray(p.params.s0, dtype=np.float64)[None])[0])}

    def refit(self, br: Any) -> None:
        """Refit from the statistics so far at the leader's current gain (and, with
        ``follower="published"``, the follower's current published policy); no new data."""
        if self._dyn is None:
            raise RuntimeError("call update() first")
        n, m, k = self._n, self._m, self._k
        self._K, self._W = br.leader_gain, br.leader_noise
        coef, self.noise_cov = self._solve(self._dyn)
        self.A, self.C, self.B = coef[:n].T, coef[n:n + k].T, coef[n + k:].T
        stats = self._dyn
        resid = (stats["yy"] - stats["zy"].T @ coef - coef.T @ stats["zy"]
                 + coef.T @ stats["zz"] @ coef)
        self.dynamics_mse = float(max(np.trace(resid), 0.0) / max(float(stats["count"]), 1.0))
        if self.follower == "published":
            # the published policy (s, a) -> (mean, cov) is affine in (s, a): read its gains
            policy = br.policy
            zero = np.asarray(policy(np.zeros((1, n)), np.zeros((1, k)))[0]).reshape(1, m)
            ms, cov = policy(np.eye(n), np.zeros((n, k)))
            ma, _ = policy(np.zeros((k, n)), np.eye(k))
            self.K_s = -(np.asarray(ms, dtype=np.float64).reshape(n, m) - zero).T
            self.K_a = -(np.asarray(ma, dtype=np.float64).reshape(k, m) - zero).T
            self.follower_cov = np.asarray(cov, dtype=np.float64).reshape(m, m)
        else:
            fcoef, self.follower_cov = self._solve(self._fol)
            self.K_s, self.K_a = -fcoef[:n].T, -fcoef[n:].T
        G = self.C - self.B @ self.K_a
        M = self.A - self.B @ self.K_s + G @ self._K
        self._noise_b = self.B @ self.follower_cov @ self.B.T + self.noise_cov
        N = G @ self._W @ self._W.T @ G.T + self._noise_b
        T = int(np.ceil(np.log(self.tol) / np.log(self._gamma)))
        with np.errstate(all="ignore"):
            # M^t for t < T by doubling; C_t = Σ_{u<t} M^u N M^uᵀ (the law of s_t given s_0)
            Mt = np.eye(n)[None]
            power = M
            while len(Mt) < T:
                Mt = np.concatenate([Mt, power @ Mt])
                power = power @ power
            Mt = Mt[:T]
            terms = Mt @ N @ Mt.transpose(0, 2, 1)
            Ct = np.concatenate([np.zeros((1, n, n)), np.cumsum(terms, axis=0)[:-1]])
        self._Mt, self._Ct = Mt, Ct
        self._weights = self._gamma ** np.arange(T)
        self._factors: dict[Any, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._memo: list[tuple[tuple[np.ndarray, ...], np.ndarray]] = []
        self._G, self._A_cl, self.closed_loop = G, self.A - self.B @ self.K_s, M
        self._noise_ab = N
        self.fitted = True

    def _get_factors(self, start_cov: np.ndarray | None):
        self._check()
        key = None if start_cov is None else np.asarray(start_cov, np.float64).tobytes()
        factors = self._factors.get(key)
        if factors is None:  # one set per start covariance and fit (q, v given a, v)
            factors = bump_factors(self._Mt, self._Ct, self._weights, self._target, self._lam,
                                   start_cov)
            self._factors[key] = factors
        return factors

    def leader_value(self, x: np.ndarray, start_cov: np.ndarray | None = None) -> np.ndarray:
        """``V_L`` under the fitted model from ``s_0 ~ N(x, start_cov)``, shape ``(N,)``."""
        return gaussian_bump_values(self._Mt, self._Ct, self._weights,
                                    np.asarray(x, dtype=np.float64), self._target, self._lam,
                                    factors=self._get_factors(start_cov))

    def leader_value_grad(self, x: np.ndarray, start_cov: np.ndarray | None = None
                          ) -> np.ndarray:
        """``∇_x V_L(x)`` under the fitted model (start law ``N(x, start_cov)``), ``(N, n)``."""
        cat, offset, scale = self._get_factors(start_cov)
        x = np.asarray(x, dtype=np.float64)
        T, n = len(scale), self._n
        with np.errstate(all="ignore"):
            y = x @ cat - offset
            blocks = [y[:, i * T:(i + 1) * T] for i in range(n)]
            e = np.exp(-0.5 * sum(b * b for b in blocks)) * scale  # (N, T)
            grad = -sum((blocks[i] * e) @ cat[:, i * T:(i + 1) * T].T for i in range(n))
        return np.where(np.isfinite(grad), grad, 0.0)

    def v_action_grad(self, s: np.ndarray, a: np.ndarray) -> np.ndarray:
        """``∂_a E_{b~ĝ(·|s,a)} Q_L(s, a, b) = γ_L Ĝᵀ ∇V_L`` (the follower's reaction to ``a``
        included, its policy held fixed), ``(N, k)``: the pathwise partial derivative's
        integrand."""
        s = np.asarray(s, dtype=np.float64).reshape(-1, self._n)
        a = np.asarray(a, dtype=np.float64).reshape(len(s), self._k)
        mean = s @ self._A_cl.T + a @ self._G.T
        return self._gamma * self.leader_value_grad(mean, self._noise_b) @ self._G

    def response_covariance(self, s: np.ndarray, a: np.ndarray, quad: np.ndarray,
                            lin: np.ndarray) -> np.ndarray:
        """``Cov_{b~ĝ(·|s,a)}(Q_L(s, a, b), ψ_d(x_b))`` in closed form, shape ``(N, D)``.

        ``x_b = Âs + Ĉa + B̂b`` is the next state's mean and ``ψ_d(x) = xᵀ quad_d x + lin_dᵀx``
        (``quad (D, n, n)`` symmetric, ``lin (D, n)``). Each Gaussian integral of ``Q_L`` is a
        Gaussian in ``b``: the product with ``N(μ_b, Σ_b)`` is ``Z_t N(μ_b + δ_t, Σ̃_t)``, so the
        covariance is ``γ_L Σ_t c_t Z_t (E_{N(μ_b+δ_t, Σ̃_t)} ψ − E_{N(μ_b, Σ_b)} ψ)``.
        """
        cat, offset, scale = self._get_factors(self.noise_cov)
        n, m = self._n, self._m
        T = len(scale)
        s = np.asarray(s, dtype=np.float64).reshape(-1, n)
        a = np.asarray(a, dtype=np.float64).reshape(len(s), self._k)
        mu_b = -(s @ self.K_s.T + a @ self.K_a.T)                       # (N, m)
        S = self.follower_cov
        xbar = s @ self.A.T + a @ self.C.T + mu_b @ self.B.T            # (N, n)
        N = len(s)
        with np.errstate(all="ignore"):
            y = xbar @ cat - offset
            ebar = [y[:, i * T:(i + 1) * T] for i in range(n)]          # ē_t per coordinate
            F = (self.B.T @ cat).reshape(m, n, T).transpose(2, 1, 0)   # (T, n, m): Φ_t B
            FtF = F.transpose(0, 2, 1) @ F                              # (T, m, m)
            Sig = np.linalg.inv(np.linalg.inv(S)[None] + FtF)           # Σ̃_t
            Minv = np.linalg.inv(np.eye(n)[None] + F @ S @ F.transpose(0, 2, 1))
            Lc = np.linalg.cholesky((Minv + Minv.transpose(0, 2, 1)) / 2)
            quad_t = np.zeros((N, T))
            for j in range(n):  # |Lᵀē|² without cancellation (small loops over n, m)
                zj = sum(ebar[i] * Lc[:, i, j] for i in range(n))
                quad_t += zj * zj
            logdet = np.log(np.linalg.det(np.eye(m)[None] + S @ FtF))
            w = np.exp(-0.5 * quad_t - 0.5 * logdet) * scale            # c_t Z_t, (N, T)
            Fe = [sum(ebar[i] * F[:, i, b] for i in range(n)) for b in range(m)]
            delta = [-sum(Fe[c] * Sig[:, b, c] for c in range(m)) for b in range(m)]
            U = np.einsum("ib,dij,jc->dbc", self.B, quad, self.B)        # (D, m, m)
            g = np.einsum("ib,ndi->ndb", self.B, 2 * np.einsum("dij,nj->ndi", quad, xbar)
                          + lin[None])                                   # (N, D, m)
            tr = np.einsum("dbc,tcb->td", U, Sig - S[None])              # (T, D)
            out = w @ tr
            for b in range(m):
                wd = w * delta[b]
                out += g[:, :, b] * wd.sum(axis=1)[:, None]
                for c in range(m):
                    out += (wd * delta[c]).sum(axis=1)[:, None] * U[None, :, b, c]
            out *= self._gamma
        return np.where(np.isfinite(out), out, 0.0)

    def follower_gradient_quadratic(self, br: Any, tol: float = 1e-8
                                    ) -> tuple[np.ndarray, np.ndarray]:
        """Eq. 9's ``∇θQ_F`` as a quadratic function of the next state (up to a constant).

        ``∇θQ_F(s, a, b) = Σ_{j≥1} γ_F^j E[V_F(s_j, a_j) ∇θ log f(a_j|s_j) | s_1 = x_b]``; by
        Stein's lemma each term is ``E[∂_aV_F(s_j, Ks_j) s_jᵀ]`` (exact for a ``V_F`` quadratic in
        ``a``), with ``∂_aV_F(s, Ks) = Hs + h_0`` read from the follower's *published* ``V_F``
        by central differences and ``s_j ~ N(M̂^{j−1}x, ·)`` under the fitted closed loop.

        Returns:
            ``(quad (D, n, n), lin (D, n))`` with ``D = k·n`` in θ's order (``vec K``).
        """
        self._check()
        n, k = self._n, self._k
        K = self._K
        delta = 1e-2
        pts = np.concatenate([np.zeros((1, n)), np.eye(n)])              # 0, e_1 … e_n
        h = np.empty((n + 1, k))
        for j in range(k):
            e = np.zeros(k)
            e[j] = delta
            base = pts @ K.T
            h[:, j] = (br.follower_value(pts, base + e) - br.follower_value(pts, base - e)) / (
                2 * delta)
        h0, H = h[0], (h[1:] - h[0]).T                                     # (k,), (k, n)
        gf = float(br.gamma_follower)
        J = max(int(np.ceil(np.log(tol) / np.log(gf))), 1)
        Mt = self._Mt
        while len(Mt) < J:  # the follower's horizon may exceed the leader's truncation
            Mt = np.concatenate([Mt, Mt[-1] @ self.closed_loop @ Mt])
        Phi = Mt[:J]                                                        # M^{j−1}, j = 1…J
        w = gf ** np.arange(1, J + 1)
        quad = np.einsum("t,jl,tla,tib->jiab", w, H, Phi, Phi)
        quad = ((quad + quad.transpose(0, 1, 3, 2)) / 2).reshape(k * n, n, n)
        lin = np.einsum("t,j,tia->jia", w, h0, Phi).reshape(k * n, n)
        return quad, lin

    def objective(self, horizon: int, gamma: float = 1.0, s0: np.ndarray | None = None
                  ) -> float:
        """The fitted model's ``E Σ_{t<horizon} γ^t r_L(s_t)`` from ``s0`` (a diagnostic)."""
        self._check()
        x = np.asarray(s0, dtype=np.float64).reshape(1, -1)
        T = min(int(horizon), len(self._Mt))
        w = float(gamma) ** np.arange(T)
        return float(gaussian_bump_values(self._Mt[:T], self._Ct[:T], w, x, self._target,
                                          self._lam)[0])

    def q(self, s, a, b) -> np.ndarray:
        """``Q_L(s, a, b)`` under the fitted model, batches with leading dimensions ``(...)``."""
        self._check()
        s = np.asarray(s, dtype=np.float64)
        lead = s.shape[:-1]
        s2 = s.reshape(-1, s.shape[-1])
        a2 = np.asarray(a, dtype=np.float64).reshape(len(s2), -1)
        b2 = np.asarray(b, dtype=np.float64).reshape(len(s2), -1)
        for inputs, q in self._memo:  # the family asks twice for the batch's Q_L
            if all(np.array_equal(x, y) for x, y in zip(inputs, (s2, a2, b2))):
                return q.reshape(lead).copy()
        nxt = s2 @ self.A.T + b2 @ self.B.T + a2 @ self.C.T
        q = self._reward(s2) + self._gamma * self.leader_value(nxt, self.noise_cov)
        self._memo = [((s2.copy(), a2.copy(), b2.copy()), q)] + self._memo[:1]
        return q.reshape(lead).copy()

    def v(self, s, br: Any, leader_actions=None) -> np.ndarray:
        """``E_{b~ĝ(·|s,a)} Q_L(s, a, b)`` given ``a``, else ``E_{a~f, b~ĝ} Q_L(s, a, b)``."""
        self._check()
        return expected_action_value(self, s, leader_actions, self._reward)

    def _check(self) -> None:
        if not self.fitted:
            raise RuntimeError("call update() first")

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The regressions' sufficient statistics (the fit is recomputed from them)."""
        def copy(stats):
            return None if stats is None else {k: np.array(v) for k, v in stats.items()}

        return {"dynamics": copy(self._dyn), "follower": copy(self._fol)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` (the next :meth:`update` refits)."""
        def copy(stats):
            return None if not stats else {k: np.array(v, dtype=np.float64)
                                          for k, v in stats.items()}

        self._dyn, self._fol = copy(state.get("dynamics")), copy(state.get("follower"))
        self.fitted = False
