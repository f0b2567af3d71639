"""Theorem 2 (hypergradient for two-player Markov games) as pure numpy functions.

Paper eq. 8:
    ∇θ J_L = 1/(1−γ_L) E_{(s,a,b)~d g f}[ Q_L(s,a,b) ∇log f_θ(a|s) + B_L(s,a,b)/β · ∇Q_F(s,a,b) ],
with the Benefit ``B_L(s,a,b) = Q_L(s,a,b) − E_{b'~g(·|s,a)} Q_L(s,a,b')`` and (eq. 9)
    ∇θ Q_F(s,a,b) = E[ Σ_t γ_F^t V_F(s_t,a_t) ∇log f_θ(a_t|s_t) | s_0,a_0,b_0 = s,a,b ].

On complete episodes (arrays ``(E, T, ...)``: E episodes of T steps, t = within-episode time)
the unbiased sample form of ``1/(1−γ_L) E_d[·]`` is ``(1/E) Σ_τ Σ_t γ_L^t [·]`` (Alg. 1 line 16
normalises the guiding term by the number of trajectories |B|). ``score`` arrays hold
``∇θ log f(a_t|s_t)`` with trailing parameter dimensions.

Because the score enters linearly, the whole estimate is ``(1/E) Σ_k w_k ∇log f(a_k|s_k)`` with
scalar per-step weights (:func:`theorem2_weights`): leaders then need a single autograd pass of
``Σ w_k log f`` instead of per-sample gradients, and the nested sum of eq. 9 becomes a forward
discounted cumulative sum, O(T) per episode instead of O(T²).
"""

from __future__ import annotations

import numpy as np

from bilevel_agents.estimators.returns import discounted_forward_sum, discounted_reverse_sum

__all__ = [
    "benefit_exact",
    "benefit_from_samples",
    "follower_q_grad",
    "guiding_weights",
    "partial_derivative",
    "partial_weights",
    "theorem2_gradient",
    "theorem2_weights",
]


def _check_gamma(gamma: float, name: str) -> float:
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {gamma!r}")
    return gamma


def _expand(w: np.ndarray, like: np.ndarray) -> np.ndarray:
    return w.reshape(w.shape + (1,) * (like.ndim - w.ndim))


def follower_q_grad(v_f: np.ndarray, score: np.ndarray, gamma_f: float,
                    baseline: np.ndarray | None = None, include_first: bool = True) -> np.ndarray:
    """FollowerQGrad for Markov games (Alg. 7, eq. 9) at every step of every episode.

    ``∇Q̂_F(s_t,a_t,b_t) = Σ_{k=t}^{T−1} γ_F^{k−t} (V_F(s_k,a_k) − c_k) ∇log f(a_k|s_k)``
    along the suffix of the episode (single-segment Monte Carlo of eq. 9).

    Args:
        v_f: ``(E, T)`` follower soft values ``V_F(s_k, a_k)``.
        score: ``(E, T, *d)`` scores ``∇θ log f(a_k|s_k)``.
        gamma_f: follower discount γ_F.
        baseline: optional ``(E, T)`` ``c_k`` depending on ``s_k`` only (e.g.
            ``Σ_a f(a|s_k) V_F(s_k, a)``): zero-mean given the past, so the estimate stays
            unbiased and its variance drops (the authors' "advantage in influence").
        include_first: keep the ``k = t`` term. It depends on ``(s_t, a_t)`` only, so it
            cancels against the zero-mean Benefit in Theorem 2; dropping it lowers variance.

    Returns:
        ``(E, T, *d)`` estimates.
    """
    c = np.asarray(v_f, dtype=np.float64)
    if baseline is not None:
        c = c - np.asarray(baseline, dtype=np.float64)
    x = _expand(c, score) * score
    out = discounted_reverse_sum(x, gamma_f)
    return out if include_first else out - x


def benefit_from_samples(q_l: np.ndarray, q_l_samples: np.ndarray) -> np.ndarray:
    """Benefit from follower samples (Alg. 1 lines 10–11, Theorem 2).

    ``B̂_L(s,a,b) = Q_L(s,a,b) − (1/M) Σ_m Q_L(s,a,b_m)`` with ``b_m ~ g(·|s,a)``.

    Args:
        q_l: ``(...)`` critic values at the taken follower actions.
        q_l_samples: ``(..., M)`` critic values at M follower samples.
    """
    return np.asarray(q_l, dtype=np.float64) - np.asarray(q_l_samples, np.float64).mean(axis=-1)


def benefit_exact(q_l: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Tabular Benefit ``B_L = Q_L − Σ_b g(b|s,a) Q_L(s,a,b)`` for ``(S, A, B)`` tables."""
    return q_l - (g * q_l).sum(axis=-1, keepdims=True)


def partial_derivative(q_l: np.ndarray, score: np.ndarray, gamma_l: float | None = None
                       ) -> np.ndarray:
    """PartialDerivative for Markov games (Alg. 5; first term of eq. 8).

    With ``gamma_l`` (episodes ``(E, T)``): ``(1/E) Σ_τ Σ_t γ_L^t Q_L ∇log f`` (unbiased for
    ``1/(1−γ_L) E_d[Q_L ∇log f]``). With ``gamma_l=None`` the literal Alg. 5 average
    ``(1/|B|) Σ Q_L ∇log f`` over all samples (for samples already drawn ∝ γ_L^t).
    """
    q = np.asarray(q_l, dtype=np.float64)
    if gamma_l is None:
        return (_expand(q, score) * score).reshape((-1,) + score.shape[q.ndim:]).mean(axis=0)
    w = q * (_check_gamma(gamma_l, "gamma_l") ** np.arange(q.shape[1]))[None]
    return (_expand(w, score) * score).sum(axis=(0, 1)) / q.shape[0]


def theorem2_gradient(q_l: np.ndarray, benefit: np.ndarray, v_f: np.ndarray,
                       score: np.ndarray, beta: float, gamma_l: float, gamma_f: float,
                       baseline: np.ndarray | None = None, include_first: bool = True,
                       partial: bool = True) -> np.ndarray:
    """BC-HG estimate of Theorem 2 (eq. 8) from complete episodes (Alg. 1 line 16 + Alg. 5, 7).

    ``(1/E) Σ_τ Σ_t γ_L^t [ Q_L ∇log f + B_L/β · ∇Q̂_F ]`` with ``∇Q̂_F`` from
    :func:`follower_q_grad`. ``partial=False`` returns the guiding term only.

    Args:
        q_l: ``(E, T)`` critic ``Q_L(s_t, a_t, b_t)``.
        benefit: ``(E, T)`` Benefit ``B_L(s_t, a_t, b_t)``.
        v_f: ``(E, T)`` follower values ``V_F(s_t, a_t)``.
        score: ``(E, T, *d)`` ``∇θ log f(a_t|s_t)``.
        beta: follower temperature β > 0.
        gamma_l, gamma_f: discounts.
    """
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    E, T = np.shape(q_l)
    disc = _check_gamma(gamma_l, "gamma_l") ** np.arange(T)
    dq = follower_q_grad(v_f, score, gamma_f, baseline, include_first)
    guide = (_expand(disc[None] * np.asarray(benefit) / beta, dq) * dq).sum(axis=(0, 1)) / E
    if not partial:
        return guide
    return partial_derivative(q_l, score, gamma_l) + guide


def guiding_weights(benefit: np.ndarray, v_f: np.ndarray, beta: float, gamma_l: float,
                    gamma_f: float, baseline: np.ndarray | None = None,
                    include_first: bool = True) -> np.ndarray:
    """Per-step weights ``w_k`` with ``guiding term = (1/E) Σ_k w_k ∇log f(a_k|s_k)``.

    Exchanging the sums of Alg. 1 line 16 and eq. 9:
    ``Σ_t γ_L^t B_t/β Σ_{k≥t} γ_F^{k−t} c_k ∇log f_k = Σ_k c_k G_k ∇log f_k`` with
    ``G_k = Σ_{t≤k} γ_F^{k−t} γ_L^t B_t / β`` (a forward discounted cumsum),
    ``c_k = V_F − baseline``.
    """
    if not float(beta) > 0:
        raise ValueError(f"beta must be > 0, got {beta!r}")
    B = np.asarray(benefit, dtype=np.float64)
    T = B.shape[1]
    disc = _check_gamma(gamma_l, "gamma_l") ** np.arange(T)
    src = disc[None] * B / beta
    G = discounted_forward_sum(src, gamma_f)
    if not include_first:
        G = G - src
    c = np.asarray(v_f, dtype=np.float64)
    if baseline is not None:
        c = c - np.asarray(baseline, dtype=np.float64)
    return c * G


def partial_weights(q_l: np.ndarray, gamma_l: float) -> np.ndarray:
    """Per-step weights ``w_k = γ_L^k Q_L(s_k, a_k, b_k)`` of the partial derivative (Alg. 5).

    ``Q_L`` may have a baseline subtracted (any function of ``s_k`` keeps it unbiased).
    """
    q = np.asarray(q_l, dtype=np.float64)
    return q * (_check_gamma(gamma_l, "gamma_l") ** np.arange(q.shape[1]))[None]


def theorem2_weights(q_l: np.ndarray, benefit: np.ndarray | None, v_f: np.ndarray | None,
                     beta: float, gamma_l: float, gamma_f: float,
                     baseline: np.ndarray | None = None, include_first: bool = True
                     ) -> np.ndarray:
    """Theorem 2 (eq. 8, with eq. 9) as per-step weights: ``ĝ = (1/E) Σ_k w_k ∇log f(a_k|s_k)``.

    ``w_k = γ_L^k Q_L(s_k,a_k,b_k)`` (:func:`partial_weights`, Alg. 5) ``+``
    :func:`guiding_weights` (Alg. 1 line 16, Alg. 7): the BC-HG estimate of a Markov game's
    hypergradient. ``benefit=None`` gives NAIVE-PGD's weights (partial term only).
    """
    w = partial_weights(q_l, gamma_l)
    if benefit is None:
        return w
    return w + guiding_weights(benefit, v_f, beta, gamma_l, gamma_f, baseline, include_first)
