"""The leader's own estimate of the follower's soft value, for followers that publish none.

Theorem 1's ``∇Q_F`` (eq. 6) contains ``γ_F V_F(s') ∇log p(s'|s, b)`` wherever the dynamics
depend on θ. An exact or k-step follower publishes ``V_F``; a black-box or learning follower
does not, and the leader then learns it from what it sees — the follower's states, actions and
rewards in the leader's batches — with a critic of its own:

* :class:`TabularFollowerValue`: TD(0) on the soft reward ``r_F(s, b) − β log ĝ(b|s)``, with
  ``ĝ`` the follower's policy estimated from its observed actions (Laplace-smoothed counts,
  forgotten geometrically as θ moves);
* :class:`QuadraticFollowerValue`: LSTD(0) of ``r_F`` on quadratic features of the state. For a
  linear-Gaussian follower with a state-independent covariance (the MaxEnt-LQR best response,
  SAC's in the limit) the entropy bonus is a constant, and a constant in ``V_F`` does not
  change ``E[V_F(s') ∇log p(s'|s, b)]``, so ``V_F`` up to a constant is all the leader needs;
  the true ``V_F`` of an LQR follower is quadratic, so the function class is exact.

Both are estimates: with them the leader's hypergradient estimate is consistent only as far as
these critics are (a limitation stated where they are used).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.estimators.theorem1 import quadratic_features
from bilevel_envs.core import Batch
from bilevel_envs.utils import check_float

__all__ = ["QuadraticFollowerValue", "TabularFollowerValue"]


class TabularFollowerValue:
    """TD(0) estimate of the follower's soft value ``V_F(s)`` on a tabular problem.

    Args:
        n_states, n_actions: table shape.
        beta: the follower's temperature β.
        gamma: the follower's discount γ_F.
        alpha: TD step size in (0, 1].
        forget: per-update decay of the action counts behind ``ĝ`` in [0, 1).
    """

    def __init__(self, n_states: int, n_actions: int, *, beta: float, gamma: float,
                 alpha: float = 0.5, forget: float = 0.9):
        self.beta, self.gamma = float(beta), float(gamma)
        self.alpha = check_float("alpha", alpha, low=0.0, high=1.0, low_open=True)
        self.forget = check_float("forget", forget, low=0.0, high=1.0, high_open=True)
        self.counts = np.zeros((n_states, n_actions))
        self.values = np.zeros(n_states)

    def policy(self) -> np.ndarray:
        """``ĝ(b|s)``: Laplace-smoothed observed action frequencies."""
        c = self.counts + 1.0
        return c / c.sum(axis=1, keepdims=True)

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """Count the follower's actions, then one TD(0) pass over the batch in its order (the
        pass is sequential by definition)."""
        S, B = self.counts.shape
        self.counts *= self.forget
        self.counts += np.bincount(batch.obs * B + batch.actions, minlength=S * B).reshape(S, B)
        soft_r = batch.r_follower - self.beta * np.log(self.policy()[batch.obs, batch.actions])
        boot = np.where(batch.terminated, 0.0, self.gamma).tolist()
        v = self.values.tolist()
        s, s2, r = batch.obs.tolist(), batch.next_obs.tolist(), soft_r.tolist()
        a, sq = self.alpha, 0.0
        for k in range(len(s)):
            td = r[k] + boot[k] * v[s2[k]] - v[s[k]]
            v[s[k]] += a * td
            sq += td * td
        self.values = np.asarray(v)
        return {"follower_value_td_rms": (sq / max(len(s), 1)) ** 0.5}

    def v(self, states: np.ndarray) -> np.ndarray:
        """``V̂_F(s)``."""
        return self.values[states]

    def state_dict(self) -> dict[str, Any]:
        """Counts and values."""
        return {"counts": self.counts.copy(), "values": self.values.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.counts = np.array(state["counts"], dtype=np.float64)
        self.values = np.array(state["values"], dtype=np.float64)


class QuadraticFollowerValue:
    """LSTD(0) estimate of the follower's value ``V_F(s)`` (up to a constant) on quadratic
    features of the state (module docstring).

    Args:
        gamma: the follower's discount γ_F.
        ridge: Tikhonov regulariser of the LSTD system.
    """

    def __init__(self, *, gamma: float, ridge: float = 1e-8):
        self.gamma = float(gamma)
        self.ridge = check_float("ridge", ridge, low=0.0)
        self.weights: np.ndarray | None = None

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """Solve ``Σ φ(s)(φ(s) − γ φ(s'))ᵀ w = Σ φ(s) r_F`` on the batch (no bootstrap where the
        episode terminated)."""
        phi = quadratic_features(batch.obs)
        phi_next = quadratic_features(batch.next_obs) * np.where(batch.terminated, 0.0,
                                                                 1.0)[:, None]
        A = phi.T @ (phi - self.gamma * phi_next)
        A[np.diag_indices_from(A)] += self.ridge * len(batch)
        self.weights = np.linalg.lstsq(A, phi.T @ batch.r_follower, rcond=None)[0]
        return {}

    def v(self, states: np.ndarray) -> np.ndarray:
        """``V̂_F(s)`` (up to a constant)."""
        if self.weights is None:
            raise RuntimeError("the follower-value critic has not been fitted yet")
        return quadratic_features(states) @ self.weights

    def state_dict(self) -> dict[str, Any]:
        """The LSTD weights."""
        return {"weights": None if self.weights is None else self.weights.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        w = state.get("weights")
        self.weights = None if w is None else np.array(w, dtype=np.float64)
