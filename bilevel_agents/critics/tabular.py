"""Tabular leader critics ``Q_L(s, b)`` of configurable MDPs: SARSA (Alg. 2 / 10) and Monte Carlo
(Alg. 9). Both follow the :class:`~bilevel_agents.critics.Critic` protocol."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bilevel_agents.estimators.returns import discounted_reverse_sum
from bilevel_envs.core import Batch

__all__ = ["MonteCarloCritic", "SarsaCritic", "StateValueModelCritic", "TableCritic",
           "stacked_sarsa_pass"]


class TableCritic:
    """Shared tabular storage: ``Q`` of shape ``(S, B)``; ``V`` under the follower's policy."""

    table: np.ndarray

    def q(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``Q_L(s_k, b_k)`` per transition."""
        return self.table[states, actions]

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """``V_L(s) = Σ_b g(b|s) Q_L(s, b)`` under the follower's published policy."""
        return (br.policy[states] * self.table[states]).sum(axis=1)

    def state_dict(self) -> dict[str, Any]:
        """The table (the critic's whole state)."""
        return {"table": self.table.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.table = np.array(state["table"], dtype=np.float64)


class SarsaCritic(TableCritic):
    """Tabular SARSA critic, carried across outer iterations (paper Alg. 2 / Alg. 10).

    One pass over the batch in a random order: ``Q(s,b) += α (r_L + γ_L Q(s',b') − Q(s,b))``;
    the bootstrap is dropped where the episode ends (termination, time limit or batch end).

    The pass is sequential by definition (an update may read an entry changed just before),
    so it runs as a tight scalar loop over Python floats: ~0.3 µs per transition.

    With ``expected=True`` the bootstrap is ``Σ_{b'} g(b'|s') Q(s', b')`` (expected SARSA): the
    follower's policy is known to the leader (paper Assumption 1), so the sampled ``b'`` only
    adds variance.

    With ``state_values="td"`` it also learns ``V_L(s)`` by TD(0) in the same pass, so that the
    Benefit ``Q_L − V_L`` needs no policy from the follower (a follower that publishes none);
    the default ``"policy"`` takes ``V_L = Σ_b g(b|s) Q_L(s, b)`` with the published policy.

    Args:
        n_states, n_actions: table shape.
        alpha: SARSA step size α_SA in (0, 1].
        gamma: leader discount γ_L.
        init_std: the table starts at N(0, init_std²) (the authors use 1).
        rng: generator for the initial table and the pass order.
        expected: expected-SARSA bootstrap (default: the paper's sampled ``b'``).
        state_values: ``"policy"`` or ``"td"`` (above).
    """

    def __init__(self, n_states: int, n_actions: int, *, alpha: float = 0.5, gamma: float = 0.99,
                 init_std: float = 1.0, rng: np.random.Generator | None = None,
                 expected: bool = False, state_values: str = "policy"):
        if state_values not in ("policy", "td"):
            raise ValueError(f"state_values must be 'policy' or 'td', got {state_values!r}")
        if expected and state_values == "td":
            raise ValueError("expected=True bootstraps on the follower's published policy; "
                             "state_values='td' is for followers that publish none")
        self.state_values = state_values
        self.state_table = np.zeros(n_states)
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"alpha (SARSA step size) must be in (0, 1], got {alpha!r}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        if not init_std >= 0.0:
            raise ValueError(f"init_std must be >= 0, got {init_std!r}")
        self.alpha, self.gamma, self.expected = float(alpha), float(gamma), bool(expected)
        self.rng = rng if rng is not None else np.random.default_rng()
        self.table = self.rng.normal(0.0, init_std, size=(n_states, n_actions))

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """One SARSA pass over ``batch`` in a random order; returns the TD error's RMS."""
        n_actions = self.table.shape[1]
        key = (batch.obs * n_actions + batch.actions).tolist()
        boot = np.where(batch.episode_end, 0.0, self.gamma).tolist()
        reward = batch.r_leader.tolist()
        q = self.table.ravel().tolist()
        a = self.alpha
        sq_td = 0.0
        order = self.rng.permutation(len(key)).tolist()
        if self.expected:  # bootstrap on Σ_b' g(b'|s') Q(s', b'), s' = next state
            nxt_state = batch.next_obs.tolist()
            g = br.policy.tolist()
            cols = range(n_actions)
            for k in order:
                i, s2 = key[k], nxt_state[k]
                row, base = g[s2], s2 * n_actions
                v2 = sum(row[c] * q[base + c] for c in cols)
                td = reward[k] + boot[k] * v2 - q[i]
                q[i] += a * td
                sq_td += td * td
        elif self.state_values == "td":  # also V(s) += α (r + γ V(s') − V(s))
            nxt = key[1:] + [0]
            state, nxt_state = batch.obs.tolist(), batch.next_obs.tolist()
            v = self.state_table.tolist()
            for k in order:
                i = key[k]
                td = reward[k] + boot[k] * q[nxt[k]] - q[i]
                q[i] += a * td
                sq_td += td * td
                j = state[k]
                v[j] += a * (reward[k] + boot[k] * v[nxt_state[k]] - v[j])
            self.state_table = np.asarray(v)
        else:
            nxt = key[1:] + [0]
            for k in order:
                i = key[k]
                td = reward[k] + boot[k] * q[nxt[k]] - q[i]
                q[i] += a * td
                sq_td += td * td
        self.table = np.asarray(q).reshape(self.table.shape)
        return {"critic_td_rms": math.sqrt(sq_td / max(len(key), 1))}

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """``V_L(s)``: under the published policy, or the learned table (``state_values``)."""
        if self.state_values == "td":
            return self.state_table[states]
        return super().v(states, br)

    def state_dict(self) -> dict[str, Any]:
        """The tables."""
        return {"table": self.table.copy(), "state_table": self.state_table.copy()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        super().load_state_dict(state)
        if "state_table" in state:
            self.state_table = np.array(state["state_table"], dtype=np.float64)


class MonteCarloCritic(TableCritic):
    """Every-visit Monte Carlo ``Q_L`` and ``V_L`` from one batch (paper Alg. 9).

    ``Q̂(s, b)`` averages the discounted leader returns-to-go of the segments starting at
    ``(s, b)``; ``V̂(s)`` those starting at ``s`` (not ``Σ_b g Q̂``: that is Alg. 9's point).
    Nothing is carried across iterations; unvisited entries are 0.
    """

    def __init__(self, n_states: int, n_actions: int, *, gamma: float = 0.99):
        self.gamma = float(gamma)
        self.table = np.zeros((n_states, n_actions))
        self.state_values = np.zeros(n_states)

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """Replace the averages by those of ``batch`` (Alg. 9)."""
        S, B = self.table.shape
        ret = discounted_reverse_sum(batch.r_leader, self.gamma, batch.episode_end)
        key = batch.obs * B + batch.actions
        n_sb = np.bincount(key, minlength=S * B)
        self.table = (np.bincount(key, weights=ret, minlength=S * B)
                      / np.maximum(n_sb, 1)).reshape(S, B)
        n_s = np.bincount(batch.obs, minlength=S)
        self.state_values = np.bincount(batch.obs, weights=ret, minlength=S) / np.maximum(n_s, 1)
        return {}

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """``V̂_L(s)``: the every-visit average of the returns from ``s``."""
        return self.state_values[states]


class StateValueModelCritic(TableCritic):
    """``Q̂_L(s, b) = r_L^θ(s, b) + γ_L Σ_{s'} p^θ(s'|s, b) V̂_L(s')`` from Monte Carlo state values
    and the leader's own model (``critic="model"`` on tabular problems).

    The leader designs ``r_L^θ`` and ``p^θ`` (it differentiates both in every estimator), so it
    can take the one-step expectation itself and estimate only state values from samples.
    ``V̂_L(s)`` averages the discounted leader returns-to-go of every visit of ``s`` whose
    segment is complete: it ends by termination, or it has at least ``horizon`` steps before
    its time limit (``γ_L^horizon ≤ 10⁻³`` by default), so that truncated returns do not bias
    it. States without such a visit get the mean of the visited ones.

    Why: an every-visit ``Q̂_L(s, b)`` (Alg. 9) averages the very segments from which BC-HG's
    ``∇̂Q_F(s, b)`` is taken; where pairs are visited about once (many actions: tabular tax
    design has 1,250), the product of the two carries their covariance, a bias of the order of
    the estimate itself. Here ``Q̂_L(s, b)`` depends on the sample only through state values
    pooled over all the visits of each next state.

    Args:
        n_states, n_actions: table shape.
        gamma: leader discount γ_L.
        horizon: shortest segment kept (default: the smallest h with ``γ^h ≤ 10⁻³``).
    """

    def __init__(self, n_states: int, n_actions: int, *, gamma: float = 0.99,
                 horizon: int | None = None):
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        self.gamma = float(gamma)
        if horizon is None:
            horizon = 0 if gamma == 0 else math.ceil(math.log(1e-3) / math.log(gamma))
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 0:
            raise ValueError(f"horizon must be an integer >= 0, got {horizon!r}")
        self.horizon = horizon
        self.table = np.zeros((n_states, n_actions))
        self.state_values = np.zeros(n_states)

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """State values from ``batch``, then ``Q̂ = r_L + γ C V̂`` with the model at θ."""
        S = self.table.shape[0]
        ret = discounted_reverse_sum(batch.r_leader, self.gamma, batch.episode_end)
        steps = discounted_reverse_sum(np.ones(len(ret)), 1.0, batch.episode_end)
        ends_terminal = discounted_reverse_sum(
            (batch.episode_end & batch.terminated).astype(np.float64), 1.0,
            batch.episode_end) > 0
        keep = ends_terminal | (steps >= self.horizon)
        n_s = np.bincount(batch.obs[keep], minlength=S)
        sums = np.bincount(batch.obs[keep], weights=ret[keep], minlength=S)
        seen = n_s > 0
        fill = sums.sum() / n_s.sum() if seen.any() else 0.0
        self.state_values = np.where(seen, sums / np.maximum(n_s, 1), fill)
        model = br.problem.tabular_model()
        self.table = model.r_leader + self.gamma * model.continuation_values(self.state_values)
        return {"critic_states_seen": float(seen.mean())}


def stacked_sarsa_pass(tables: np.ndarray, batch: Batch, order: np.ndarray, alpha: np.ndarray,
                       gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`SarsaCritic.update` (sampled bootstrap) of N runs at once.

    The pass over a batch is sequential by definition (an update may read an entry changed
    just before), so this loops over the transition index ``k`` and updates all N runs
    together at each ``k``: the same scalar arithmetic in the same order as the single pass,
    hence the same tables bit for bit.

    Args:
        tables: ``(N, S, B)`` SARSA tables (not modified).
        batch: the N runs' batches one after the other, ``n`` transitions each, states
            numbered ``run·S + s``.
        order: ``(N, n)`` each run's pass order (its ``rng.permutation(n)``).
        alpha: ``(N,)`` step sizes α_SA.
        gamma: the leader's discount γ_L.
    Returns:
        ``(tables, td_rms)``: the updated ``(N, S, B)`` tables and each run's TD-error RMS.
    """
    n_runs, S, B = tables.shape
    n = order.shape[1]
    q = tables.reshape(-1).copy()
    key = batch.obs * B + batch.actions  # run·S·B + s·B + b
    first = np.arange(n_runs) * n
    nxt = np.empty_like(key)
    nxt[:-1] = key[1:]
    nxt[first + n - 1] = first // n * S * B  # a run's last transition: key 0 of its own table
    boot = np.where(batch.episode_end, 0.0, gamma)
    pick = (order + first[:, None]).T  # (n, N): transition of each run at step k
    keys, nxts = key[pick], nxt[pick]
    rewards, boots = batch.r_leader[pick], boot[pick]
    alpha = np.asarray(alpha, dtype=np.float64)
    sq_td = np.zeros(n_runs)
    for k in range(n):
        i = keys[k]
        qi = q[i]
        td = rewards[k] + boots[k] * q[nxts[k]] - qi
        q[i] = qi + alpha * td
        sq_td += td * td
    rms = np.sqrt(sq_td / max(n, 1))  # IEEE sqrt: the same bits as math.sqrt of one run
    # (not a power: numpy's vectorised power on AVX-512 differs from C pow in the last bit)
    return q.reshape(n_runs, S, B), rms
