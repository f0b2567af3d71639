"""Tabular soft Q-learning of the follower of a leader-follower Markov game (e.g. the toy game).

The follower of a tabular game sees ``(s, a)`` (the state and the leader's action of the round)
and keeps a table ``Q(s, a, b)``. At every :meth:`GameSoftQLearning.solve` (the leader's policy
``f`` has changed) it plays ``steps_per_leader_update`` rounds of the game against the leader's
current policy, with its Boltzmann policy ``softmax_b Q(s, a, ·)/β``, and updates, per round
``(s, a, b, r_F, s')`` followed by the leader's next action ``a' ~ f(·|s')``::

    target = r_F + γ_F · β log Σ_{b'} exp(Q(s', a', b')/β)
    Q(s, a, b) ← Q(s, a, b) + α_n · (target − Q(s, a, b))

with the step sizes of :class:`~bilevel_envs.followers.soft_q_learning.SoftQLearning`
(``α_n = max(lr_min, lr · (1 + c (n − 1))^−ω)``, ``n`` the visit count of ``(s, a, b)``). The
target uses the leader action the follower *observes* next, not the leader's policy: its
expectation over ``a'`` is ``Σ_{a'} f(a'|s') V(s', a')``, the paper's bootstrap of eq. 32, so at
a fixed ``f`` the table converges to the exact paper-form ``Q_F`` of
:class:`~bilevel_envs.followers.soft_q_iteration.SoftQIterationFollower` on every triple that
keeps being visited. The update never reads ``f``: ``f`` only plays the leader's part in the
rounds the follower experiences (as the leader would in the game). The games never terminate; an
episode is truncated after ``max_episode_steps`` rounds (default: the game's ``max_cycles``)
and the truncated round still bootstraps. The follower's episodes continue across solves (at a
solve the pending leader action is drawn afresh from the new ``f``).

The table starts optimistic by default (``(max r_F + β log B)/(1 − γ_F)``; see
:class:`~bilevel_envs.followers.soft_q_learning.SoftQLearning` for why). Rounds are walked with
scalar code: the update is sequential by definition (each one changes the next action's law).

Publishing (``publish=True``, default): ``policy = softmax_b(Q/β)`` ``(S, A, B)``,
``soft_q = Q``, ``soft_v = β logsumexp_b(Q/β)`` ``(S, A)``: its *estimates*; ``publish=False``:
none of them (a black-box follower). :meth:`observe` learns from the leader's episodes
(:class:`~bilevel_envs.wrappers.game_best_response.GameBatch`) with the same update, using each
round's successor round for ``a'`` (the last round of an episode has none and is skipped).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import Any

import numpy as np

from bilevel_envs.followers.soft_q_iteration import leader_policy_to_answer, logsumexp
from bilevel_envs.followers.soft_q_learning import SoftQLearning

__all__ = ["GameSoftQLearning"]


def _game_model(game: Any) -> Any:
    game = getattr(game, "unwrapped", game)
    return getattr(game, "model", game)


def _cumulative_rows(p: np.ndarray) -> list[list[float]]:
    """Rows of a row-stochastic array as cumulative lists ending in exactly 1.0 (inverse CDF)."""
    cum = np.cumsum(p.reshape(-1, p.shape[-1]), axis=1)
    cum[:, -1] = 1.0
    return cum.tolist()


class GameSoftQLearning(SoftQLearning):
    """Tabular soft Q-learning follower of a tabular game (module docstring for the update).

    Takes the arguments of :class:`~bilevel_envs.followers.soft_q_learning.SoftQLearning`
    (``beta``, ``steps_per_leader_update`` = rounds per leader update, ``lr``, ``lr_power``,
    ``lr_decay``, ``lr_min``, ``epsilon``, ``init_value``, ``init_std``, ``warmup_steps``,
    ``publish``, ``gamma`` (default: the game's ``gamma_follower``), ``max_episode_steps``
    (default: the game's ``max_cycles``), ``seed``).

    Attributes:
        q: ``(S, A, B)`` table (``None`` before the first solve).
        counts: ``(S, A, B)`` visit counts.
        leader_policy: ``(S, A)``, the leader policy of the last solve (the game's rounds are
            played against it; the update itself never reads it).
        bootstrap: ``"paper"``: the Bellman form whose fixed point it learns (eq. 32).

    Example:
        >>> import numpy as np
        >>> from bilevel_envs.games import toy_game_v0
        >>> fol = GameSoftQLearning(beta=0.05, steps_per_leader_update=500, seed=0)
        >>> fol.solve(toy_game_v0.raw_env(reward=2), np.full((3, 2), 0.5))
        >>> fol.q.shape, int(fol.total_steps)
        ((3, 2, 3), 500)
    """

    #: the fixed point it learns is the paper's form of the follower's soft Bellman equation
    bootstrap = "paper"

    def __init__(self, beta: float, steps_per_leader_update: int = 1000, **kwargs: Any):
        super().__init__(beta, steps_per_leader_update, **kwargs)
        self.leader_policy: np.ndarray | None = None
        self._model_key: Any = None
        self._tables: tuple | None = None

    def describe(self) -> str:
        """``soft-q-learning (game)`` plus ``(black-box)`` when it publishes nothing."""
        return "soft-q-learning (game)" + ("" if self.publish else " (black-box)")

    # ------------------------------------------------------------------ protocol
    def solve(self, game: Any, leader_policy: Any = None) -> None:
        """The leader's policy changed: play and learn from ``steps_per_leader_update`` rounds.

        Args:
            game: the tabular game (anything with a ``model`` holding ``P``, ``r_follower``,
                ``mu0``, and ``gamma_follower`` and ``max_cycles``), or such a model if the
                follower was built with ``gamma`` and ``max_episode_steps``.
            leader_policy: ``(S, A)`` probabilities ``f``; the previous one if ``None``.

        Raises:
            ValueError: if the leader policy has the wrong shape or is not a distribution, or
                a bare model comes without the follower's ``gamma`` and ``max_episode_steps``.
        """
        raw = getattr(game, "unwrapped", game)
        model = _game_model(raw)
        S, A, B = model.r_follower.shape
        self.leader_policy = leader_policy_to_answer(leader_policy, self.leader_policy,
                                                     (S, A)).copy()
        gamma = self.gamma if self.gamma is not None else getattr(raw, "gamma_follower", None)
        limit = self.max_episode_steps or getattr(raw, "max_cycles", None)
        if gamma is None or limit is None:
            raise ValueError("a bare game model has no gamma_follower or max_cycles: pass the "
                             "game, or build the follower with gamma= and max_episode_steps=")
        gamma, limit = float(gamma), int(limit)
        if self.q is None or self.q.shape != (S, A, B):
            init = (float(model.r_follower.max() + self.beta * np.log(B)) / (1.0 - gamma)
                    if self.init_value == "optimistic" else float(self.init_value))
            self.q = np.full((S, A, B), init)
            if self.init_std > 0:
                self.q += self.init_std * self._rng.standard_normal((S, A, B))
            self.counts = np.zeros((S, A, B), dtype=np.int64)
            self._state, self._t = None, 0
        n = self.steps_per_leader_update + (self.warmup_steps if self.n_solves == 0 else 0)
        self._gamma_used = gamma
        if n > 0:
            self._play(model, n, gamma, limit)
        self.n_solves += 1
        self._refresh()

    def observe(self, batch: Any) -> None:
        """Learn from the leader's episodes (a ``GameBatch``): rounds ``t < T − 1`` in order,
        with ``a'`` the leader's action of round ``t + 1``."""
        if self.q is None:
            raise RuntimeError("call solve(game, leader_policy) before observe(batch)")
        S, A, B = self.q.shape
        q, cnt = self.q.ravel().tolist(), self.counts.ravel().tolist()
        beta, inv_beta, gamma = self.beta, 1.0 / self.beta, self._gamma_used
        lr, power, lr_min, decay = self.lr, self.lr_power, self.lr_min, self._decay(gamma)
        s_all = np.asarray(batch.obs, dtype=np.int64)
        a_all = np.asarray(batch.leader_actions, dtype=np.int64)
        b_all = np.asarray(batch.follower_actions, dtype=np.int64)
        r_all = np.asarray(batch.r_follower, dtype=np.float64)
        nxt = np.asarray(batch.next_obs, dtype=np.int64)
        rounds = zip(s_all[:, :-1].ravel().tolist(), a_all[:, :-1].ravel().tolist(),
                     b_all[:, :-1].ravel().tolist(), r_all[:, :-1].ravel().tolist(),
                     nxt[:, :-1].ravel().tolist(), a_all[:, 1:].ravel().tolist())
        # sequential by definition (each update changes the next target): a tight scalar loop
        for s, a, b, r, s2, a2 in rounds:
            row = q[(s2 * A + a2) * B:(s2 * A + a2) * B + B]
            m = max(row)
            target = r + gamma * (m + beta * math.log(sum(math.exp((x - m) * inv_beta)
                                                          for x in row)))
            k = (s * A + a) * B + b
            c = cnt[k] + 1
            cnt[k] = c
            q[k] += max(lr * (1.0 + decay * (c - 1)) ** -power, lr_min) * (target - q[k])
        self.q = np.asarray(q, dtype=np.float64).reshape(S, A, B)
        self.counts = np.asarray(cnt, dtype=np.int64).reshape(S, A, B)
        self.total_steps += s_all[:, :-1].size
        self._refresh()

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample ``b ~ softmax_b Q(s, a, ·)/β`` for follower observations ``(N, 2)``."""
        if self.q is None:
            raise RuntimeError("call solve(game, leader_policy) before act()")
        obs = np.asarray(obs, dtype=np.int64).reshape(-1, 2)
        cum = self._cum[obs[:, 0], obs[:, 1]]
        u = rng.random(len(obs))
        return (u[:, None] >= cum).sum(axis=1).astype(np.int64)

    def state_dict(self) -> dict:
        """:meth:`SoftQLearning.state_dict` plus the leader policy it answered."""
        state = super().state_dict()
        state["leader_policy"] = (None if self.leader_policy is None
                                  else self.leader_policy.copy())
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` exactly (no learning)."""
        lp = state.get("leader_policy")
        self.leader_policy = None if lp is None else np.array(lp, dtype=np.float64)
        super().load_state_dict(state)

    # ------------------------------------------------------------------ internals
    def _refresh(self) -> None:
        q = self.q
        self._v = self.beta * logsumexp(q / self.beta, axis=2)
        self._pi = np.exp((q - self._v[..., None]) / self.beta)
        self._pi /= self._pi.sum(axis=2, keepdims=True)
        self._cum = np.cumsum(self._pi, axis=2)
        self._cum[..., -1] = 1.0  # u < 1 always picks an action

    def _play(self, model: Any, n: int, gamma: float, limit: int) -> None:
        S, A, B = self.q.shape
        if self._model_key is not model:  # the game's tables as inverse-CDF lists (cached)
            self._tables = (_cumulative_rows(model.P), model.r_follower.ravel().tolist(),
                            _cumulative_rows(np.asarray(model.mu0, dtype=np.float64)[None])[0])
            self._model_key = model
        next_cdf, rf, start_cdf = self._tables
        leader_cdf = _cumulative_rows(self.leader_policy)
        q, cnt = self.q.ravel().tolist(), self.counts.ravel().tolist()
        beta, inv_beta = self.beta, 1.0 / self.beta
        lr, power, lr_min, eps = self.lr, self.lr_power, self.lr_min, self.epsilon
        decay = self._decay(gamma)
        # v[s·A + a] = β log Σ_b exp(Q(s, a, b)/β), kept up to date (one entry per update)
        v = [m + beta * math.log(sum(math.exp((x - m) * inv_beta) for x in row))
             for row in (q[i * B:i * B + B] for i in range(S * A)) for m in (max(row),)]
        # per round: start state, leader's action at a start, follower, next state, exploration,
        # leader's next action
        u = self._rng.random((n, 6)).tolist()
        s, t = self._state, self._t
        a = None if s is None else bisect_left(leader_cdf[s], u[0][1])
        for u_0, u_a, u_b, u_s, u_e, u_n in u:
            if s is None:
                s, t = bisect_left(start_cdf, u_0), 0
                a = bisect_left(leader_cdf[s], u_a)
            base = (s * A + a) * B
            if eps > 0.0 and u_e < eps:
                b = min(int(u_b * B), B - 1)
            else:  # inverse CDF of softmax(Q(s, a, ·)/β) = exp((Q(s, a, ·) − v)/β)
                vsa, b, acc = v[s * A + a], B - 1, 0.0
                for j in range(B - 1):
                    acc += math.exp((q[base + j] - vsa) * inv_beta)
                    if u_b < acc:
                        b = j
                        break
            k = base + b
            s2 = bisect_left(next_cdf[k], u_s)
            a2 = bisect_left(leader_cdf[s2], u_n)  # observed next round, bootstraps this one
            target = rf[k] + gamma * v[s2 * A + a2]
            c = cnt[k] + 1
            cnt[k] = c
            q[k] += max(lr * (1.0 + decay * (c - 1)) ** -power, lr_min) * (target - q[k])
            row = q[base:base + B]
            m = max(row)
            v[s * A + a] = m + beta * math.log(sum(math.exp((x - m) * inv_beta) for x in row))
            t += 1
            if t >= limit:
                s = None
            else:
                s, a = s2, a2
        self._state, self._t = s, t
        self.q = np.asarray(q, dtype=np.float64).reshape(S, A, B)
        self.counts = np.asarray(cnt, dtype=np.int64).reshape(S, A, B)
        self.total_steps += n
