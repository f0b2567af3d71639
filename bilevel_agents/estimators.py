"""Sample-based hypergradient estimators for configurable MDPs (paper Theorem 1, Alg. 1, 4, 6, 8).

Every estimate here is *linear* in the per-transition gradients ``∇θ r_F``, ``∇θ r_L`` and
``∇θ log p``. So instead of building ``|θ|``-dimensional vectors per transition, each estimator
returns per-transition **coefficients** ``c_F, c_L, c_p`` and the estimate is the gradient of one
scalar surrogate, taken by a single autograd pass (:func:`surrogate_gradient`)::

    ĝ = ∇θ Σ_k [ c_F[k] r_F^θ(s_k, b_k) + c_L[k] r_L^θ(s_k, b_k) + c_p[k] log p^θ(s'_k | s_k, b_k) ]

This is exact algebra, not an approximation (tests compare it with the per-transition vector
form), and costs one backward pass whatever the batch size or ``|θ|``.

Conventions (see :class:`bilevel_envs.core.Batch`): arrays are env-major, ``episode_end[k]``
means transition ``k+1`` starts a new episode, ``time[k]`` is the within-episode step ``t``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from bilevel_envs.core import Batch, TabularConfigurableEnv

__all__ = [
    "Coefficients",
    "benefit",
    "discounted_forward_sum",
    "discounted_reverse_sum",
    "every_visit_mean",
    "every_visit_spread",
    "follower_q_grad_coefficients",
    "guiding_weights",
    "partial_derivative_mc",
    "partial_derivative_td",
    "surrogate_gradient",
]

# Above this exponent the γ^{-t} rescaling would lose precision: fall back to a time loop.
_MAX_LOG_SCALE = 30.0


class Coefficients(NamedTuple):
    """Per-transition coefficients of ``r_F``, ``r_L`` and ``log p`` in the surrogate."""

    follower_reward: np.ndarray
    leader_reward: np.ndarray
    log_transition: np.ndarray

    def __add__(self, other: "Coefficients") -> "Coefficients":  # type: ignore[override]
        return Coefficients(*(a + b for a, b in zip(self, other)))

    @staticmethod
    def zeros(n: int) -> "Coefficients":
        return Coefficients(np.zeros(n), np.zeros(n), np.zeros(n))


def _episode_position(episode_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(episode index, position within episode)`` of every transition."""
    n = episode_end.shape[0]
    starts = np.ones(n, dtype=bool)
    starts[1:] = episode_end[:-1]
    episode = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    return episode, np.arange(n) - first[episode]


def _time_loop_sum(x: np.ndarray, gamma: float, episode_end: np.ndarray,
                   reverse: bool) -> np.ndarray:
    """Reference recursion (used only for very long episodes where rescaling overflows)."""
    y = np.zeros_like(x, dtype=np.float64)
    n = x.shape[0]
    order = range(n - 1, -1, -1) if reverse else range(n)
    carry = 0.0
    for k in order:
        if reverse:
            carry = x[k] + (0.0 if episode_end[k] else gamma * carry)
        else:
            carry = x[k] + (0.0 if (k == 0 or episode_end[k - 1]) else gamma * carry)
        y[k] = carry
    return y


def discounted_reverse_sum(x: np.ndarray, gamma: float, episode_end: np.ndarray) -> np.ndarray:
    """``y_k = Σ_{m ≥ k, same episode} γ^{m−k} x_m`` (Monte Carlo returns-to-go, Alg. 6/9).

    Vectorised by rescaling: ``y_k = γ^{−p_k} Σ_{m ≥ k} γ^{p_m} x_m`` within each episode, with
    ``p`` the position in the episode.
    """
    x = np.asarray(x, dtype=np.float64)
    if gamma == 0.0:
        return x.copy()
    episode, pos = _episode_position(episode_end)
    if pos.max(initial=0) * -np.log(gamma) > _MAX_LOG_SCALE:
        return _time_loop_sum(x, gamma, episode_end, reverse=True)
    scale = gamma ** pos.astype(np.float64)
    csum = np.cumsum((scale * x)[::-1])[::-1]  # Σ_{m ≥ k} over the whole batch
    ends = np.flatnonzero(episode_end)
    ends = ends if ends.size and ends[-1] == x.shape[0] - 1 else np.append(ends, x.shape[0] - 1)
    after_end = np.append(csum, 0.0)[ends + 1]  # Σ over later episodes, to subtract
    return (csum - after_end[episode]) / scale


def discounted_forward_sum(u: np.ndarray, gamma: float, episode_end: np.ndarray) -> np.ndarray:
    """``c_m = Σ_{k ≤ m, same episode} γ^{m−k} u_k``: the adjoint of :func:`discounted_reverse_sum`.

    ``Σ_k u_k Σ_{m≥k} γ^{m−k} g_m = Σ_m c_m g_m``, which turns sums of returns-to-go of
    gradients into per-transition coefficients.
    """
    u = np.asarray(u, dtype=np.float64)
    if gamma == 0.0:
        return u.copy()
    episode, pos = _episode_position(episode_end)
    if pos.max(initial=0) * -np.log(gamma) > _MAX_LOG_SCALE:
        return _time_loop_sum(u, gamma, episode_end, reverse=False)
    scale = gamma ** pos.astype(np.float64)
    csum = np.cumsum(u / scale)
    starts = np.flatnonzero(pos == 0)
    before_start = np.concatenate(([0.0], csum))[starts]
    return (csum - before_start[episode]) * scale


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


def benefit(q_taken: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Leader Benefit ``B_L(s, b) = Q_L(s, b) − E_{b'~g} Q_L(s, b')`` (paper §4, Alg. 1 l. 11)."""
    return np.asarray(q_taken, dtype=np.float64) - np.asarray(v, dtype=np.float64)


def guiding_weights(batch: Batch, factor: np.ndarray, beta: float, gamma_leader: float,
                    normaliser: float) -> np.ndarray:
    """``w_j = γ_L^{t_j} factor_j / (β · normaliser)``: the outer sum of Theorem 1's third term.

    ``factor`` is the Benefit for BC-HG (Alg. 1 line 16) or ``Q_L`` / Benefit for HPGD.
    """
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


def partial_derivative_mc(batch: Batch, state_keys: np.ndarray, n_states: int,
                          gamma_leader: float) -> Coefficients:
    """Monte Carlo partial derivative of Alg. 8 lines 12–16 (θ-independent dynamics).

    ``∂̂J = mean over episodes τ of ∂̂V_L(s_0(τ))``, where ``∂̂V_L(s)`` is the every-visit
    average over segments starting at ``s`` of ``Σ_t γ_L^{t−k} ∇r_L(s_t, b_t)``.
    """
    starts = batch.time == 0
    n_starts = max(int(starts.sum()), 1)
    u = every_visit_spread(starts / n_starts, state_keys, n_states)
    c = discounted_forward_sum(u, gamma_leader, batch.episode_end)
    return Coefficients(np.zeros_like(c), c, np.zeros_like(c))


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


def surrogate_gradient(problem, theta: np.ndarray, batch: Batch, coef: Coefficients,
                       extra_follower_table: np.ndarray | None = None) -> np.ndarray:
    """``∇θ Σ_k [c_F r_F + c_L r_L + c_p log p]`` by one autograd pass.

    Tabular problems aggregate the coefficients into ``(S, B)`` tables first (one bincount)
    and call the problem's vector-Jacobian product (closed form where the problem has one).
    ``extra_follower_table`` adds ``Σ_{s,b} X(s,b) r_F(s,b)`` (used by SoBiRL's expectation).
    """
    if isinstance(problem, TabularConfigurableEnv):
        S, B = problem.n_states, problem.n_actions
        key = batch.obs * B + batch.actions
        c_f, c_l = (np.bincount(key, weights=c, minlength=S * B).reshape(S, B)
                    for c in coef[:2])
        if extra_follower_table is not None:
            c_f = c_f + extra_follower_table
        grad = problem.tabular_rewards_vjp(theta, c_f, c_l)
        if np.any(coef.log_transition):
            th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
            log_p = problem.log_transition_torch(th, batch.obs, batch.actions, batch.next_obs)
            if log_p is not None:
                total = (torch.from_numpy(coef.log_transition) * log_p).sum()
                grad = grad + torch.autograd.grad(total, th)[0].numpy()
        return grad
    th = torch.tensor(theta, dtype=torch.float64, requires_grad=True)
    s = torch.as_tensor(batch.obs)
    b = torch.as_tensor(batch.actions)
    total = (torch.from_numpy(coef.follower_reward) * problem.follower_reward_torch(th, s, b)
             ).sum() + (torch.from_numpy(coef.leader_reward)
                        * problem.leader_reward_torch(th, s, b)).sum()
    log_p = problem.log_transition_torch(th, s, b, torch.as_tensor(batch.next_obs)) \
        if np.any(coef.log_transition) else None
    if log_p is not None:
        total = total + (torch.from_numpy(coef.log_transition) * log_p).sum()
    if not total.requires_grad:  # nothing depends on θ (all coefficients zero)
        return np.zeros_like(theta, dtype=np.float64)
    (grad,) = torch.autograd.grad(total, th)
    return grad.numpy()
