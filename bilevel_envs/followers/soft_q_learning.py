"""Tabular soft Q-learning: a follower that learns its soft best response from its own experience.

The follower of a tabular configurable MDP keeps a table ``Q(s, b)`` and, at every
:meth:`SoftQLearning.solve` (θ has changed), plays ``steps_per_leader_update`` transitions of
the follower-facing env at the current θ with its Boltzmann policy and updates, per transition
``(s, b, r, s')`` (soft Q-learning; Haarnoja et al. 2017, tabular form)::

    target = r                                  if s is terminal (acting there ends the episode)
           = r + γ_F · β log Σ_{b'} exp(Q(s', b')/β)          otherwise (also at the time limit)
    Q(s, b) ← Q(s, b) + α_n · (target − Q(s, b)),
    α_n = max(lr_min, lr · (1 + c (n − 1))^−ω),     n = n(s, b) the visit count (this one included)

(``ω = lr_power``, ``c = lr_decay``). ``ω ∈ (1/2, 1]`` satisfies Robbins–Monro; ``ω = 1`` with
``c ∝ 1 − γ`` is the "rescaled linear" rate that makes Q-learning's error decay at the
``1/((1−γ)^k √n)`` rate instead of the ``1/n^{1−γ}`` of ``α = 1/n`` (Even-Dar & Mansour 2003;
Li et al. 2021). The default ``c = (1 − γ_F)/4`` was the best of the grid we measured on
Four-Rooms (γ_F = 0.9 and 0.99, β = 0.1; tests/envs/test_learning_followers.py). The fixed
point of the expected update is the soft Bellman equation (paper eq. 18), so at a fixed θ the
table converges to the exact ``Q_F`` on every pair that keeps being visited.
``steps_per_leader_update`` is the two-timescale ratio: follower transitions per leader update.

The table starts optimistic by default (``(max r_F + β log B)/(1 − γ_F)``, an upper bound on
``Q_F``): with a pessimistic start (zeros, ``Q_F`` ≈ 1.2 above it) and β = 0.1 the Boltzmann
behaviour stops trying the actions it has not tried yet (measured on Four-Rooms, γ_F = 0.9,
3 random θ: 33–45 % of the pairs unvisited after 10^5 steps and ``V(S)`` 0.31–0.38 below
``V_F(S)``, against no unvisited pair and an error ≤ 1.1e-3 with the optimistic start).

Behaviour: ``softmax(Q(s, ·)/β)``, mixed with a uniform action w.p. ``epsilon`` (soft
Q-learning is off-policy, so the target is unchanged). The follower's episodes continue across
solves (an online learner): an episode starts at ``problem.sample_initial_states`` and ends when
a terminal state is acted in or after ``max_episode_steps`` (default: the problem's).

The simulator is the problem's own law at the current θ — next states from
``problem.sampling_transitions()`` (the matrix its ``transition`` samples from), rewards and
terminal flags from ``problem.tabular_model()`` — walked with scalar code, as
:func:`~bilevel_envs.wrappers.best_response._tabular_walk` does (a numpy call per step would cost
~20 µs). The follower only reads the entries of the transitions it experiences.

Publishing: with ``publish=True`` it publishes its *estimates*: ``policy = softmax(Q/β)``,
``soft_q = Q``, ``soft_v = β logsumexp(Q/β)``; with ``publish=False`` (black-box mode) all three
are ``None`` and the leader only sees its actions (:meth:`act` samples the same Boltzmann policy).
:meth:`observe` learns from the leader's batches as well (same update).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import numpy as np

from bilevel_envs.followers.soft_value_iteration import soft_value
from bilevel_envs.utils import check_beta

__all__ = ["SoftQLearning"]


def _check_number(name: str, value: Any, *, low: float = 0.0, high: float = np.inf,
                  integer: bool = False) -> float | int:
    if isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    if integer:
        if not isinstance(value, (int, np.integer)) or not low <= value <= high:
            raise ValueError(f"{name} must be an integer in [{low:g}, {high:g}], got {value!r}")
        return int(value)
    if not isinstance(value, (int, float, np.number)) or not np.isfinite(value) \
            or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}")
    return float(value)


class SoftQLearning:
    """Tabular soft Q-learning follower at temperature β (module docstring for the update).

    Args:
        beta: entropy temperature β > 0 (the Boltzmann policy is ``softmax(Q/β)``).
        steps_per_leader_update: own transitions per :meth:`solve` (two-timescale ratio).
        lr: learning-rate scale ``lr ∈ (0, 1]`` (module docstring for ``α_n``).
        lr_power: decay exponent ``ω ∈ [0, 1]`` (0: constant ``lr``).
        lr_decay: ``c ≥ 0`` of ``(1 + c (n − 1))^−ω``, or ``"auto"`` = ``(1 − γ_F)/4``.
        lr_min: learning-rate floor (> 0 keeps tracking a θ that moves).
        epsilon: probability of a uniform behaviour action (0: pure Boltzmann behaviour).
        init_value: constant start of the table, or ``"optimistic"``
            (``(max r_F + β log B)/(1 − γ_F)`` at the first θ; module docstring).
        init_std: plus ``init_std · N(0, 1)`` noise (0: none).
        warmup_steps: extra transitions on the first solve only.
        publish: publish ``policy``, ``soft_q`` and ``soft_v`` (``False``: black-box follower).
        gamma: follower discount (default: the problem's ``gamma_follower``).
        max_episode_steps: episode time limit (default: the problem's ``max_episode_steps``).
        seed: seed of the follower's own generator (actions, next states, starts, init).

    Attributes:
        q: ``(S, B)`` table (``None`` before the first solve).
        counts: ``(S, B)`` visit counts.
        total_steps: transitions learned from so far (own and observed).

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> fol = SoftQLearning(beta=0.1, steps_per_leader_update=2000, seed=0)
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.1, follower=fol)
        >>> int(fol.total_steps)
        2000
    """

    def __init__(self, beta: float, steps_per_leader_update: int = 1000, *, lr: float = 1.0,
                 lr_power: float = 1.0, lr_decay: float | str = "auto", lr_min: float = 0.0,
                 epsilon: float = 0.0, init_value: float | str = "optimistic",
                 init_std: float = 0.0, warmup_steps: int = 0, publish: bool = True,
                 gamma: float | None = None, max_episode_steps: int | None = None,
                 seed: int | None = None):
        self.beta = check_beta(beta)
        self.steps_per_leader_update = _check_number(
            "steps_per_leader_update", steps_per_leader_update, integer=True)
        self.lr = _check_number("lr", lr, high=1.0)
        if self.lr <= 0:
            raise ValueError(f"lr must be in (0, 1], got {lr!r}")
        self.lr_power = _check_number("lr_power", lr_power, high=1.0)
        if isinstance(lr_decay, str) and lr_decay == "auto":
            self.lr_decay: float | str = "auto"
        else:
            self.lr_decay = _check_number("lr_decay", lr_decay)
        self.lr_min = _check_number("lr_min", lr_min, high=1.0)
        self.epsilon = _check_number("epsilon", epsilon, high=1.0)
        if not (isinstance(init_value, str) and init_value == "optimistic"):
            init_value = _check_number("init_value", init_value, low=-np.inf)
        self.init_value = init_value
        self.init_std = _check_number("init_std", init_std)
        self.warmup_steps = _check_number("warmup_steps", warmup_steps, integer=True)
        if not isinstance(publish, (bool, np.bool_)):
            raise ValueError(f"publish must be True or False, got {publish!r}")
        self.publish = bool(publish)
        self.gamma = None if gamma is None else _check_number("gamma", gamma, high=1.0 - 1e-12)
        self.max_episode_steps = None if max_episode_steps is None else _check_number(
            "max_episode_steps", max_episode_steps, low=1, integer=True)
        self._rng = np.random.default_rng(seed)
        self.q: np.ndarray | None = None
        self.counts: np.ndarray | None = None
        self.total_steps = 0
        self.n_solves = 0
        self._state: int | None = None  # current state of the follower's own episode
        self._t = 0
        self._gamma_used: float | None = None
        self._sim_key: Any = None
        self._sim: tuple | None = None

    def describe(self) -> str:
        """``soft-q-learning`` plus ``(black-box)`` when it publishes nothing."""
        return "soft-q-learning" + ("" if self.publish else " (black-box)")

    # ------------------------------------------------------------------ protocol
    def solve(self, problem: Any) -> None:
        """θ changed: learn from ``steps_per_leader_update`` own transitions at the new θ."""
        problem = getattr(problem, "unwrapped", problem)
        model = problem.tabular_model()
        S, B = model.n_states, model.n_actions
        gamma = float(problem.gamma_follower if self.gamma is None else self.gamma)
        if self.q is None or self.q.shape != (S, B):
            init = (float(model.r_follower.max() + self.beta * np.log(B)) / (1.0 - gamma)
                    if self.init_value == "optimistic" else float(self.init_value))
            self.q = np.full((S, B), init)
            if self.init_std > 0:
                self.q += self.init_std * self._rng.standard_normal((S, B))
            self.counts = np.zeros((S, B), dtype=np.int64)
            self._state, self._t = None, 0
        n = self.steps_per_leader_update + (self.warmup_steps if self.n_solves == 0 else 0)
        self._gamma_used = gamma
        limit = int(self.max_episode_steps or problem.max_episode_steps)
        if n > 0:
            self._learn_online(problem, model, n, gamma, limit)
        self.n_solves += 1
        self._refresh()

    def observe(self, batch: Any) -> None:
        """Learn from the leader's batch (same update, in the batch's order).

        The batch's ``obs``, ``actions``, ``r_follower``, ``next_obs`` and ``terminated`` are
        used; the target bootstraps unless the transition ``terminated``.
        """
        if self.q is None:
            raise RuntimeError("call solve(problem) before observe(batch)")
        S, B = self.q.shape
        q, cnt = self.q.ravel().tolist(), self.counts.ravel().tolist()
        beta, inv_beta, gamma = self.beta, 1.0 / self.beta, self._gamma_used
        lr, power, lr_min, decay = self.lr, self.lr_power, self.lr_min, self._decay(gamma)
        # sequential by definition (each update changes the next target): a tight scalar loop
        for s, b, r, s2, term in zip(np.asarray(batch.obs).tolist(),
                                     np.asarray(batch.actions).tolist(),
                                     np.asarray(batch.r_follower, dtype=np.float64).tolist(),
                                     np.asarray(batch.next_obs).tolist(),
                                     np.asarray(batch.terminated).tolist()):
            if term:
                target = r
            else:
                row = q[s2 * B:s2 * B + B]
                m = max(row)
                target = r + gamma * (m + beta * math.log(
                    sum(math.exp((x - m) * inv_beta) for x in row)))
            k = s * B + b
            c = cnt[k] + 1
            cnt[k] = c
            alpha = max(lr * (1.0 + decay * (c - 1)) ** -power, lr_min)
            q[k] += alpha * (target - q[k])
        self.q = np.asarray(q, dtype=np.float64).reshape(S, B)
        self.counts = np.asarray(cnt, dtype=np.int64).reshape(S, B)
        self.total_steps += len(np.asarray(batch.obs))
        self._refresh()

    def act(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample ``b ~ softmax(Q(s, ·)/β)`` for a batch of int states (inverse CDF on ``rng``)."""
        if self.q is None:
            raise RuntimeError("call solve(problem) before act()")
        states = np.asarray(states, dtype=np.int64)
        u = rng.random(len(states))
        return (u[:, None] >= self._cum[states]).sum(axis=1).astype(np.int64)

    @property
    def policy(self) -> np.ndarray | None:
        """``softmax(Q/β)`` ``(S, B)``, or ``None`` in black-box mode."""
        return self._pi if self.publish and self.q is not None else None

    def policy_readout(self) -> np.ndarray | None:
        """The Boltzmann policy it acts with, ``(S, B)``, published or not: an experimenter's
        read-out for *evaluation* (the exact objective under the follower the leader faces);
        leaders must not use it (they see :attr:`policy`, ``None`` in black-box mode)."""
        return None if self.q is None else self._pi

    @property
    def soft_q(self) -> np.ndarray | None:
        """The table ``Q`` ``(S, B)`` (an estimate of ``Q_F``), or ``None`` in black-box mode."""
        return self.q if self.publish else None

    @property
    def soft_v(self) -> np.ndarray | None:
        """``β logsumexp(Q/β)`` ``(S,)``, or ``None`` in black-box mode."""
        return self._v if self.publish and self.q is not None else None

    def state_dict(self) -> dict:
        """Table, counts, own episode position and generator: everything its future depends on."""
        return {"q": None if self.q is None else self.q.copy(),
                "counts": None if self.counts is None else self.counts.copy(),
                "state": self._state, "t": int(self._t), "total_steps": int(self.total_steps),
                "n_solves": int(self.n_solves), "gamma_used": self._gamma_used,
                "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` exactly (no learning)."""
        self.q = None if state["q"] is None else np.array(state["q"], dtype=np.float64)
        self.counts = None if state["counts"] is None else np.array(state["counts"], np.int64)
        self._state = None if state["state"] is None else int(state["state"])
        self._t, self.total_steps = int(state["t"]), int(state["total_steps"])
        self.n_solves, self._gamma_used = int(state["n_solves"]), state["gamma_used"]
        self._rng.bit_generator.state = state["rng"]
        if self.q is not None:
            self._refresh()

    # ------------------------------------------------------------------ internals
    def _decay(self, gamma: float) -> float:
        return (1.0 - gamma) / 4.0 if isinstance(self.lr_decay, str) else float(self.lr_decay)

    def _refresh(self) -> None:
        self._v, self._pi = soft_value(self.q, self.beta)
        self._cum = np.cumsum(self._pi, axis=1)
        self._cum[:, -1] = 1.0  # u < 1 always picks an action

    def _simulator(self, problem: Any, B: int) -> tuple:
        """Per-(s, b) cumulative next-state tables of the simulator's matrix (cached)."""
        P = problem.sampling_transitions()
        if self._sim_key is not P:
            P = P.tocsr() if hasattr(P, "tocsr") else P
            lengths = np.diff(P.indptr)
            if np.any(lengths == 0):
                raise ValueError("sampling_transitions has an empty row (no next state)")
            row_of = np.repeat(np.arange(P.shape[0]), lengths)
            cum = np.cumsum(P.data)
            base = np.concatenate(([0.0], cum))[P.indptr[:-1]]
            total = cum[P.indptr[1:] - 1] - base
            within = (cum - base[row_of]) / total[row_of]
            within[P.indptr[1:] - 1] = 1.0
            self._sim = (within.tolist(), P.indptr[:-1].tolist(), (P.indptr[1:] - 1).tolist(),
                         P.indices.tolist())
            self._sim_key = P
        return self._sim

    def _learn_online(self, problem: Any, model: Any, n: int, gamma: float, limit: int) -> None:
        S, B = self.q.shape
        within, lo, hi, nxt = self._simulator(problem, B)
        rf = model.r_follower.ravel().tolist()
        terminal = model.terminal.tolist()
        q, cnt = self.q.ravel().tolist(), self.counts.ravel().tolist()
        rng = self._rng
        u = rng.random((n, 3)).tolist()  # action, next state, exploration draws
        starts: list[int] = []
        beta, inv_beta = self.beta, 1.0 / self.beta
        lr, power, lr_min, eps = self.lr, self.lr_power, self.lr_min, self.epsilon
        decay = self._decay(gamma)
        s, t = self._state, self._t
        # v[s] = β log Σ_b exp(Q(s, b)/β), kept up to date (only the updated row changes)
        v = [m + beta * math.log(sum(math.exp((x - m) * inv_beta) for x in row))
             for row in (q[i * B:i * B + B] for i in range(S)) for m in (max(row),)]
        # Soft Q-learning is sequential by definition (each update changes the next action's
        # law and the next target), so this is a tight scalar loop on Python floats.
        for u_a, u_s, u_e in u:
            if s is None:
                if not starts:
                    starts = problem.sample_initial_states(64, rng).tolist()[::-1]
                s, t = starts.pop(), 0
            base = s * B
            if eps > 0.0 and u_e < eps:
                b = min(int(u_a * B), B - 1)
            else:  # inverse CDF of softmax(Q(s, ·)/β) = exp((Q(s, ·) − v[s])/β)
                vs, b, acc = v[s], B - 1, 0.0
                for j in range(B - 1):
                    acc += math.exp((q[base + j] - vs) * inv_beta)
                    if u_a < acc:
                        b = j
                        break
            k = base + b
            if terminal[s]:
                target = rf[k]
                s2 = None
            else:
                s2 = nxt[bisect_left(within, u_s, lo[k], hi[k])]
                target = rf[k] + gamma * v[s2]
            c = cnt[k] + 1
            cnt[k] = c
            alpha = max(lr * (1.0 + decay * (c - 1)) ** -power, lr_min)
            q[k] += alpha * (target - q[k])
            row = q[base:base + B]
            m = max(row)
            v[s] = m + beta * math.log(sum(math.exp((x - m) * inv_beta) for x in row))
            t += 1
            s = None if (s2 is None or t >= limit) else s2
        self._state, self._t = s, t
        self.q = np.asarray(q, dtype=np.float64).reshape(S, B)
        self.counts = np.asarray(cnt, dtype=np.int64).reshape(S, B)
        self.total_steps += n
