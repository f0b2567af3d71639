"""Soft (entropy-regularised) best response of a tabular follower.

The follower maximises ``E Σ_t γ_F^t (r_F(s_t, b_t) + β H(g(·|s_t)))``. Its optimum satisfies the
soft Bellman equations (paper eq. 18)::

    Q_F(s, b) = r_F(s, b) + γ_F Σ_{s'} p(s'|s, b) V_F(s')      (no continuation if s terminal)
    V_F(s)    = β log Σ_b exp(Q_F(s, b) / β),      g(b|s) = exp((Q_F(s, b) − V_F(s)) / β).

Two solvers share one backup:

* ``"newton"`` (default): soft policy iteration, i.e. Newton's method on the soft Bellman
  operator. Each step evaluates the current Boltzmann policy exactly by one sparse linear
  solve; convergence is quadratic, so a warm start needs 1–3 steps to reach 1e-10.
* ``"value_iteration"``: plain synchronous soft value-iteration backups (γ-contraction). With
  ``max_iterations=k`` it stops after ``k`` backups: the paper's "sub-optimal follower".

Both stop when the soft Bellman residual ``max|T Q − Q|`` is below ``tol``. All operations are
vectorised over states and actions (log-sum-exp is shifted, so β = 1e-4 is NaN-free).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bilevel_envs.model import TabularModel
from bilevel_envs.utils import check_beta

__all__ = ["SoftVIResult", "TabularSoftFollower", "soft_bellman_backup", "soft_value",
           "soft_value_iteration"]

_SOLVERS = ("newton", "value_iteration")


def soft_value(q: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(V, g)`` with ``V(s) = β logsumexp_b Q(s,b)/β`` and ``g = softmax_b Q/β`` (eq. 18)."""
    q_max = q.max(axis=1, keepdims=True)
    z = np.exp((q - q_max) / beta)
    total = z.sum(axis=1, keepdims=True)
    v = q_max[:, 0] + beta * np.log(total[:, 0])
    return v, z / total


def soft_bellman_backup(q: np.ndarray, model: TabularModel, r: np.ndarray, beta: float,
                        gamma: float) -> np.ndarray:
    """One soft backup ``r + γ C V(Q)`` with ``C`` the model's continuation matrix."""
    v, _ = soft_value(q, beta)
    return r + gamma * model.continuation_values(v)


def _check_max_iterations(max_iterations) -> None:
    if max_iterations is not None and (
            isinstance(max_iterations, (bool, np.bool_))
            or not isinstance(max_iterations, (int, np.integer)) or max_iterations < 1):
        raise ValueError(f"max_iterations must be an integer >= 1 or None, got {max_iterations!r}")


@dataclass(frozen=True)
class SoftVIResult:
    """A solved follower: soft Q, soft V, Boltzmann policy, iterations used, final residual."""

    q: np.ndarray
    v: np.ndarray
    policy: np.ndarray
    iterations: int
    residual: float


def soft_value_iteration(
    model: TabularModel,
    beta: float,
    gamma: float,
    *,
    q0: np.ndarray | None = None,
    tol: float = 1e-10,
    max_iterations: int | None = None,
    solver: str = "newton",
) -> SoftVIResult:
    """Solve the follower's soft Bellman equations for one tabular model.

    Args:
        model: the configurable MDP at the current θ.
        beta: entropy temperature β > 0.
        gamma: follower discount γ_F in [0, 1).
        q0: warm start ``(S, B)``; zeros if ``None``.
        tol: stop when ``max|T Q − Q| <= tol``.
        max_iterations: cap on backups (value iteration) or Newton steps; ``None`` = until tol.
        solver: ``"newton"`` or ``"value_iteration"``.
    """
    beta = check_beta(beta)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    if solver not in _SOLVERS:
        raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
    _check_max_iterations(max_iterations)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol!r}")
    S, B = model.n_states, model.n_actions
    r = model.r_follower
    if not np.all(np.isfinite(r)):
        raise ValueError("follower reward contains NaN or inf")
    q = np.zeros((S, B)) if q0 is None else np.array(q0, dtype=np.float64)
    if q.shape != (S, B):
        raise ValueError(f"q0 must have shape {(S, B)}, got {q.shape}")
    if not np.all(np.isfinite(q)):  # else: 10,000 NaN Newton steps before an error
        raise ValueError("q0 contains NaN or inf")
    cap = max_iterations if max_iterations is not None else (
        10_000 if solver == "newton" else int(50 * np.log(1e3 / tol) / max(1 - gamma, 1e-6)))
    iterations, residual = 0, np.inf
    while iterations < cap:
        tq = soft_bellman_backup(q, model, r, beta, gamma)
        residual = float(np.max(np.abs(tq - q)))
        if residual <= tol:
            break
        iterations += 1
        if solver == "value_iteration":
            q = tq
            continue
        # Newton step: exact soft evaluation of g = softmax(Q/β), entropy bonus included:
        # V = Σ_b g (r + β(−log g) + γ C V)  ⇔  (I − γ G C) V = Σ_b g (r − β log g)
        v_soft, g = soft_value(q, beta)
        # −β log g = V_soft(Q) − Q exactly (no log of tiny probabilities)
        rhs = (g * (r + v_soft[:, None] - q)).sum(axis=1)
        v = model.solve_discounted(model.policy_transition(g), rhs, gamma)
        q = r + gamma * model.continuation_values(v)
    else:
        if max_iterations is None:
            raise RuntimeError(f"soft value iteration did not reach tol={tol} (residual "
                               f"{residual:.3g} after {iterations} iterations)")
        residual = float(np.max(np.abs(soft_bellman_backup(q, model, r, beta, gamma) - q)))
    v, g = soft_value(q, beta)
    return SoftVIResult(q=q, v=v, policy=g, iterations=iterations, residual=residual)


class TabularSoftFollower:
    """The follower of a tabular configurable MDP: exact soft best response, warm-started.

    Args:
        beta: entropy temperature β > 0.
        tol: soft Bellman residual at which the solve stops.
        max_iterations: ``None`` for the exact best response; ``k`` for a k-step follower.
        solver: ``"newton"`` (default) or ``"value_iteration"``.
        warm_start: start each solve from the previous ``Q_F`` (else from zeros).
    """

    def __init__(self, beta: float, *, tol: float = 1e-10, max_iterations: int | None = None,
                 solver: str = "newton", warm_start: bool = True):
        self.beta = check_beta(beta)
        if solver not in _SOLVERS:
            raise ValueError(f"solver must be one of {_SOLVERS}, got {solver!r}")
        _check_max_iterations(max_iterations)
        self.tol, self.max_iterations = float(tol), max_iterations
        self.solver, self.warm_start = solver, bool(warm_start)
        self.result: SoftVIResult | None = None

    def solve(self, env) -> None:
        q0 = self.result.q if (self.warm_start and self.result is not None) else None
        self._set_result(soft_value_iteration(
            env.tabular_model(), self.beta, env.gamma_follower, q0=q0, tol=self.tol,
            max_iterations=self.max_iterations, solver=self.solver))

    def _set_result(self, result: SoftVIResult) -> None:
        self.result = result
        self._cum = np.cumsum(result.policy, axis=1)
        self._cum[:, -1] = 1.0  # guard against round-off: u < 1 always picks an action

    def state_dict(self) -> dict:
        """The solution (the next solve's warm start), as plain arrays and numbers."""
        r = self.result
        if r is None:
            return {"result": None}
        return {"result": {"q": r.q.copy(), "v": r.v.copy(), "policy": r.policy.copy(),
                           "iterations": int(r.iterations), "residual": float(r.residual)}}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` (no solve: the follower is exactly as it was)."""
        r = state["result"]
        if r is None:
            self.result = None
            return
        self._set_result(SoftVIResult(q=np.array(r["q"], dtype=np.float64),
                                      v=np.array(r["v"], dtype=np.float64),
                                      policy=np.array(r["policy"], dtype=np.float64),
                                      iterations=int(r["iterations"]),
                                      residual=float(r["residual"])))

    def _solved(self) -> SoftVIResult:
        if self.result is None:
            raise RuntimeError("the follower has not been solved yet")
        return self.result

    @property
    def policy(self) -> np.ndarray:
        return self._solved().policy

    @property
    def soft_q(self) -> np.ndarray:
        return self._solved().q

    @property
    def soft_v(self) -> np.ndarray:
        return self._solved().v

    def act(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Inverse-CDF sampling of ``b ~ g(·|s)`` for a batch of state indices."""
        u = rng.random(len(states))
        return (u[:, None] >= self._cum[states]).sum(axis=1).astype(np.int64)
