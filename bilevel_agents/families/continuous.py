"""Continuous configurable MDPs (building thermal control), with exact variance reduction (§5.2).

The estimators of Theorem 1 (eqs. 5-6) contain score terms ``V(s') ∇θ log p^θ(s'|s, b)``. In
building thermal control the transition noise is tiny (σ = 0.02) while ``V`` is large (≈ −250),
so the plain likelihood-ratio terms have standard deviations in the 10^3-10^5 for a batch of
10^4 transitions, against a hypergradient of norm ≈ 30 (measured in
``benchmarks/bench_building.py``). The authors tame this by clipping every per-sample
``∇log p`` to norm 1 (a biased fix). Here three *unbiased* devices do it; each keeps the
expectation of the estimator unchanged:

1. **Score baseline** (partial term, Alg. 4; ``score_baseline``). ``E[c(s, b) ∇log p(s'|s, b) |
   s, b] = 0`` for any ``c``, so ``V_L(s')`` is replaced by ``V_L(s') − (Q_L(s, b) − r_L(s, b)) /
   γ_L``, the critic's own prediction of ``E[V_L(s') | s, b]`` (a TD residual).
2. **Rao-Blackwellisation** (follower response, Alg. 6; ``rao_blackwell``). Each
   ``γ_F V_F(s'_j) ∇log p(s'_j|s_j, b_j)`` is replaced by its conditional expectation over
   ``s'_j`` given ``(s_j, b_j)``, computed exactly with the problem's sigma points
   (``problem.next_state_sigma_points``: exact for quadratic ``V_F`` and Gaussian ``p``).
   Without sigma points the follower's ``Q_F`` is used as a baseline instead
   (``V_F(s') − (Q_F(s, b) − r_F(s, b)) / γ_F``, as in 1).
3. **State baseline** (follower response; ``state_baseline``). Because ``E_{b~g}[B_L(s, b)] =
   0``, the guiding sum ``Σ_t w_t ∇̂Q_F(s_t, b_t)`` may use ``∇̂Q_F(s_t, b_t) − f(s_t)``; with
   ``f`` the cross-fitted least-squares fit of ``∇̂Q_F`` on quadratic features of ``s`` (an
   estimate of ``∇V_F(s)``, :func:`~bilevel_agents.estimators.theorem1.crossfit_residual`). This
   is also exactly HPGD's ``∇̂Q_F − ∇̂V_F`` form on continuous states, so the advantage form
   always uses it.

With the exact critic, devices 2 + 3 bring the guiding term's standard deviation per batch of
10^4 transitions from ≈ 10^3 to ≈ 10 (on a signal of ≈ 20); see the benchmark.

**Followers that publish nothing** (an SB3 SAC follower, say): ``V_L = E_{b~g} Q_L`` is taken
over the follower's own sampled actions, and ``V_F`` (devices 1–2 need it) is the leader's own
LSTD estimate on quadratic features from the follower's observed rewards
(:class:`~bilevel_agents.critics.follower.QuadraticFollowerValue`): exact in function class for
an LQR-like follower, up to a constant the ``∇log p`` terms do not see. The estimate is then
consistent only as far as that critic is.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, NamedTuple

import numpy as np

from bilevel_agents.critics.follower import QuadraticFollowerValue
from bilevel_agents.critics.mlp import MLPCritic
from bilevel_agents.critics.oracle import exact_critic
from bilevel_agents.estimators.returns import discounted_forward_sum
from bilevel_agents.estimators.theorem1 import (
    Coefficients,
    SurrogateTerm,
    crossfit_residual,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_td,
    quadratic_features,
)
from bilevel_agents.families.configurable import ConfigurableFamily, ConfigurableOptions
from bilevel_envs.core import Batch, ConfigurableEnv
from bilevel_envs.followers.base import published

__all__ = ["ContinuousFamily", "ContinuousOptions"]


@dataclasses.dataclass(frozen=True)
class ContinuousOptions(ConfigurableOptions):
    """Sampling options of continuous configurable MDPs (and :class:`ConfigurableOptions`).

    Attributes:
        score_baseline: device 1 (module docstring).
        rao_blackwell: device 2; ``None`` = on if the problem has
            ``next_state_sigma_points``.
        state_baseline: device 3 for BC-HG (HPGD's form always uses it).
        features: maps states to the state baseline's features (default quadratic).
    """

    score_baseline: bool = True
    rao_blackwell: bool | None = None
    state_baseline: bool = True
    features: Callable[[np.ndarray], np.ndarray] = quadratic_features


class _SigmaTransitions(NamedTuple):
    """Sigma points of ``p(·|s_j, b_j)`` laid out as transitions (for the surrogate)."""

    obs: np.ndarray
    actions: np.ndarray
    next_obs: np.ndarray


def _has_sigma_points(problem: Any) -> bool:
    return type(problem).next_state_sigma_points is not ConfigurableEnv.next_state_sigma_points


class ContinuousFamily(ConfigurableFamily):
    """Continuous configurable MDPs (:class:`~bilevel_envs.core.ConfigurableEnv`)."""

    label = "continuous configurable MDPs"
    Options = ContinuousOptions
    #: the paper's protocol (App. C.5): 10^4 transitions = 100 episodes × 100 steps
    defaults = {"batch_size": 10_000, "n_envs": 100}

    @classmethod
    def default_options(cls, br: Any, samples: bool) -> dict[str, Any]:
        """Also clips the problem's parameter groups separately (``config_groups``, e.g.
        insulation and airflow in building control), as the authors do."""
        out = super().default_options(br, samples)
        if samples and br.problem.config_groups is not None:
            out["clip_groups"] = tuple(br.problem.config_groups)
        return out

    def __init__(self, br: Any, **options: Any):
        super().__init__(br, **options)
        rb = self.options.rao_blackwell
        if rb is None:
            rb = _has_sigma_points(br.problem)
        elif rb and not _has_sigma_points(br.problem):
            raise ValueError("rao_blackwell=True needs problem.next_state_sigma_points; pass "
                             "rao_blackwell=False")
        self.rao_blackwell = bool(rb)
        # a follower that publishes no values: the leader learns V_F itself (critics.follower)
        self.follower_value = (None if published(br.follower, "soft_v") is not None
                               else QuadraticFollowerValue(gamma=br.problem.gamma_follower))

    def hparams(self) -> dict[str, Any]:
        """Sampling options (with ``rao_blackwell`` resolved)."""
        return {**super().hparams(), "rao_blackwell": self.rao_blackwell}

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """``"td"``/``"mlp"``: :class:`~bilevel_agents.critics.mlp.MLPCritic` seeded from the
        leader's generator; ``"exact"``: the exact critic."""
        if kind is None or not isinstance(kind, str):
            return kind
        if kind in ("td", "mlp"):
            obs_dim = int(np.prod(self.br.observation_space.shape))
            act_dim = int(np.prod(self.br.action_space.shape))
            kw = {"seed": int(leader.rng.integers(2**31)), **critic_kwargs}
            if published(self.br.follower, "policy") is None:
                # V_L = E_{b~g} Q_L by the follower's own actions when g is not published
                kw.setdefault("v_method", "samples")
            return MLPCritic(obs_dim, act_dim, gamma=self.problem.gamma_leader, **kw)
        if kind == "exact":
            return exact_critic(self.br, **critic_kwargs)
        raise ValueError(f"critic must be a Critic or one of ['exact', 'mlp', 'td'] on "
                         f"{self.label}, got {kind!r}")

    def learn(self, leader: Any, batch: Batch) -> dict[str, float]:
        """Fit the leader's own ``V_F`` estimate when the follower publishes none."""
        if self.follower_value is None:
            return {}
        return self.follower_value.update(batch, self.br)

    def soft_v(self, states: np.ndarray) -> np.ndarray:
        """``V_F(s)``: published by the follower, or the leader's own estimate (up to a
        constant, which the ``∇log p`` terms do not see)."""
        if self.follower_value is not None:
            return self.follower_value.v(states)
        return np.asarray(self.br.soft_v(states))

    def _soft_q(self, batch: Batch) -> np.ndarray:
        """``Q_F(s_k, b_k)``: published, or ``r_F + γ_F E[V̂_F(s')]`` over the sigma points."""
        if self.follower_value is None:
            return np.asarray(self.br.soft_q(batch.obs, batch.actions))
        pts, wts = self.problem.next_state_sigma_points(batch.obs, batch.actions)
        n, k, d = pts.shape
        ev = (self.follower_value.v(pts.reshape(n * k, d)).reshape(n, k) * wts[None]).sum(1)
        return batch.r_follower + self.problem.gamma_follower * np.where(batch.terminated, 0.0,
                                                                         ev)

    def partial_term(self, leader: Any, batch: Batch) -> SurrogateTerm:
        """Alg. 4 with the score baseline (device 1)."""
        gamma = self.problem.gamma_leader
        critic = leader.critic
        next_v = critic.v(batch.next_obs, self.br)
        if self.options.score_baseline:
            expected = (critic.q(batch.obs, batch.actions) - batch.r_leader) / gamma
            next_v = next_v - expected
        return SurrogateTerm.on(batch, partial_derivative_td(batch, next_v, gamma,
                                                             self.normaliser(batch)))

    def response_term(self, leader: Any, batch: Batch, stats: Batch, factor: np.ndarray,
                      advantage: bool) -> SurrogateTerm:
        """Alg. 6 with devices 2 and 3 (module docstring)."""
        if stats is not batch:
            raise ValueError(f"follower statistics from another batch need a tabular problem "
                             f"(every-visit averages), not {self.label}")
        problem, opt = self.problem, self.options
        gamma = problem.gamma_follower
        w = guiding_weights(batch, factor, self.br.beta, problem.gamma_leader,
                            self.normaliser(batch))
        if advantage or opt.state_baseline:
            episode = np.cumsum(np.r_[True, batch.episode_end[:-1]]) - 1
            w = crossfit_residual(w, opt.features(batch.obs), episode % 2 == 1)
        if not self.rao_blackwell:
            next_v = self.soft_v(batch.next_obs)
            if opt.score_baseline and (self.follower_value is None
                                       or _has_sigma_points(problem)):
                next_v = next_v - (self._soft_q(batch) - batch.r_follower) / gamma
            keys, n_keys = self.keys(batch)
            return SurrogateTerm.on(batch, follower_q_grad_coefficients(batch, w, keys, n_keys,
                                                                        gamma, next_v))
        # c_j = Σ_{t ≤ j} γ_F^{j−t} w_t multiplies ∇r_F(s_j, b_j) and, Rao-Blackwellised,
        # γ_F E[V_F(s') ∇log p(s'|s_j, b_j)] over the sigma points of p(·|s_j, b_j)
        c = discounted_forward_sum(w, gamma, batch.episode_end)
        c_next = np.where(batch.terminated, 0.0, c)
        pts, wts = problem.next_state_sigma_points(batch.obs, batch.actions)
        n, k, d = pts.shape
        v_f = self.soft_v(pts.reshape(n * k, d)).reshape(n, k)
        coef = (gamma * c_next[:, None] * wts[None, :] * v_f).ravel()
        sigma = _SigmaTransitions(np.repeat(batch.obs, k, axis=0),
                                  np.repeat(batch.actions, k, axis=0), pts.reshape(n * k, d))
        zeros = np.zeros_like(coef)
        rewards = Coefficients(c, np.zeros_like(c), np.zeros_like(c))
        return SurrogateTerm.on(batch, rewards) + SurrogateTerm.on(
            sigma, Coefficients(zeros, zeros, coef))
