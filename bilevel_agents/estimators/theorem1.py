"""Theorem 1 (the hypergradient of a configurable MDP) as pure numpy functions.

Paper eq. 5, with the follower's value gradient of eq. 6::

    ∇θ J_L = E Σ_t γ_L^t [ ∇r_L(s_t, b_t) + V_L(s_{t+1}) ∇log p(s_{t+1}|s_t, b_t)
                           + B_L(s_t, b_t) / β · ∇Q_F(s_t, b_t) ],
    ∇Q_F(s, b) = E Σ_k γ_F^k [ ∇r_F(s_k, b_k) + γ_F V_F(s_{k+1}) ∇log p(s_{k+1}|s_k, b_k) ],

with the Benefit ``B_L(s, b) = Q_L(s, b) − E_{b'~g} Q_L(s, b')``. The first two terms are the
partial derivative ``∂θ J_L`` (what NAIVE-PGD estimates), the third the follower's response.

**Coefficient form.** Every estimate here is *linear* in the per-transition gradients
``∇θ r_F``, ``∇θ r_L`` and ``∇θ log p``. So instead of building ``|θ|``-dimensional vectors per
transition, each estimator returns per-transition :class:`Coefficients` ``c_F, c_L, c_p`` and
the estimate is the gradient of one scalar surrogate, taken by a single autograd pass
(:func:`surrogate_gradient`)::

    ĝ = ∇θ Σ_k [ c_F[k] r_F^θ(s_k, b_k) + c_L[k] r_L^θ(s_k, b_k) + c_p[k] log p^θ(s'_k | s_k, b_k) ]

This is exact algebra, not an approximation (tests compare it with the per-transition vector
form), and costs one backward pass whatever the batch size or ``|θ|``. A
:class:`SurrogateTerm` collects coefficients on one or several batches (an oracle's, sigma
points) so that the pieces of an estimate add up like the terms of eq. 5.

Conventions (:class:`bilevel_envs.core.Batch`): arrays are env-major, ``episode_end[k]`` means
transition ``k+1`` starts a new episode, ``time[k]`` is the within-episode step ``t``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch

from bilevel_agents.estimators.returns import discounted_forward_sum
from bilevel_envs.core import Batch, TabularConfigurableEnv

__all__ = [
    "Coefficients",
    "SurrogateTerm",
    "benefit",
    "crossfit_residual",
    "every_visit_mean",
    "every_visit_spread",
    "follower_advantage_grad_coefficients",
    "follower_q_grad_coefficients",
    "guiding_weights",
    "partial_derivative_mc",
    "partial_derivative_td",
    "quadratic_features",
    "surrogate_gradient",
    "theorem1_coefficients",
]


class Coefficients(NamedTuple):
    """Per-transition coefficients of ``r_F``, ``r_L`` and ``log p`` in the surrogate."""

    follower_reward: np.ndarray
    leader_reward: np.ndarray
    log_transition: np.ndarray

    def __add__(self, other: "Coefficients") -> "Coefficients":  # type: ignore[override]
        return Coefficients(*(a + b for a, b in zip(self, other)))

    @staticmethod
    def zeros(n: int) -> "Coefficients":
        """All-zero coefficients for ``n`` transitions."""
        return Coefficients(np.zeros(n), np.zeros(n), np.zeros(n))


# ---------------------------------------------------------------------- surrogate
def surrogate_gradient(problem: Any, theta: np.ndarray, batch: Any, coef: Coefficients,
                       extra_follower_table: np.ndarray | None = None,
                       score_clip: float | None = None) -> np.ndarray:
    """``∇θ Σ_k [c_F r_F + c_L r_L + c_p log p]`` by one autograd pass.

    Tabular problems aggregate the coefficients into ``(S, B)`` tables first (one bincount)
    and call the problem's vector-Jacobian product (closed form where the problem has one).
    ``extra_follower_table`` adds ``Σ_{s,b} X(s,b) r_F(s,b)`` (SoBiRL's expectation term).

    Args:
        problem: the unwrapped configurable MDP.
        theta: θ at which the terms are differentiated; on tabular problems also a stack
            ``(N, d)`` of N runs' θ, with ``batch`` their batches one after the other and states
            numbered ``run·S + s`` (the result is then ``(N, d)``, row n the run's gradient).
        batch: anything with ``obs``, ``actions``, ``next_obs`` (a :class:`Batch`).
        coef: the coefficients, one per transition of ``batch``.
        extra_follower_table: optional ``(S, B)`` table (tabular problems).
        score_clip: clip each transition's score ``∇θ log p^θ(s'_k | s_k, b_k)`` to
            ``[−score_clip, score_clip]`` coordinate-wise before weighting it (HPGD's tax-design
            estimator); ``None`` (default) keeps the one-pass surrogate, which is exact.
            Clipping needs the per-transition Jacobian (``|θ|`` forward passes) and a single
            run's θ.
    """
    if isinstance(problem, TabularConfigurableEnv):
        S, B = problem.n_states, problem.n_actions
        # N runs at once: θ is (N, d) and states are numbered run·S + s (keys never mix runs)
        shape = (S, B) if np.ndim(theta) == 1 else (np.shape(theta)[0], S, B)
        key = batch.obs * B + batch.actions
        c_f, c_l = (np.bincount(key, weights=c, minlength=int(np.prod(shape))).reshape(shape)
                    for c in coef[:2])
        if extra_follower_table is not None:
            c_f = c_f + np.reshape(extra_follower_table, shape)
        grad = problem.tabular_rewards_vjp(theta, c_f, c_l)
        if problem.config_dependent_dynamics and np.any(coef.log_transition):
            grad = grad + _score_gradient(problem, theta, batch.obs, batch.actions,
                                          batch.next_obs, coef.log_transition, score_clip)
        return grad
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    s = torch.as_tensor(batch.obs)
    b = torch.as_tensor(batch.actions)
    total = None
    terms = ((coef.follower_reward, problem.follower_reward_torch),
             (coef.leader_reward, problem.leader_reward_torch))
    for c, fn in terms:
        if np.any(c):  # an all-zero term contributes exactly nothing
            part = (torch.from_numpy(c) * fn(th, s, b)).sum()
            total = part if total is None else total + part
    score = None
    if np.any(coef.log_transition):
        if score_clip is None:
            log_p = problem.log_transition_torch(th, s, b, torch.as_tensor(batch.next_obs))
            if log_p is not None:
                part = (torch.from_numpy(coef.log_transition) * log_p).sum()
                total = part if total is None else total + part
        else:
            score = _score_gradient(problem, theta, s, b, torch.as_tensor(batch.next_obs),
                                    coef.log_transition, score_clip)
    grad = np.zeros_like(theta, dtype=np.float64)
    if total is not None and total.requires_grad:  # else nothing depends on θ
        grad = torch.autograd.grad(total, th)[0].numpy()
    return grad if score is None else grad + score


def _score_gradient(problem: Any, theta: np.ndarray, states: Any, actions: Any,
                    next_states: Any, c_p: np.ndarray, score_clip: float | None) -> np.ndarray:
    """``Σ_k c_p[k] ∇θ log p^θ(s'_k | s_k, b_k)``, each score clipped to ``±score_clip``."""
    if score_clip is not None and np.ndim(theta) != 1:
        raise ValueError(f"score_clip needs a single run's θ (a vector), got shape "
                         f"{np.shape(theta)}")
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=score_clip is None)
    if score_clip is None:
        log_p = problem.log_transition_torch(th, states, actions, next_states)
        if log_p is None:
            return np.zeros_like(theta, dtype=np.float64)
        total = (torch.from_numpy(c_p) * log_p).sum()
        return torch.autograd.grad(total, th)[0].numpy()
    flat = th.reshape(-1)
    if problem.log_transition_torch(th, states, actions, next_states) is None:
        return np.zeros_like(theta, dtype=np.float64)

    def log_p(x: torch.Tensor) -> torch.Tensor:
        return problem.log_transition_torch(x.reshape(th.shape), states, actions, next_states)

    # the per-transition Jacobian (n, |θ|): one forward-mode pass per coordinate of θ
    jac = torch.autograd.functional.jacobian(log_p, flat, vectorize=True,
                                             strategy="forward-mode")
    scores = np.clip(jac.detach().numpy().reshape(len(c_p), -1), -score_clip, score_clip)
    return (c_p @ scores).reshape(np.shape(theta))


@dataclass(frozen=True)
class SurrogateTerm:
    """A sum of surrogate coefficients on one or several batches; terms add like eq. 5's.

    ``parts`` pairs each batch with its coefficients; adding two terms adds the coefficients
    of the same batch (by identity) and keeps other batches as separate parts, so the whole
    estimate costs one autograd pass per distinct batch.
    """

    parts: tuple[tuple[Any, Coefficients], ...]
    follower_table: np.ndarray | None = None

    @staticmethod
    def on(batch: Any, coef: Coefficients,
           follower_table: np.ndarray | None = None) -> "SurrogateTerm":
        """The term ``Σ_k coef_k · (r_F, r_L, log p)(k)`` on ``batch``."""
        return SurrogateTerm(((batch, coef),), follower_table)

    def __add__(self, other: "SurrogateTerm") -> "SurrogateTerm":
        parts = list(self.parts)
        for batch, coef in other.parts:
            for i, (mine, c) in enumerate(parts):
                if mine is batch:
                    parts[i] = (mine, c + coef)
                    break
            else:
                parts.append((batch, coef))
        tables = [t for t in (self.follower_table, other.follower_table) if t is not None]
        table = None if not tables else tables[0] if len(tables) == 1 else tables[0] + tables[1]
        return SurrogateTerm(tuple(parts), table)

    def gradient(self, problem: Any, theta: np.ndarray,
                 score_clip: float | None = None) -> np.ndarray:
        """``∇θ`` of the whole term (:func:`surrogate_gradient` per batch, summed; scores
        clipped to ``±score_clip`` if given)."""
        grad = None
        for i, (batch, coef) in enumerate(self.parts):
            g = surrogate_gradient(problem, theta, batch, coef,
                                   self.follower_table if i == 0 else None, score_clip)
            grad = g if grad is None else grad + g
        return np.zeros_like(theta, dtype=np.float64) if grad is None else grad


# ---------------------------------------------------------------------- every-visit averages
def every_visit_mean(values: np.ndarray, keys: np.ndarray, n_keys: int) -> np.ndarray:
    """Per-key average of ``values`` over all visits in the batch, looked up per transition.

    This pools the segments ``B_sb`` of Alg. 1 line 12 (keys ``s·|B| + b``) or ``B_s``.
    """
    counts = np.bincount(keys, minlength=n_keys)
    sums = np.bincount(keys, weights=values, minlength=n_keys)
    return (sums / np.maximum(counts, 1))[keys]


def every_visit_spread(weights: np.ndarray, keys: np.ndarray, n_keys: int,
                       stat_keys: np.ndarray | None = None) -> np.ndarray:
    """Adjoint of :func:`every_visit_mean`: ``Σ_j w_j mean_{k∈visits(key_j)} x_k = Σ_k u_k x_k``.

    Args:
        weights: ``w_j`` on the transitions where the estimate is *used*.
        keys: their keys.
        n_keys: number of keys.
        stat_keys: keys of the transitions the averages are *computed* from (another batch,
            e.g. an oracle's); default: the same transitions.
    Returns:
        ``u_k = W(key_k) / n(key_k)`` on the statistics transitions.
    """
    stat_keys = keys if stat_keys is None else stat_keys
    total = np.bincount(keys, weights=weights, minlength=n_keys)
    counts = np.bincount(stat_keys, minlength=n_keys)
    return (total / np.maximum(counts, 1))[stat_keys]


# ---------------------------------------------------------------------- the terms of eq. 5
def benefit(q_taken: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Leader Benefit ``B_L(s, b) = Q_L(s, b) − E_{b'~g} Q_L(s, b')`` (paper §4, Alg. 1 l. 11)."""
    return np.asarray(q_taken, dtype=np.float64) - np.asarray(v, dtype=np.float64)


def partial_derivative_td(batch: Batch, next_leader_v: np.ndarray, gamma_leader: float,
                          normaliser: float) -> Coefficients:
    """Partial derivative of Alg. 4 (first two terms of Theorem 1, eq. 5).

    ``(1/N) Σ_τ Σ_t γ_L^t [∇r_L(s_t, b_t) + V_L(s_t) ∇log p(s_t | s_{t−1}, b_{t−1})]``; the log p
    term of transition ``k`` is paired with ``V_L(s_{k+1})`` at time ``t_k + 1`` and exists only
    when ``s_{k+1}`` belongs to the episode.
    """
    disc = gamma_leader ** batch.time.astype(np.float64) / normaliser
    c_logp = np.where(batch.episode_end, 0.0, gamma_leader * disc * next_leader_v)
    return Coefficients(np.zeros_like(disc), disc, c_logp)


def partial_derivative_mc(batch: Batch, state_keys: np.ndarray, n_states: int,
                          gamma_leader: float,
                          normaliser: float | np.ndarray | None = None) -> Coefficients:
    """Monte Carlo partial derivative of Alg. 8 lines 12–16 (θ-independent dynamics).

    ``∂̂J = mean over episodes τ of ∂̂V_L(s_0(τ))``, where ``∂̂V_L(s)`` is the every-visit
    average over segments starting at ``s`` of ``Σ_t γ_L^{t−k} ∇r_L(s_t, b_t)``.
    ``normaliser``: the number of episodes (default: the episode starts of the batch, at
    least 1), or one per transition (several runs' batches in one, each with its own).
    """
    starts = batch.time == 0
    n_starts = max(int(starts.sum()), 1) if normaliser is None else normaliser
    u = every_visit_spread(starts / n_starts, state_keys, n_states)
    c = discounted_forward_sum(u, gamma_leader, batch.episode_end)
    return Coefficients(np.zeros_like(c), c, np.zeros_like(c))


def guiding_weights(batch: Batch, factor: np.ndarray, beta: float | np.ndarray,
                    gamma_leader: float, normaliser: float | np.ndarray) -> np.ndarray:
    """``w_j = γ_L^{t_j} factor_j / (β · normaliser)``: the outer sum of eq. 5's third term.

    ``factor`` is the Benefit for BC-HG (Alg. 1 line 16), the Benefit or ``Q_L`` for HPGD.
    ``beta`` and ``normaliser`` may be per-transition arrays (several runs' batches in one).
    """
    if not (np.all(np.isfinite(beta)) and np.all(np.asarray(beta) > 0)):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    return gamma_leader ** batch.time.astype(np.float64) * factor / (beta * normaliser)


def follower_q_grad_coefficients(batch: Batch, weights: np.ndarray, keys: np.ndarray,
                                 n_keys: int, gamma_follower: float, next_soft_v: np.ndarray,
                                 stats: Batch | None = None,
                                 stat_keys: np.ndarray | None = None) -> Coefficients:
    """Coefficients of ``Σ_j w_j ∇̂Q_F(s_j, b_j)`` with ``∇̂Q_F`` from Alg. 6 (paper eq. 6).

    ``∇̂Q_F(s, b)`` is the every-visit average over segments starting at ``(s, b)`` of
    ``Σ_t γ_F^{t−k} [∇r_F(s_t, b_t) + γ_F V_F(s_{t+1}) ∇log p(s_{t+1}|s_t, b_t)]``.
    With continuous states every key is unique and the average is the single suffix.

    Args:
        batch: where the weights live.
        weights: ``w_j`` (e.g. :func:`guiding_weights`), may be signed.
        keys: ``(s, b)`` keys of ``batch`` (``arange(N)`` for continuous problems).
        n_keys: number of keys.
        gamma_follower: γ_F.
        next_soft_v: ``V_F(s'_k)`` on the statistics batch (0 where the episode terminated).
        stats: batch the segments come from (an oracle's), default ``batch``.
        stat_keys: keys of ``stats``.
    """
    stats = batch if stats is None else stats
    u = every_visit_spread(weights, keys, n_keys, stat_keys)
    c = discounted_forward_sum(u, gamma_follower, stats.episode_end)
    c_logp = np.where(stats.terminated, 0.0, gamma_follower * next_soft_v * c)
    return Coefficients(c, np.zeros_like(c), c_logp)


def follower_advantage_grad_coefficients(
        batch: Batch, weights: np.ndarray, sb_keys: np.ndarray, n_sb: int,
        s_keys: np.ndarray, n_s: int, gamma_follower: float, next_soft_v: np.ndarray,
        stats: Batch | None = None, stat_sb_keys: np.ndarray | None = None,
        stat_s_keys: np.ndarray | None = None) -> Coefficients:
    """Coefficients of ``Σ_j w_j [∇̂Q_F(s_j, b_j) − ∇̂V_F(s_j)]`` (paper eq. 37–39, Alg. 8 l. 19–22).

    The advantage form of eq. 5's third term used by HPGD: since ``E_{b~g} ∇Q_F(s, b) =
    ∇V_F(s)`` (eq. 38) and ``E_{b~g} B_L(s, b) = 0``, subtracting ``∇V_F(s)`` leaves the
    expectation unchanged. ``∇̂Q_F(s, b)`` (``∇̂V_F(s)``) is the every-visit average, over the
    statistics transitions ``k`` with key ``(s, b)`` (``s``), of ``G_F(k) = Σ_{m≥k} γ_F^{m−k}
    [∇r_F(s_m, b_m) + γ_F V_F(s_{m+1}) ∇log p(s_{m+1}|s_m, b_m)]``. By linearity the whole sum
    is ``Σ_m c_m ∇r_F(m) + c^p_m ∇log p(m)`` with ``c = forward_sum_γF(u_Q − u_V)`` and
    ``u = every_visit_spread(w, ...)``.

    Args:
        batch: transitions carrying the weights (the on-policy batch).
        weights: ``w_j`` on ``batch``.
        sb_keys, n_sb: ``(s, b)`` keys of ``batch`` and their number.
        s_keys, n_s: state keys of ``batch`` and their number.
        gamma_follower: γ_F.
        next_soft_v: ``V_F(s'_k)`` on the statistics batch.
        stats: the batch the averages come from (an oracle's); default ``batch``.
        stat_sb_keys, stat_s_keys: keys of ``stats`` (required with ``stats``).
    Returns:
        Coefficients on the transitions of ``stats``.
    Raises:
        ValueError: mismatched lengths or missing statistics keys.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(batch),):
        raise ValueError(f"weights must have shape ({len(batch)},), got {weights.shape}")
    if stats is None:
        stats, stat_sb_keys, stat_s_keys = batch, sb_keys, s_keys
    elif stat_sb_keys is None or stat_s_keys is None:
        raise ValueError("stat_sb_keys and stat_s_keys are required with stats")
    u = (every_visit_spread(weights, sb_keys, n_sb, stat_sb_keys)
         - every_visit_spread(weights, s_keys, n_s, stat_s_keys))
    c = discounted_forward_sum(u, gamma_follower, stats.episode_end)
    c_logp = np.where(stats.terminated, 0.0, gamma_follower * np.asarray(next_soft_v) * c)
    return Coefficients(c, np.zeros_like(c), c_logp)


def theorem1_coefficients(batch: Batch, *, partial: Coefficients, benefit: np.ndarray | None,
                          next_follower_v: np.ndarray, keys: np.ndarray, n_keys: int,
                          beta: float, gamma_leader: float, gamma_follower: float,
                          normaliser: float) -> Coefficients:
    """The BC-HG estimate of Theorem 1 (eq. 5 with ``∇Q_F`` by eq. 6), as coefficients.

    ``ĝ = ∂̂θ J_L + (1/(βN)) Σ_τ Σ_t γ_L^t B_L(s_t, b_t) ∇̂Q_F(s_t, b_t)`` (paper Alg. 1 line 16,
    Alg. 6), where ``∂̂θ J_L`` is given (:func:`partial_derivative_td`, Alg. 4, or
    :func:`partial_derivative_mc`, Alg. 8 lines 12–16) and ``benefit=None`` drops the
    follower's response (NAIVE-PGD, App. C.1). No ``∇V_F`` is needed: this is what makes the
    estimate work from on-policy samples alone.

    Args:
        batch: the on-policy batch.
        partial: coefficients of the partial derivative on ``batch``.
        benefit: ``B_L(s_k, b_k)`` per transition, or ``None``.
        next_follower_v: ``V_F(s'_k)`` per transition.
        keys, n_keys: every-visit keys of ``(s, b)`` (``arange(N)``, ``N`` if continuous).
        beta: follower temperature β > 0.
        gamma_leader, gamma_follower: discounts.
        normaliser: ``N``, the number of finished episodes (at least 1).
    """
    if benefit is None:
        return partial
    w = guiding_weights(batch, benefit, beta, gamma_leader, normaliser)
    return partial + follower_q_grad_coefficients(batch, w, keys, n_keys, gamma_follower,
                                                  next_follower_v)


# ---------------------------------------------------------------------- variance reduction
def quadratic_features(states: np.ndarray) -> np.ndarray:
    """``[1, s_i, s_i s_j (i ≤ j)]`` for each row: ``(N, 1 + n + n(n+1)/2)``."""
    s = np.asarray(states, dtype=np.float64).reshape(len(states), -1)
    iu = np.triu_indices(s.shape[1])
    return np.concatenate([np.ones((len(s), 1)), s, (s[:, :, None] * s[:, None, :])[:, *iu]], 1)


def crossfit_residual(weights: np.ndarray, features: np.ndarray,
                      folds: np.ndarray) -> np.ndarray:
    """Weights minus their cross-fitted projection on ``features``: an unbiased state baseline.

    Because ``E_{b~g}[B_L(s, b)] = 0``, ``E[B_L(s, b) f(s)] = 0`` for every ``f``, so the guiding
    sum ``Σ_t w_t ∇̂Q_F(s_t, b_t)`` may use ``∇̂Q_F(s_t, b_t) − f(s_t)``. With ``f`` the
    least-squares fit of ``∇̂Q_F`` on ``features`` (an estimate of ``∇V_F(s)``), this equals
    replacing ``w`` by its residual after projection. For two folds ``a, b``:
    ``u_b = w_b − Φ_b (Φ_bᵀΦ_b)⁺ Φ_aᵀ w_a``, so that
    ``Σ_j u_j M_j = Σ_j w_j M_j − Σ_{t∈a} w_t f_b(s_t) − Σ_{t∈b} w_t f_a(s_t)`` with ``f_k`` the
    fit of ``M`` on ``Φ`` over fold ``k``: a baseline independent of the fold it is applied to.

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
