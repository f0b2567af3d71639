"""Leader policy parameterisations for tabular games (numpy only: bilevel_envs has no torch).

A parameterisation maps a flat θ to the leader's ``(S, A)`` action probabilities and gives the
score ``∇θ log f_θ(a|s)``. With finitely many states the score takes only ``S·A`` distinct
values, so it is computed once per θ for every ``(s, a)`` and then indexed.

* :class:`TabularSoftmax`: ``f(·|s) = softmax(θ_s)`` (θ = ``S·A`` logits).
* :class:`MLPSoftmax`: one-hot ``s`` → ReLU MLP (2×64 by default, as the authors' toy actor) →
  logits, with manual backpropagation.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MLPSoftmax", "TabularSoftmax"]


def _softmax(z: np.ndarray) -> np.ndarray:
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class TabularSoftmax:
    """``f(a|s) = softmax(θ.reshape(S, A))[s, a]``."""

    def __init__(self, n_states: int, n_actions: int):
        self.n_states, self.n_actions = int(n_states), int(n_actions)
        self.dim = self.n_states * self.n_actions

    def initial(self, rng: np.random.Generator, scale: float = 0.01) -> np.ndarray:
        """Initial logits ``θ ~ N(0, scale²)``, shape ``(S·A,)``."""
        return rng.normal(0.0, scale, self.dim)

    def probs(self, theta: np.ndarray) -> np.ndarray:
        """The policy table ``f(a|s)``, shape ``(S, A)``."""
        return _softmax(np.asarray(theta, dtype=np.float64).reshape(self.n_states,
                                                                    self.n_actions))

    def score_table(self, theta: np.ndarray) -> np.ndarray:
        """``(S, A, dim)``: ``∇θ log f(a|s)`` = ``e_s ⊗ (e_a − f(·|s))``."""
        f = self.probs(theta)
        S, A = f.shape
        out = np.zeros((S, A, S, A))
        idx = np.arange(S)
        out[idx, :, idx, :] = np.eye(A)[None] - f[:, None, :]
        return out.reshape(S, A, -1)


class MLPSoftmax:
    """One-hot state → ReLU MLP → logits; θ is the flat vector of all weights and biases.

    Args:
        n_states, n_actions: sizes of the tabular game.
        hidden: hidden layer widths (authors: (64, 64)).
    """

    def __init__(self, n_states: int, n_actions: int, hidden: tuple[int, ...] = (64, 64)):
        self.n_states, self.n_actions = int(n_states), int(n_actions)
        sizes = (self.n_states, *map(int, hidden), self.n_actions)
        self.shapes = [((o, i), (o,)) for i, o in zip(sizes[:-1], sizes[1:])]
        self.dim = sum(o * i + o for (o, i), _ in self.shapes)

    def _unpack(self, theta: np.ndarray):
        theta = np.asarray(theta, dtype=np.float64)
        layers, k = [], 0
        for (o, i), _ in self.shapes:
            W = theta[k:k + o * i].reshape(o, i)
            k += o * i
            b = theta[k:k + o]
            k += o
            layers.append((W, b))
        return layers

    def initial(self, rng: np.random.Generator, scale: float | None = None) -> np.ndarray:
        """Xavier-uniform weights, zero biases (the authors' init: f ≈ uniform at start)."""
        parts = []
        for (o, i), _ in self.shapes:
            lim = np.sqrt(6.0 / (i + o))
            parts += [rng.uniform(-lim, lim, o * i), np.zeros(o)]
        theta = np.concatenate(parts)
        # a near-zero last layer makes the initial policy ≈ uniform, as in the authors' runs
        (o, i), _ = self.shapes[-1]
        theta[-(o * i + o):-o] *= 0.01
        return theta

    def _forward(self, theta: np.ndarray):
        acts = [np.eye(self.n_states)]  # every state at once: (S, n_in)
        layers = self._unpack(theta)
        for j, (W, b) in enumerate(layers):
            z = acts[-1] @ W.T + b
            acts.append(z if j == len(layers) - 1 else np.maximum(z, 0.0))
        return layers, acts

    def probs(self, theta: np.ndarray) -> np.ndarray:
        """The policy table ``f(a|s)`` of every state at once, shape ``(S, A)``."""
        return _softmax(self._forward(theta)[1][-1])

    def score_table(self, theta: np.ndarray) -> np.ndarray:
        """``(S, A, dim)`` by backpropagating ``e_a − f(·|s)`` through the MLP for every (s, a)."""
        layers, acts = self._forward(theta)
        f = _softmax(acts[-1])
        S, A = f.shape
        delta = (np.eye(A)[None] - f[:, None, :])  # (S, A, A): d log f(a|s) / d logits
        grads = []
        for j in range(len(layers) - 1, -1, -1):
            W, _ = layers[j]
            h_in = acts[j]  # (S, n_in)
            grads.append((np.einsum("sao,si->saoi", delta, h_in).reshape(S, A, -1), delta))
            if j > 0:
                delta = np.einsum("sao,oi->sai", delta, W) * (acts[j] > 0)[:, None, :]
        parts = []
        for gW, gb in reversed(grads):
            parts += [gW, gb]
        return np.concatenate(parts, axis=-1)
