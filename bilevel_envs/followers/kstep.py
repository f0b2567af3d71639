"""Sub-optimal k-step followers, as the authors' journal extension defines them.

The paper (§6) names sub-optimal followers as the open problem; the authors' repository
runs BC-HG against followers that stop after ``k`` solver
iterations, from a start that is either

* ``carry``: the previous outer iteration's result (an N(0, 1) array only at the very start), or
* ``reset``: a fresh N(0, 1) array at every outer iteration.

This module gives the three problem families such a follower, each a subclass of the exact
solver that shares its backups and publishes its *own* estimates (``policy`` is the Boltzmann
policy of its current array; ``soft_q`` / ``soft_v`` are that array and its soft value, not the
exact ``Q_F`` / ``V_F``):

* :class:`KStepSoftFollower` (tabular configurable MDPs, e.g. Four-Rooms): ``k`` soft policy
  iterations, each = ``π = softmax(Q/β)`` then 5 evaluation backups
  (:func:`~bilevel_envs.followers.soft_value_iteration.soft_policy_iteration`; authors'
  ``stop_policy_iter`` ∈ {1, 2, 5, 10, 20, 50}).
* :class:`KStepSoftQIterationFollower` (toy Markov game): ``k`` synchronous soft Q-iteration
  backups against the leader's policy (authors' ``stop_q_iteration`` ∈ {1, 2, 5, 10, 50, 100};
  in the game code one iteration is one backup, §2.3).
* :class:`KStepMaxEntLQRFollower` (building thermal control): ``k`` Riccati steps (eq. 108)
  from the carried ``P`` (``carry``) or from ``Q̄`` (``reset``: the authors' building follower
  restarts from ``P = Q̄``, §2.2; an N(0, 1) matrix is not a valid cost-to-go).

A ``reset`` follower draws its start from its own ``numpy`` generator (``seed``), which is part
of ``state_dict``; a ``carry`` follower draws only its first start from it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_envs.followers.maxent_lqr import (
    GaussianLinearPolicy,
    LQRModel,
    MaxEntLQRFollower,
    riccati_iteration,
    solve_maxent_lqr,
)
from bilevel_envs.followers.soft_q_iteration import SoftQIterationFollower
from bilevel_envs.followers.soft_value_iteration import (
    FORMS,
    SoftVIResult,
    TabularSoftFollower,
    official_to_soft_q,
    soft_bellman_backup,
    soft_policy_iteration,
    soft_value,
)

__all__ = ["START_MODES", "KStepMaxEntLQRFollower", "KStepSoftFollower",
           "KStepSoftQIterationFollower"]

#: where a k-step follower starts each solve
START_MODES = ("carry", "reset")


def _check_k(k: Any) -> int:
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k!r}")
    return int(k)


def _check_start(start: Any) -> str:
    if start not in START_MODES:
        raise ValueError(f"start must be one of {START_MODES}, got {start!r}")
    return start


def _check_init_std(init_std: Any) -> float:
    x = float(init_std)
    if not np.isfinite(x) or x < 0:
        raise ValueError(f"init_std must be a finite number >= 0, got {init_std!r}")
    return x


class KStepSoftFollower(TabularSoftFollower):
    """k soft policy iterations × ``backups`` backups on a tabular configurable MDP (facts §2.1).

    Each :meth:`solve` starts from the carried array (``start="carry"``) or from a fresh
    ``init_std · N(0, 1)`` draw (``start="reset"``) and runs
    :func:`~bilevel_envs.followers.soft_value_iteration.soft_policy_iteration`. It publishes
    ``policy = softmax(Q_k/β)`` (the authors' follower policy), ``soft_q`` = ``Q_k`` in the
    paper's convention (for ``form="official"`` the authors' array minus its state-only entropy
    term, :func:`~bilevel_envs.followers.soft_value_iteration.official_to_soft_q`) and
    ``soft_v = β logsumexp(soft_q/β)``. ``result.residual`` is the soft Bellman residual of
    ``soft_q`` (how far from the best response it is). As ``k → ∞`` all three converge to the
    exact best response (tested to 1e-8).

    Args:
        beta: entropy temperature β > 0.
        k: policy iterations per solve (authors: 1, 2, 5, 10, 20, 50).
        start: ``"carry"`` or ``"reset"``.
        backups: evaluation backups per policy iteration (authors: 5).
        form: ``"paper"`` (entropy bonus of the next state, our ``Q_F``) or ``"official"``
            (the authors' array, bonus of the current state).
        init_std: standard deviation of the random start (authors: 1; 0 gives Q = 0).
        seed: seed of the follower's own generator (the random starts).

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.003,
        ...                   follower=KStepSoftFollower(0.003, k=5, start="reset", seed=0))
        >>> br.policy.shape
        (104, 4)
    """

    #: a k-step answer is not the exact best response
    exact = False

    def __init__(self, beta: float, k: int, start: str = "carry", *, backups: int = 5,
                 form: str = "paper", init_std: float = 1.0, seed: int | None = None):
        super().__init__(beta)
        self.k, self.start = _check_k(k), _check_start(start)
        if isinstance(backups, (bool, np.bool_)) or not isinstance(backups, (int, np.integer)) \
                or backups < 1:
            raise ValueError(f"backups must be an integer >= 1, got {backups!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        self.backups, self.form = int(backups), form
        self.init_std = _check_init_std(init_std)
        self._rng = np.random.default_rng(seed)
        self._q: np.ndarray | None = None  # the carried array (form's convention)

    def describe(self) -> str:
        """``kstep:K:MODE`` (the follower spec of this follower)."""
        return f"kstep:{self.k}:{self.start}"

    def solve(self, env: Any) -> None:
        """Take ``k`` policy iterations at the problem's current θ (module docstring)."""
        model = env.tabular_model()
        shape = (model.n_states, model.n_actions)
        if self.start == "reset" or self._q is None or self._q.shape != shape:
            q0 = self.init_std * self._rng.standard_normal(shape)
        else:
            q0 = self._q
        gamma = env.gamma_follower
        q = soft_policy_iteration(model, self.beta, gamma, q0, self.k, backups=self.backups,
                                  form=self.form)
        soft_q = q if self.form == "paper" else official_to_soft_q(q, self.beta)
        v, g = soft_value(soft_q, self.beta)
        residual = float(np.max(np.abs(
            soft_bellman_backup(soft_q, model, model.r_follower, self.beta, gamma) - soft_q)))
        self._q = q
        self._set_result(SoftVIResult(q=soft_q, v=v, policy=g, iterations=self.k,
                                      residual=residual))

    def state_dict(self) -> dict:
        """The published solution, the carried array and the generator state."""
        state = super().state_dict()
        state["q_iterate"] = None if self._q is None else self._q.copy()
        state["rng"] = self._rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` exactly (no solve)."""
        super().load_state_dict(state)
        q = state.get("q_iterate")
        self._q = None if q is None else np.array(q, dtype=np.float64)
        self._rng.bit_generator.state = state["rng"]


class KStepSoftQIterationFollower(SoftQIterationFollower):
    """k soft Q-iteration backups against the leader's policy in a tabular game (facts §2.3).

    Each :meth:`solve` starts from the carried ``Q`` (``start="carry"``; an
    ``init_std · N(0, 1)`` draw the first time) or from a fresh draw (``start="reset"``) and
    applies ``k`` backups of :func:`~bilevel_envs.followers.soft_q_iteration.soft_q_backup`
    (stopping earlier only if ``max|ΔQ| < tol · max(1, max|Q|)``, as the authors' loop does).
    ``policy``, ``soft_q``, ``soft_v`` are those of the resulting ``Q`` (the authors "replace Q
    with the snapshot after k iterations and use it for policy and V").

    Args:
        beta: entropy temperature β > 0.
        k: backups per solve (authors: 1, 2, 5, 10, 50, 100).
        start: ``"carry"`` or ``"reset"``.
        gamma: follower discount γ_F.
        bootstrap: ``"paper"`` or ``"official"`` (see :class:`SoftQIterationFollower`).
        init_std: standard deviation of the random start (authors: 1).
        seed: seed of the follower's own generator.
        tol: early-stop tolerance (as :class:`SoftQIterationFollower`).
    """

    #: a k-step answer is not the exact best response
    exact = False

    def __init__(self, beta: float, k: int, start: str = "carry", *, gamma: float = 0.99,
                 bootstrap: str = "paper", init_std: float = 1.0, seed: int | None = None,
                 tol: float = 1e-10):
        k = _check_k(k)
        super().__init__(beta, gamma=gamma, bootstrap=bootstrap, method="value_iteration",
                         tol=tol, max_iterations=k, warm_start=True)
        self.k, self.start = k, _check_start(start)
        self.init_std = _check_init_std(init_std)
        self._rng = np.random.default_rng(seed)

    def describe(self) -> str:
        """``kstep:K:MODE``."""
        return f"kstep:{self.k}:{self.start}"

    def solve(self, game: Any, leader_policy: Any = None) -> None:
        """Take ``k`` backups against ``leader_policy`` (the previous one if ``None``)."""
        model = getattr(getattr(game, "unwrapped", game), "model",
                        getattr(game, "unwrapped", game))
        shape = model.r_follower.shape
        saved = self._q
        if self.start == "reset" or self._q is None or self._q.shape != shape:
            self._q = self.init_std * self._rng.standard_normal(shape)
        try:
            super().solve(game, leader_policy)
        except Exception:
            self._q = saved  # a rejected leader policy leaves the follower as it was
            raise

    def state_dict(self) -> dict:
        """``Q`` (the carried start), the leader policy and the generator state."""
        state = super().state_dict()
        state["rng"] = self._rng.bit_generator.state
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` exactly (no solve)."""
        super().load_state_dict(state)
        self._rng.bit_generator.state = state["rng"]


class KStepMaxEntLQRFollower(MaxEntLQRFollower):
    """k Riccati steps (paper eq. 108) of the MaxEnt-LQR follower (building thermal control).

    Each :meth:`solve` applies ``k`` steps of
    ``P ← Q̄ + γ AᵀPA − γ² AᵀPB (R̄ + γ BᵀPB)⁻¹ BᵀPA`` at the current ``A_θ``, from the carried
    ``P`` (``start="carry"``; ``Q̄`` the first time, as the authors) or from ``Q̄``
    (``start="reset"``). The published policy and soft values are Proposition 1's formulas
    evaluated at this ``P`` (:func:`~bilevel_envs.followers.maxent_lqr.solve_maxent_lqr` with
    ``P`` given): ``g = N(−K s, (β/2) S⁻¹)``, ``K = γ S⁻¹BᵀPA``, ``S = R̄ + γBᵀPB``,
    ``V = −(sᵀPs + v)``. Riccati iterates from ``Q̄ ⪰ 0`` stay PSD, so ``S ≻ 0`` and the policy
    is always a valid Gaussian; as ``k → ∞`` it converges to the DARE solution.

    Args:
        beta: entropy temperature β > 0.
        k: Riccati steps per solve.
        start: ``"carry"`` or ``"reset"`` (deterministic: no generator needed).
    """

    #: a k-step answer is not the exact best response
    exact = False

    def __init__(self, beta: float, k: int, start: str = "carry"):
        self.k, self.start = _check_k(k), _check_start(start)
        self._P: np.ndarray | None = None
        super().__init__(beta)

    def describe(self) -> str:
        """``kstep:K:MODE``."""
        return f"kstep:{self.k}:{self.start}"

    def solve_model(self, model: LQRModel):
        """Take ``k`` Riccati steps on ``model`` and publish the resulting policy."""
        n = model.A.shape[0]
        carry = self.start == "carry" and self._P is not None and self._P.shape == (n, n)
        P0 = self._P if carry else model.Q
        P, _ = riccati_iteration(model.A, model.B, model.Q, model.R, model.gamma, tol=0.0,
                                 max_iterations=self.k, P0=P0)
        return self._set(model, P)

    def _set(self, model: LQRModel, P: np.ndarray):
        sol = solve_maxent_lqr(model.A, model.B, model.Q, model.R, model.W, model.gamma,
                               self.beta, P=P)
        self.model, self.solution, self._P = model, sol, P
        self._policy = GaussianLinearPolicy(sol.K, sol.cov)
        return sol

    def state_dict(self) -> dict:
        """The model last solved and the carried ``P``."""
        state = super().state_dict()
        state["P"] = None if self._P is None else self._P.copy()
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` exactly (no Riccati step)."""
        m = state["model"]
        if m is None:
            self.model = self.solution = self._P = None
            return
        model = LQRModel(**{k: (float(v) if k == "gamma" else np.array(v, np.float64))
                            for k, v in m.items()})
        self._set(model, np.array(state["P"], dtype=np.float64))
