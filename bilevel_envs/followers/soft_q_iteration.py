"""Tabular soft Q-iteration of the follower against a fixed leader policy (paper eqs. 25, 32).

In a two-player Markov game the follower's soft-optimal action value given the leader's
policy ``f`` is the fixed point of (paper eq. 32)

    Q_F(s, a, b) = r_F(s, a, b) + γ_F Σ_{s'} p(s'|s, a, b) U(s'),

with the *paper's* bootstrap (the optimal Bellman operator of eq. 32, ``bootstrap="paper"``)

    U(s') = Σ_{a'} f(a'|s') · β log Σ_{b'} exp(Q_F(s', a', b') / β),

or the authors' code form (``bootstrap="official"``), which puts the
leader expectation inside the log-sum-exp,

    U(s') = β log Σ_{b'} exp(Σ_{a'} f(a'|s') Q_F(s', a', b') / β).

The paper's toy-game numbers (baseline f(0|A) ≈ 0.4, optimum 59.5) come from the official form.
In both cases the follower's policy and soft value are ``g(b|s, a) = softmax_b Q_F(s, a, ·)/β``
and ``V_F(s, a) = β log Σ_b exp(Q_F(s, a, b)/β)`` (eq. 25). Theorem 2 holds for the paper's form.

Two solvers, both vectorised over all ``(s, a, b)`` (no Python loop over states or actions):
``method="policy_iteration"`` (default) alternates an exact entropy-regularised policy
evaluation (one ``(SAB × SAB)`` linear solve) with the Boltzmann improvement and converges in a
handful of steps; ``method="value_iteration"`` repeats the backup above (the authors' solver; a
small ``max_iterations`` gives the k-step "sub-optimal" follower). Both stop at
``max|ΔQ| < tol · max(1, max|Q|)`` or after ``max_iterations``, and warm-start from the
previous ``Q`` unless
``warm_start=False``.

:func:`game_soft_policy_evaluation` gives the exact soft value of an arbitrary follower policy
against a fixed leader policy (paper form), :func:`game_follower_optimality_gap` the follower's
sub-optimality; the k-step follower of the authors' journal extension is
:class:`~bilevel_envs.followers.kstep.KStepSoftQIterationFollower`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bilevel_envs.followers.soft_value_iteration import check_policy, entropy_bonus
from bilevel_envs.utils import check_beta

__all__ = ["GameFollowerGap", "SoftQIterationFollower", "game_follower_optimality_gap",
           "game_soft_policy_evaluation", "leader_policy_to_answer", "soft_q_backup"]

BOOTSTRAPS = ("paper", "official")


def logsumexp(x: np.ndarray, axis: int, keepdims: bool = False) -> np.ndarray:
    """Stable ``log Σ exp`` along ``axis`` (plain numpy; scipy's is slow on tiny arrays)."""
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


METHODS = ("policy_iteration", "value_iteration")


def leader_policy_to_answer(given: Any, previous: np.ndarray | None,
                            shape: tuple[int, int]) -> np.ndarray:
    """The leader policy a game follower's ``solve`` answers: ``given`` (checked: shape
    ``(S, A)``, rows that are distributions) or, if ``None``, the ``previous`` one.

    Raises:
        ValueError: no policy on a first solve, a bad shape or rows that are not distributions.
    """
    if given is None:
        if previous is None:
            raise ValueError("leader_policy must be given on the first solve")
        return previous
    f = np.asarray(given, dtype=np.float64)
    if f.shape != shape:
        raise ValueError(f"leader_policy must have shape {shape}, got {f.shape}")
    if np.any(f < 0) or not np.allclose(f.sum(axis=1), 1.0, atol=1e-8):
        raise ValueError("leader_policy rows must be probability distributions")
    return f


def soft_q_backup(q: np.ndarray, leader_policy: np.ndarray, r_follower: np.ndarray,
                  P: np.ndarray, gamma: float, beta: float, bootstrap: str = "paper") -> np.ndarray:
    """One synchronous soft Bellman backup (paper eq. 32 or the official form).

    Args:
        q: ``(S, A, B)`` current ``Q_F``.
        leader_policy: ``(S, A)`` leader policy ``f(a|s)``.
        r_follower: ``(S, A, B)`` follower reward.
        P: ``(S, A, B, S)`` transition tensor.
        gamma: follower discount γ_F.
        beta: entropy temperature β.
        bootstrap: ``"paper"`` (E_a' outside the log-sum-exp) or ``"official"`` (inside).

    Returns:
        ``(S, A, B)`` backed-up ``Q_F``.
    """
    if bootstrap == "paper":
        u = (leader_policy * beta * logsumexp(q / beta, axis=2)).sum(axis=1)
    else:
        u = beta * logsumexp(np.einsum("sa,sab->sb", leader_policy, q) / beta, axis=1)
    return r_follower + gamma * (P @ u)


class SoftQIterationFollower:
    """The follower's soft best response in a tabular leader-follower game.

    Args:
        beta: entropy temperature β > 0 (paper: 0.05).
        gamma: follower discount γ_F (paper: 0.99).
        bootstrap: ``"paper"`` (default, eq. 32) or ``"official"`` (authors' code form).
        method: ``"policy_iteration"`` (default) or ``"value_iteration"``.
        tol: stop when ``max|ΔQ| < tol · max(1, max|Q|)`` (relative for large values).
        max_iterations: cap on backups per solve (small values → k-step follower).
        warm_start: start each solve from the previous ``Q`` (else from 0).

    Attributes after :meth:`solve`: ``policy`` ``(S, A, B)``, ``soft_q`` ``(S, A, B)``,
    ``soft_v`` ``(S, A)``, ``iterations`` (backups of the last solve), ``converged``.

    Example:
        >>> from bilevel_envs.games import toy_game_v0
        >>> import numpy as np
        >>> game = toy_game_v0.raw_env(reward=2)
        >>> fol = SoftQIterationFollower(beta=0.05, gamma=0.99)
        >>> fol.solve(game, np.full((3, 2), 0.5))
        >>> fol.policy.shape
        (3, 2, 3)
    """

    #: the exact best response (solved to tolerance)
    exact = True

    def __init__(self, beta: float, gamma: float = 0.99, bootstrap: str = "paper",
                 method: str = "policy_iteration", tol: float = 1e-10,
                 max_iterations: int = 100_000, warm_start: bool = True):
        self.beta = check_beta(beta)
        if not 0.0 <= float(gamma) < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        if bootstrap not in BOOTSTRAPS:
            raise ValueError(f"bootstrap must be one of {BOOTSTRAPS}, got {bootstrap!r}")
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {method!r}")
        self.method = method
        if not float(tol) > 0:
            raise ValueError(f"tol must be > 0, got {tol!r}")
        if int(max_iterations) < 1:
            raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
        self.gamma, self.bootstrap = float(gamma), bootstrap
        self.tol, self.max_iterations, self.warm_start = float(tol), int(max_iterations), warm_start
        self._q: np.ndarray | None = None
        self.leader_policy: np.ndarray | None = None
        self.iterations, self.converged = 0, False

    def solve(self, game: Any, leader_policy: Any = None) -> None:
        """Solve for ``Q_F`` against ``leader_policy`` (``(S, A)`` probabilities).

        Args:
            game: the toy game (anything with a ``model`` holding ``P`` and ``r_follower``),
                or such a model itself.
            leader_policy: ``f(a|s)``; the previous one if ``None``.

        Raises:
            ValueError: if the leader policy has the wrong shape or is not a distribution.
        """
        if hasattr(game, "unwrapped"):
            game = game.unwrapped
        model = getattr(game, "model", game)
        n_s, n_a, n_b = model.r_follower.shape
        f = leader_policy_to_answer(leader_policy, self.leader_policy, (n_s, n_a))
        self.leader_policy = f.copy()
        q = (self._q if self.warm_start and self._q is not None
             and self._q.shape == (n_s, n_a, n_b) else np.zeros((n_s, n_a, n_b)))
        self.converged = False
        step = self._pi_step if self.method == "policy_iteration" else self._vi_step
        prev = np.inf
        for it in range(1, self.max_iterations + 1):
            q_new = step(q, f, model)
            delta = np.max(np.abs(q_new - q))
            q = q_new
            scale = max(1.0, float(np.max(np.abs(q))))
            if delta < self.tol * scale:
                self.converged = True
                break
            # policy iteration converges in finitely many exact steps; a delta that stops
            # shrinking at ~1e-10 is the linear solve's rounding floor, not a lack of progress
            if self.method == "policy_iteration" and delta >= 0.5 * prev and delta < 1e-8 * scale:
                self.converged = True
                break
            prev = delta
        self.iterations = it
        self._set_q(q)

    def _vi_step(self, q, f, model):
        return soft_q_backup(q, f, model.r_follower, model.P, self.gamma, self.beta,
                             self.bootstrap)

    def _pi_step(self, q, f, model):
        """Improve (Boltzmann in Q) then evaluate exactly: ``(I − γ P Π) Q = r + γ P c``."""
        n_s, n_a, n_b = q.shape
        beta = self.beta
        if self.bootstrap == "paper":
            logg = q / beta - logsumexp(q / beta, axis=2, keepdims=True)
            g = np.exp(logg)
            pi = f[..., None] * g  # (S', A', B') weights on Q(s', a', b')
            c = -beta * (pi * logg).sum(axis=(1, 2))
        else:
            qbar = np.einsum("sa,sab->sb", f, q) / beta
            logh = qbar - logsumexp(qbar, axis=1, keepdims=True)
            h = np.exp(logh)
            pi = f[..., None] * h[:, None, :]
            c = -beta * (h * logh).sum(axis=1)
        P = model.P.reshape(n_s * n_a * n_b, n_s)
        Pi = np.zeros((n_s, n_s * n_a * n_b))
        Pi[np.repeat(np.arange(n_s), n_a * n_b), np.arange(n_s * n_a * n_b)] = pi.ravel()
        M = np.eye(n_s * n_a * n_b) - self.gamma * P @ Pi
        rhs = model.r_follower.ravel() + self.gamma * P @ c
        return np.linalg.solve(M, rhs).reshape(n_s, n_a, n_b)

    def _set_q(self, q: np.ndarray) -> None:
        with np.errstate(all="ignore"):  # checked below
            v = self.beta * logsumexp(q / self.beta, axis=2)
            pi = np.exp((q - v[..., None]) / self.beta)
            pi /= pi.sum(axis=2, keepdims=True)
        if not (np.all(np.isfinite(q)) and np.all(np.isfinite(v)) and np.all(np.isfinite(pi))):
            raise ValueError(f"the follower's soft best response is not finite at "
                             f"beta={self.beta!r} (Q/β overflows float64); use a larger beta")
        self._q, self._v, self._pi = q, v, pi
        self._cdf = np.cumsum(self._pi, axis=2)

    def _check(self) -> None:
        if self._q is None:
            raise RuntimeError("call solve() first")

    def state_dict(self) -> dict:
        """``Q_F`` (the next solve's warm start) and the leader policy it answers."""
        if self._q is None:
            return {"q": None}
        return {"q": self._q.copy(), "leader_policy": self.leader_policy.copy(),
                "iterations": int(self.iterations), "converged": bool(self.converged)}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (no solve)."""
        if state["q"] is None:
            self._q, self.leader_policy = None, None
            return
        self.leader_policy = np.array(state["leader_policy"], dtype=np.float64)
        self.iterations, self.converged = int(state["iterations"]), bool(state["converged"])
        self._set_q(np.array(state["q"], dtype=np.float64))

    @property
    def soft_q(self) -> np.ndarray:
        """``Q_F(s, a, b)``, shape ``(S, A, B)``."""
        self._check()
        return self._q  # type: ignore[return-value]

    @property
    def soft_v(self) -> np.ndarray:
        """``V_F(s, a) = β log Σ_b exp(Q_F(s, a, b)/β)``, shape ``(S, A)`` (eq. 25)."""
        self._check()
        return self._v

    @property
    def policy(self) -> np.ndarray:
        """``g(b|s, a)``, shape ``(S, A, B)``."""
        self._check()
        return self._pi

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample ``b ~ g(·|s, a)`` for follower observations ``obs`` of shape ``(N, 2)``."""
        self._check()
        obs = np.asarray(obs, dtype=np.int64).reshape(-1, 2)
        cdf = self._cdf[obs[:, 0], obs[:, 1]]
        u = rng.random(len(obs))[:, None]
        return np.minimum((u >= cdf).sum(axis=1), cdf.shape[1] - 1).astype(np.int64)


# ---------------------------------------------------------------------- sub-optimality
def _game_model(game: Any) -> Any:
    if hasattr(game, "unwrapped"):
        game = game.unwrapped
    return getattr(game, "model", game)


def game_soft_policy_evaluation(game: Any, leader_policy: Any, follower_policy: Any, beta: float,
                                gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Exact soft value of an arbitrary follower policy ``g(b|s, a)`` against a fixed leader ``f``.

    Paper form (eq. 32 with the optimal operator replaced by ``g``'s evaluation operator)::

        U^g(s) = Σ_a f(a|s) Σ_b g(b|s,a) [r_F(s,a,b) − β log g(b|s,a)
                                          + γ Σ_{s'} P(s'|s,a,b) U^g(s')]
        Q^g(s,a,b) = r_F(s,a,b) + γ Σ_{s'} P(s'|s,a,b) U^g(s')
        V^g(s,a) = Σ_b g(b|s,a) [Q^g(s,a,b) − β log g(b|s,a)]

    One ``(S × S)`` linear solve ``(I − γ P_{fg}) U = c``; ``0 log 0 = 0``. For ``g`` the
    paper-form best response this is its ``soft_q`` / ``soft_v`` (tested). The authors' form
    (``bootstrap="official"``, leader expectation inside the log-sum-exp) is not the value of a
    follower policy, so it has no evaluation counterpart.

    Args:
        game: the toy game (or its ``model`` with ``P (S,A,B,S)`` and ``r_follower (S,A,B)``).
        leader_policy: ``(S, A)`` probabilities ``f``.
        follower_policy: ``(S, A, B)`` probabilities ``g``.
        beta: entropy temperature β > 0.
        gamma: follower discount γ_F in [0, 1).

    Returns:
        ``(Q^g (S, A, B), V^g (S, A), U^g (S,))``.
    """
    beta = check_beta(beta)
    if not 0.0 <= float(gamma) < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    model = _game_model(game)
    n_s, n_a, n_b = model.r_follower.shape
    f = check_policy(leader_policy, (n_s, n_a), "leader_policy")
    g = check_policy(follower_policy, (n_s, n_a, n_b), "follower_policy")
    r, P = model.r_follower, model.P
    w = f[..., None] * g  # (S, A, B) joint action law per state
    c = (w * r).sum(axis=(1, 2)) + (f * entropy_bonus(g, beta)).sum(axis=1)
    P_fg = np.einsum("sab,sabt->st", w, P)
    u = np.linalg.solve(np.eye(n_s) - gamma * P_fg, c)
    q = r + gamma * (P @ u)
    v = (g * q).sum(axis=2) + entropy_bonus(g, beta)
    return q, v, u


@dataclass(frozen=True)
class GameFollowerGap:
    """Sub-optimality of a game follower policy against a fixed leader (paper form).

    ``gap(s, a) = V_F^*(s, a) − V^g(s, a) ≥ 0`` with ``V_F^*`` the paper-form soft best response.

    Attributes:
        start: ``Σ_s μ0(s) Σ_a f(a|s) gap(s, a)`` (the gap at the game's start).
        max: ``max_{s,a} gap(s, a)``.
        relative_start: ``start / |Σ_s μ0(s) Σ_a f V_F^*(s, a)|`` (the authors'
            ``FollowerRelativeOptimalityGap``, facts §3.3; ``inf`` if the value is 0).
        v_opt: ``(S, A)`` exact ``V_F^*``.
        v_policy: ``(S, A)`` ``V^g``.
    """

    start: float
    max: float
    relative_start: float
    v_opt: np.ndarray
    v_policy: np.ndarray


def game_follower_optimality_gap(game: Any, leader_policy: Any, follower_policy: Any,
                                 beta: float, gamma: float) -> GameFollowerGap:
    """:class:`GameFollowerGap` of ``follower_policy`` against ``leader_policy`` (paper form).

    The exact best response is solved here (policy iteration to 1e-10, paper bootstrap).
    """
    model = _game_model(game)
    f = np.asarray(leader_policy, dtype=np.float64)
    _, v_pol, _ = game_soft_policy_evaluation(model, f, follower_policy, beta, gamma)
    exact = SoftQIterationFollower(beta, gamma=gamma, bootstrap="paper")
    exact.solve(model, f)
    v_opt = exact.soft_v
    gap = v_opt - v_pol
    mu0 = np.asarray(model.mu0, dtype=np.float64)
    start = float(mu0 @ (f * gap).sum(axis=1))
    start_opt = float(mu0 @ (f * v_opt).sum(axis=1))
    rel = start / abs(start_opt) if start_opt != 0 else float("inf")
    return GameFollowerGap(start=start, max=float(gap.max()), relative_start=rel,
                           v_opt=v_opt.copy(), v_policy=v_pol)
