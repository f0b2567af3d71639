"""BC-HG and NAIVE-PGD on continuous configurable MDPs, with exact variance reduction (§5.2).

The estimators of Theorem 1 (eqs. 5-6) contain score terms ``V(s') ∇θ log p^θ(s'|s, b)``. In
building thermal control the transition noise is tiny (σ = 0.02) while ``V`` is large (≈ −250),
so the plain likelihood-ratio terms have standard deviations in the 10^3-10^5 for a batch of
10^4 transitions, against a hypergradient of norm ≈ 30 (measured in
``benchmarks/bench_building.py``). The authors tame this by clipping every per-sample
``∇log p`` to norm 1 (a biased fix). Here three *unbiased* devices do it; each keeps the
expectation of the estimator unchanged:

1. **Score baseline** (partial term, Alg. 4). ``E[c(s, b) ∇log p(s'|s, b) | s, b] = 0`` for any
   ``c``, so ``V_L(s')`` is replaced by ``V_L(s') − (Q_L(s, b) − r_L(s, b)) / γ_L``, the critic's
   own prediction of ``E[V_L(s') | s, b]`` (a TD residual).
2. **Rao-Blackwellisation** (guiding term, Alg. 6). Each ``γ_F V_F(s'_j) ∇log p(s'_j|s_j, b_j)``
   is replaced by its conditional expectation over ``s'_j`` given ``(s_j, b_j)``, computed exactly
   with the problem's sigma points (``problem.next_state_sigma_points``: exact for quadratic
   ``V_F`` and Gaussian ``p``). Without sigma points the follower's ``Q_F`` is used as a
   baseline instead (``V_F(s') − (Q_F(s, b) − r_F(s, b)) / γ_F``, as in 1).
3. **State baseline** (guiding term). Because ``E_{b~g}[B_L(s, b)] = 0``,
   ``E[B_L(s, b) f(s)] = 0`` for every ``f``: the guiding sum ``Σ_t w_t ∇̂Q_F(s_t, b_t)`` may use
   ``∇̂Q_F(s_t, b_t) − f(s_t)``. With ``f`` the least-squares fit of ``∇̂Q_F`` on quadratic
   features of ``s`` (i.e. an estimate of ``∇V_F(s)``) this is the same as replacing the weights
   ``w`` by their residual after projection on the features, which the coefficient form of
   :mod:`bilevel_agents.estimators` expresses directly. The fit is *cross-fitted* (weights of
   one half of the episodes are projected with the other half's features) so no bias enters.

With the exact critic, devices 2 + 3 bring the guiding term's standard deviation per batch of
10^4 transitions from ≈ 10^3 to ≈ 10 (on a signal of ≈ 20); see the benchmark.

Also: per-group gradient clipping (the authors clip the insulation and the airflow halves of θ
separately, facts §3.2) and projection of θ onto ``config_space`` after each step.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bilevel_agents.base import clip_by_global_norm
from bilevel_agents.bchg import BCHG
from bilevel_agents.configurable import ConfigurableLeader
from bilevel_agents.estimators import (
    Coefficients,
    discounted_forward_sum,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_td,
    surrogate_gradient,
)
from bilevel_agents.naive_pgd import NaivePGD
from bilevel_envs.core import Batch

__all__ = [
    "ContinuousBCHG",
    "ContinuousHPGD",
    "ContinuousLeaderMixin",
    "ContinuousNaivePGD",
    "crossfit_residual",
    "quadratic_features",
]


def quadratic_features(states: np.ndarray) -> np.ndarray:
    """``[1, s_i, s_i s_j (i ≤ j)]`` for each row: ``(N, 1 + n + n(n+1)/2)``."""
    s = np.asarray(states, dtype=np.float64).reshape(len(states), -1)
    iu = np.triu_indices(s.shape[1])
    return np.concatenate([np.ones((len(s), 1)), s, (s[:, :, None] * s[:, None, :])[:, *iu]], 1)


def crossfit_residual(weights: np.ndarray, features: np.ndarray,
                      folds: np.ndarray) -> np.ndarray:
    """Weights minus their cross-fitted projection on ``features`` (device 3 above).

    For two folds ``a, b``: ``u_b = w_b − Φ_b (Φ_bᵀΦ_b)⁺ Φ_aᵀ w_a``, so that
    ``Σ_j u_j M_j = Σ_j w_j M_j − Σ_{t∈a} w_t f_b(s_t) − Σ_{t∈b} w_t f_a(s_t)`` with ``f_k`` the
    least-squares fit of ``M`` on ``Φ`` over fold ``k``: a baseline independent of the fold it
    is applied to.

    Args:
        weights: ``(N,)`` per-transition weights ``w``.
        features: ``(N, F)`` features of the states.
        folds: ``(N,)`` bool, fold membership (True = fold b).
    """
    w = np.asarray(weights, dtype=np.float64)
    u = w.copy()
    for apply, fit in ((folds, ~folds), (~folds, folds)):
        phi_fit, phi_apply = features[fit], features[apply]
        if phi_fit.shape[0] == 0 or phi_apply.shape[0] == 0:
            continue
        gram = phi_fit.T @ phi_fit
        # coefficient on fold `fit` rows of the baseline applied to fold `apply` weights
        u[fit] -= phi_fit @ np.linalg.lstsq(gram, phi_apply.T @ w[apply], rcond=None)[0]
    return u


def _log_p_gradient(problem: Any, theta: np.ndarray, states: np.ndarray, actions: np.ndarray,
                    next_states: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """``∇θ Σ_k coef_k log p^θ(s'_k | s_k, b_k)`` by one autograd pass."""
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    log_p = problem.log_transition_torch(th, states, actions, next_states)
    (grad,) = torch.autograd.grad((torch.from_numpy(coef) * log_p).sum(), th)
    return grad.numpy()


class ContinuousLeaderMixin:
    """Options shared by the continuous leaders (mixed into a :class:`ConfigurableLeader`).

    Args:
        critic: a Critic, or ``None``/``"mlp"`` for :class:`~bilevel_agents.mlp_critic.MLPCritic`
            with ``critic_kwargs``.
        critic_kwargs: options of the default MLP critic (passed on to ConfigurableLeader).
        score_baseline: device 1 (partial term).
        clip_groups: sizes of consecutive parameter groups clipped separately to
            ``max_grad_norm`` (e.g. ``(4, 4)`` for insulation / airflow); ``None`` = global clip.
        **kwargs: :class:`ConfigurableLeader` arguments (batch_size, n_envs, lr, seed, ...).
    """

    def __init__(self, br: Any, *, critic: Any = None, score_baseline: bool = True,
                 clip_groups: tuple[int, ...] | None = None, **kwargs: Any):
        self.score_baseline = bool(score_baseline)
        size = int(np.prod(br.config_space.shape))
        if clip_groups is not None and (sum(clip_groups) != size or min(clip_groups) < 1):
            raise ValueError(f"clip_groups must be positive sizes summing to {size}, "
                             f"got {clip_groups!r}")
        self.clip_groups = None if clip_groups is None else tuple(int(g) for g in clip_groups)
        super().__init__(br, critic=critic if critic is not None else "mlp", **kwargs)

    def _make_critic(self, critic: Any) -> Any:
        if critic != "mlp":
            return super()._make_critic(critic)
        from bilevel_agents.mlp_critic import MLPCritic

        obs_dim = int(np.prod(self.br.observation_space.shape))
        act_dim = int(np.prod(self.br.action_space.shape))
        kw = {"seed": int(self.rng.integers(2**31)), **self.critic_kwargs}
        return MLPCritic(obs_dim, act_dim, gamma=self.br.problem.gamma_leader, **kw)

    def partial_coefficients(self, batch: Batch) -> Coefficients:
        """Alg. 4 with the score baseline (device 1)."""
        gamma = self.problem.gamma_leader
        next_v = self.critic.v(batch.next_obs, self.br)
        if self.score_baseline:
            expected = (self.critic.q(batch.obs, batch.actions) - batch.r_leader) / gamma
            next_v = next_v - expected
        return partial_derivative_td(batch, next_v, gamma, self.normaliser(batch))

    def update(self) -> dict[str, float]:
        """Estimate, clip (per group if asked), ascend, project onto ``config_space``."""
        grad = np.asarray(self.estimate_gradient(), dtype=np.float64)
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"non-finite gradient estimate at iteration {self.iteration}")
        if self.clip_groups is None:
            step = clip_by_global_norm(grad, self.max_grad_norm)
        else:
            parts = np.split(grad.ravel(), np.cumsum(self.clip_groups)[:-1])
            step = np.concatenate([clip_by_global_norm(p, self.max_grad_norm) for p in parts])
            step = step.reshape(grad.shape)
        if self.optimizer == "adam":
            step = self._adam_direction(step)
        space = self.br.config_space
        self.br.set_config(np.clip(self.theta + self.current_lr * step, space.low, space.high))
        self.iteration += 1
        return {"grad_norm": float(np.linalg.norm(grad)), **self.last_metrics}

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "score_baseline": self.score_baseline,
                "clip_groups": self.clip_groups}


class ContinuousNaivePGD(ContinuousLeaderMixin, NaivePGD):
    """NAIVE-PGD (partial term only, Alg. 4) with an MLP critic for ``V_L``."""

    name = "naive_pgd_continuous"


class ContinuousBCHG(ContinuousLeaderMixin, BCHG):
    """BC-HG (Alg. 1 with Alg. 3, 4, 6) for continuous configurable MDPs, variance-reduced.

    Args:
        rao_blackwell: device 2 (needs ``problem.next_state_sigma_points``; otherwise the
            follower-``Q_F`` baseline is used).
        state_baseline: device 3; ``features`` maps states to baseline features (default
            :func:`quadratic_features`).
        **kwargs: :class:`ContinuousLeaderMixin` / :class:`ConfigurableLeader` arguments.

    Example:
        >>> from bilevel_envs.envs.building_thermal import BuildingThermalEnv
        >>> from bilevel_envs.wrappers import BestResponse
        >>> br = BestResponse(BuildingThermalEnv(), beta=0.1)
        >>> leader = ContinuousBCHG(br, batch_size=1000, n_envs=10, lr=0.1, seed=0,
        ...                         critic_kwargs={"first_steps": 10})
        >>> leader.estimate_gradient().shape
        (8,)
    """

    name = "bchg_continuous"

    def __init__(self, br: Any, *, rao_blackwell: bool = True, state_baseline: bool = True,
                 features: Any = quadratic_features, **kwargs: Any):
        self.rao_blackwell = bool(rao_blackwell)
        self.state_baseline = bool(state_baseline)
        self.features = features
        super().__init__(br, **kwargs)
        if self.rao_blackwell and not hasattr(br.problem, "next_state_sigma_points"):
            raise ValueError("rao_blackwell=True needs problem.next_state_sigma_points; "
                             "pass rao_blackwell=False")

    def guiding_factor(self, batch: Batch) -> np.ndarray:
        """The leader factor of the guiding term: the Benefit ``B_L(s_t, b_t)`` (Alg. 1 l. 11)."""
        return self.benefit(batch)

    def _guiding_weights(self, batch: Batch) -> np.ndarray:
        w = guiding_weights(batch, self.guiding_factor(batch), self.br.beta,
                            self.problem.gamma_leader, self.normaliser(batch))
        if self.state_baseline:
            episode = np.cumsum(np.r_[True, batch.episode_end[:-1]]) - 1
            w = crossfit_residual(w, self.features(batch.obs), episode % 2 == 1)
        return w

    def guiding_coefficients(self, batch: Batch) -> Coefficients:
        """Eq. 5's third term via Alg. 6 when not Rao-Blackwellised (device 1 on ``V_F``)."""
        gamma = self.problem.gamma_follower
        next_v = self.soft_v(batch.next_obs)
        if self.score_baseline:
            q_f = np.asarray(self.br.soft_q(batch.obs, batch.actions))
            next_v = next_v - (q_f - batch.r_follower) / gamma
        keys, n_keys = self.keys(batch)
        return follower_q_grad_coefficients(batch, self._guiding_weights(batch), keys, n_keys,
                                            gamma, next_v)

    def gradient_from_batch(self, batch: Batch) -> np.ndarray:
        if not self.rao_blackwell:
            return super().gradient_from_batch(batch)
        metrics: dict[str, float] = {"episodes": float(batch.n_finished_episodes)}
        metrics.update(self.critic.update(batch, self.br))
        problem, theta = self.problem, self.theta
        grad = surrogate_gradient(problem, theta, batch, self.partial_coefficients(batch))
        # guiding term: c_j = Σ_{t ≤ j} γ_F^{j−t} w_t, times γ_F E[V_F(s') ∇log p(s'|s_j, b_j)]
        gamma = problem.gamma_follower
        c = discounted_forward_sum(self._guiding_weights(batch), gamma, batch.episode_end)
        c = np.where(batch.terminated, 0.0, c)
        pts, wts = problem.next_state_sigma_points(batch.obs, batch.actions)
        n, k, d = pts.shape
        v_f = np.asarray(self.br.soft_v(pts.reshape(n * k, d))).reshape(n, k)
        coef = (gamma * c[:, None] * wts[None, :] * v_f).ravel()
        grad = grad + _log_p_gradient(problem, theta, np.repeat(batch.obs, k, axis=0),
                                      np.repeat(batch.actions, k, axis=0),
                                      pts.reshape(n * k, d), coef)
        self.last_metrics = metrics
        return grad

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "rao_blackwell": self.rao_blackwell,
                "state_baseline": self.state_baseline}


class ContinuousHPGD(ContinuousBCHG):
    """HPGD (Thoma et al. 2024) on continuous problems, paper App. C.1 eq. (37).

    ``Γ̂ = (1/(βN)) Σ_τ Σ_t γ_L^t Q̂_L(s_t, b_t) [∇̂Q_F(s_t, b_t) − ∇̂V_F(s_t)]`` with
    ``leader_value="td"`` (HPGD (TD): ``Q̂_L`` from the MLP critic) or ``"mc"`` (HPGD (MC): the
    discounted leader return-to-go of the episode, as in the authors' code, not a Benefit).

    ``∇̂Q_F`` is the Monte Carlo suffix of Alg. 6 (Rao-Blackwellised as in BC-HG) and
    ``∇̂V_F(s)`` is the least-squares fit of those suffixes on quadratic features of ``s``
    (cross-fitted), i.e. the projection device of :class:`ContinuousBCHG` applied to ``Q_L``
    weights. Differences from the authors (facts §3.2): their ``∇̂V_F`` is an 8-output MLP
    trained by TD for 5000 steps; for an LQR follower ``∇θ V_F(s) = −sᵀ(∂P)s − ∂v`` is exactly
    quadratic in ``s``, so the linear fit is consistent where the MLP is not. HPGD (MC) here
    keeps the critic's ``V_L`` in the partial term (theirs: a separate ``V_L(s)`` network).
    """

    name = "hpgd_continuous"

    def __init__(self, br: Any, *, leader_value: str = "td", **kwargs: Any):
        if leader_value not in ("td", "mc"):
            raise ValueError(f"leader_value must be 'td' or 'mc', got {leader_value!r}")
        if "state_baseline" in kwargs:
            raise ValueError("state_baseline is HPGD's ∇V_F term and is always on")
        self.leader_value = leader_value
        super().__init__(br, state_baseline=True, **kwargs)

    def guiding_factor(self, batch: Batch) -> np.ndarray:
        if self.leader_value == "td":
            return self.critic.q(batch.obs, batch.actions)
        from bilevel_agents.estimators import discounted_reverse_sum

        return discounted_reverse_sum(batch.r_leader, self.problem.gamma_leader,
                                      batch.episode_end)

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "leader_value": self.leader_value}
