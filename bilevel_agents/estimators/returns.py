"""Discounted within-episode sums: the one implementation every estimator uses.

Two layouts occur. Configurable-MDP batches are *flat*: transitions of many episodes one after
the other, with ``episode_end[k]`` true where transition ``k + 1`` starts a new episode (see
:class:`bilevel_envs.core.Batch`). Markov-game batches are *rows*: ``(E, T, ...)`` arrays of E
complete episodes of T steps. Flat batches are packed into rows (one row per episode, padded
with zeros), so that both layouts go through the same first-order recursion along axis 1
(:func:`scipy.signal.lfilter`, stable for any episode length and any γ ∈ [0, 1]). Flat batches
of many episodes (HPGD's oracle batches: thousands of episodes of at most a few hundred steps)
run the same recursion ``y_t = γ y_{t∓1} + x_t`` one position at a time, vectorised across
episodes: the same two roundings per element as ``lfilter``, hence the same numbers (tested),
without ``lfilter``'s per-element cost.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import lfilter

__all__ = ["discounted_forward_sum", "discounted_reverse_sum", "episode_positions"]


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma!r}")
    return gamma


def episode_positions(episode_end: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(episode index, position within the episode)`` of every transition of a flat batch."""
    episode_end = np.asarray(episode_end, dtype=bool)
    starts = np.ones(episode_end.shape[0], dtype=bool)
    starts[1:] = episode_end[:-1]
    episode = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    return episode, np.arange(episode_end.shape[0]) - first[episode]


def _filter_rows(rows: np.ndarray, gamma: float, reverse: bool) -> np.ndarray:
    """``y_t = x_t + γ y_{t∓1}`` along axis 1."""
    if reverse:
        return lfilter([1.0], [1.0, -gamma], rows[:, ::-1], axis=1)[:, ::-1]
    return lfilter([1.0], [1.0, -gamma], rows, axis=1)


def _discounted_sum(x: np.ndarray, gamma: float, episode_end: np.ndarray | None,
                    reverse: bool) -> np.ndarray:
    gamma = _check_gamma(gamma)
    x = np.asarray(x, dtype=np.float64)
    if episode_end is None:  # rows: (E, T, ...)
        if x.ndim < 2:
            raise ValueError(f"row layout needs an (E, T, ...) array, got shape {x.shape}")
        return _filter_rows(x, gamma, reverse)
    if x.shape[0] != np.shape(episode_end)[0]:
        raise ValueError(f"x has {x.shape[0]} transitions but episode_end has "
                         f"{np.shape(episode_end)[0]}")
    if x.shape[0] == 0:
        return x.copy()
    episode, pos = episode_positions(episode_end)
    n_episodes, length = episode[-1] + 1, pos.max() + 1
    if n_episodes < _MANY_EPISODES:
        rows = np.zeros((n_episodes, length) + x.shape[1:])
        rows[episode, pos] = x
        return _filter_rows(rows, gamma, reverse)[episode, pos]
    flat = np.zeros((length * n_episodes,) + x.shape[1:])  # position-major
    at = pos * n_episodes + episode
    flat[at] = x
    _filter_columns(flat.reshape((length, n_episodes) + x.shape[1:]), gamma, reverse)  # a view
    return flat.take(at, axis=0)


#: from this many episodes a flat batch is summed one position at a time (module docstring)
_MANY_EPISODES = 256


def _filter_columns(columns: np.ndarray, gamma: float, reverse: bool) -> None:
    """``y_t = γ y_{t∓1} + x_t`` along axis 0, in place (``lfilter``'s two roundings)."""
    order = range(len(columns) - 2, -1, -1) if reverse else range(1, len(columns))
    step = 1 if reverse else -1
    scaled = np.empty_like(columns[0])
    for t in order:
        np.multiply(columns[t + step], gamma, out=scaled)
        columns[t] += scaled


def discounted_reverse_sum(x: np.ndarray, gamma: float,
                           episode_end: np.ndarray | None = None) -> np.ndarray:
    """Returns-to-go ``y_k = Σ_{m ≥ k, same episode} γ^{m−k} x_m`` (paper Alg. 6, 7, 9).

    Args:
        x: flat ``(N, ...)`` values with ``episode_end``, or ``(E, T, ...)`` rows without it.
        gamma: discount γ in [0, 1].
        episode_end: ``(N,)`` bool, true where the next transition starts a new episode.
    """
    return _discounted_sum(x, gamma, episode_end, reverse=True)


def discounted_forward_sum(u: np.ndarray, gamma: float,
                           episode_end: np.ndarray | None = None) -> np.ndarray:
    """``c_m = Σ_{k ≤ m, same episode} γ^{m−k} u_k``: the adjoint of :func:`discounted_reverse_sum`.

    ``Σ_k u_k Σ_{m≥k} γ^{m−k} g_m = Σ_m c_m g_m``, which turns sums of returns-to-go of
    gradients into per-transition coefficients (one pass instead of one per visit).
    """
    return _discounted_sum(u, gamma, episode_end, reverse=False)
