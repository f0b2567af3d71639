"""Soft (entropy-regularised) best response of a tabular follower.

The follower maximises ``E Σ_t γ_F^t (r_F(s_t, b_t) + β H(g(·|s_t)))``. Its optimum satisfies the
soft Bellman equations (paper eq. 18)::

    Q_F(s, b) = r_F(s, b) + γ_F Σ_{s'} p(s'|s, b) V_F(s')      (no continuation if s terminal)
    V_F(s)    = β log Σ_b exp(Q_F(s, b) / β),      g(b|s) = exp((Q_F(s, b) − V_F(s)) / β).

Two solvers share one backup:

* ``"newton"`` (default): soft policy iteration, i.e. Newton's method on the soft Bellman
  operator. Each step evaluates the current Boltzmann policy exactly by one sparse linear
  solve (:meth:`~bilevel_envs.model.TabularModel.solve_discounted`: sparse elimination on a
  static schedule up to ``DENSE_LIMIT`` states, SuperLU above); convergence is quadratic, so
  a warm start needs 1–3 steps to reach 1e-10.
* ``"value_iteration"``: plain synchronous soft value-iteration backups (γ-contraction). With
  ``max_iterations=k`` it stops after ``k`` backups.

Both stop when the soft Bellman residual ``max|T Q − Q|`` is below ``tol``. All operations are
vectorised over states and actions (log-sum-exp is shifted, so β = 1e-4 is NaN-free).

The authors' sub-optimal follower (k soft policy iterations of 5 backups each, facts §2.1) is
:func:`soft_policy_iteration` (used by :class:`~bilevel_envs.followers.kstep.KStepSoftFollower`).
:func:`soft_policy_evaluation` gives the exact soft value of *any* follower policy (one linear
solve) and :func:`follower_optimality_gap` its sub-optimality (the authors' ``kl_optimality_gap``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bilevel_envs.model import TabularModel
from bilevel_envs.utils import check_beta

__all__ = ["FORMS", "FollowerGap", "SoftVIResult", "TabularSoftFollower",
           "follower_optimality_gap", "official_to_soft_q", "soft_bellman_backup",
           "soft_newton_step", "soft_policy_evaluation", "soft_policy_iteration", "soft_value",
           "soft_value_iteration", "stacked_soft_value_iteration"]

_SOLVERS = ("newton", "value_iteration")


def soft_value(q: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """``(V, g)`` with ``V(s) = β logsumexp_b Q(s,b)/β`` and ``g = softmax_b Q/β`` (eq. 18).

    ``q`` is ``(S, B)`` or a stack ``(N, S, B)`` (actions on the last axis).
    """
    q_max = q.max(axis=-1, keepdims=True)
    z = np.exp((q - q_max) / beta)
    total = z.sum(axis=-1, keepdims=True)
    v = q_max[..., 0] + beta * np.log(total[..., 0])
    return v, z / total


def soft_bellman_backup(q: np.ndarray, model: TabularModel, r: np.ndarray, beta: float,
                        gamma: float) -> np.ndarray:
    """One soft backup ``r + γ C V(Q)`` with ``C`` the model's continuation matrix (``q`` may be
    a stack ``(N, S, B)`` with a :class:`~bilevel_envs.model.StackedTabularModel`)."""
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
    soft = soft_value(q, beta)  # (V, g) of the current q: the backup's and the step's
    while iterations < cap:
        tq = r + gamma * model.continuation_values(soft[0])  # soft_bellman_backup
        residual = float(np.max(np.abs(tq - q)))
        if residual <= tol:
            break
        iterations += 1
        q = tq if solver == "value_iteration" else soft_newton_step(q, model, r, beta, gamma,
                                                                      soft=soft)
        soft = soft_value(q, beta)
    else:
        if max_iterations is None:
            raise RuntimeError(f"soft value iteration did not reach tol={tol} (residual "
                               f"{residual:.3g} after {iterations} iterations)")
        residual = float(np.max(np.abs(r + gamma * model.continuation_values(soft[0]) - q)))
    v, g = soft
    return SoftVIResult(q=q, v=v, policy=g, iterations=iterations, residual=residual)


def soft_newton_step(q: np.ndarray, model: Any, r: np.ndarray, beta: float,
                     gamma: float, *, soft: tuple[np.ndarray, np.ndarray] | None = None
                     ) -> np.ndarray:
    """One Newton step on the soft Bellman operator (soft policy iteration).

    Exact soft evaluation of ``g = softmax(Q/β)``, entropy bonus included:
    ``V = Σ_b g (r + β(−log g) + γ C V)  ⇔  (I − γ P_g) V = Σ_b g (r − β log g)``, then
    ``Q ← r + γ C V``. ``q`` is ``(S, B)`` with a :class:`~bilevel_envs.model.TabularModel`, or
    a stack ``(N, S, B)`` with a :class:`~bilevel_envs.model.StackedTabularModel` (the same
    arithmetic, run by run; ``r`` then holds the rewards of the runs in ``q``, any number).
    ``soft`` is ``soft_value(q, beta)`` if already computed.
    """
    v_soft, g = soft_value(q, beta) if soft is None else soft
    # −β log g = V_soft(Q) − Q exactly (no log of tiny probabilities)
    rhs = (g * (r + v_soft[..., None] - q)).sum(axis=-1)
    v = model.solve_discounted(model.policy_transition(g), rhs, gamma)
    return r + gamma * model.continuation_values(v)


def stacked_soft_value_iteration(model: Any, beta: float, gamma: float, q0: np.ndarray, *,
                                 tol: float = 1e-10, max_iterations: int = 10_000,
                                 carry: dict | None = None) -> SoftVIResult:
    """:func:`soft_value_iteration` (Newton) for N problems at once: the follower of N runs.

    ``model`` is a :class:`~bilevel_envs.model.StackedTabularModel` (one structure, N reward
    tables) and ``q0`` the ``(N, S, B)`` warm starts. Every run takes exactly the steps the
    single solver takes from its own warm start: a run leaves the stack once its soft Bellman
    residual is ``<= tol`` (converged runs are masked out), so its iterates, iteration count and
    residual are those of :func:`soft_value_iteration`, bit for bit (every stacked operation
    performs the single model's arithmetic run by run, see
    :class:`~bilevel_envs.model.StackedTabularModel`).

    ``carry`` (the elimination solver only; a dict kept by the caller between solves) saves
    work that a sequence of solves repeats, without changing a bit: on return it holds, for
    the result's ``q``, the soft values, the policy and ``γ C V`` (runs on the last axis), which
    the next solve reads if its ``q0`` is that result (``carry["q"] is q0``) on the same
    continuation operators, instead of computing them again.

    Returns:
        A :class:`SoftVIResult` whose fields are stacked: ``q``/``policy`` ``(N, S, B)``,
        ``v`` ``(N, S)``, ``iterations`` ``(N,)`` ints and ``residual`` ``(N,)``.
    Raises:
        RuntimeError: a run that does not converge within ``max_iterations`` Newton steps.
    """
    q = np.array(q0, dtype=np.float64)
    n = q.shape[0]
    iterations = np.zeros(n, dtype=np.int64)
    residual = np.full(n, np.inf)
    ops = getattr(model, "operators", None)
    if ops is not None and model.n_actions < 8:  # numpy sums fewer than 8 terms in order
        if carry is not None and (carry.get("q") is not q0 or carry.get("ops") is not ops):
            carry.clear()  # about another q0, or another continuation C
        return _stacked_newton_runs_last(ops, model.r_follower, q, beta, gamma, tol,
                                         max_iterations, {} if carry is None else carry)
    v, g = soft_value(q, beta)
    # the unconverged runs: their indices, iterates, (V, g) and rewards
    active, qa, va, ga, ra = np.arange(n), q, v, g, model.r_follower
    while True:
        res = np.abs(ra + gamma * model.continuation_values(va) - qa).max(axis=(-2, -1))
        residual[active] = res
        keep = res > tol
        if not keep.all():
            active, qa, va, ga, ra = active[keep], qa[keep], va[keep], ga[keep], ra[keep]
            if not active.size:
                break
        if iterations[active].max() >= max_iterations:
            raise RuntimeError(f"soft value iteration did not reach tol={tol} after "
                               f"{max_iterations} Newton steps")
        iterations[active] += 1
        qa = soft_newton_step(qa, model, ra, beta, gamma, soft=(va, ga))
        va, ga = soft_value(qa, beta)
        q[active], v[active], g[active] = qa, va, ga
    return SoftVIResult(q=q, v=v, policy=g, iterations=iterations, residual=residual)


def _soft_value_actions(q: np.ndarray, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`soft_value` with the actions on axis 1 (``q`` ``(S, B, ...)``), written action by
    action: the same operations as numpy's reductions over a short last axis (an exact
    maximum; the sum in order ``((z_0 + z_1) + z_2) + …``), hence the same bits."""
    B = q.shape[1]
    q_max = np.maximum(q[:, 0], q[:, 1]) if B > 1 else q[:, 0].copy()
    for b in range(2, B):
        np.maximum(q_max, q[:, b], out=q_max)
    z = q - q_max[:, None]
    z /= beta
    np.exp(z, out=z)
    total = z[:, 0] + z[:, 1] if B > 1 else z[:, 0].copy()
    for b in range(2, B):
        total += z[:, b]
    v = q_max + beta * np.log(total)
    z /= total[:, None]
    return v, z


def _stacked_newton_runs_last(ops: Any, r_follower: np.ndarray, q: np.ndarray, beta: float,
                              gamma: float, tol: float, max_iterations: int,
                              carry: dict) -> SoftVIResult:
    """:func:`stacked_soft_value_iteration` on the elimination solver's operators, with the
    runs on the last axis (``(S, B, N)``: every array operation is then elementwise across
    runs, no transposes): the arithmetic of :func:`soft_value_iteration` per run."""
    n, S, B = q.shape
    Q = np.ascontiguousarray(q.transpose(1, 2, 0))
    R = np.ascontiguousarray(np.asarray(r_follower, dtype=np.float64).transpose(1, 2, 0))
    iterations = np.zeros(n, dtype=np.int64)
    residual = np.full(n, np.inf)
    if "V" in carry:
        V, G, cv = carry["V"], carry["G"], carry["CV"]
    else:
        V, G = _soft_value_actions(Q, beta)
        cv = None
    Q_out, V_out, G_out = Q.copy(), V.copy(), G.copy()
    CV_out = np.empty_like(Q)
    active, qa, va, ga, ra = np.arange(n), Q, V, G, R
    while True:
        if cv is None:
            cv = gamma * ops.forward(va).reshape(S, B, -1)  # γ C V of the backup
        tq = cv + ra
        tq -= qa
        res = np.abs(tq, out=tq).max(axis=(0, 1))
        residual[active] = res
        keep = res > tol
        if not keep.all():
            CV_out[..., active[~keep]] = cv[..., ~keep]
            active, qa, va, ga, ra = (active[keep], qa[..., keep], va[..., keep],
                                      ga[..., keep], ra[..., keep])
            if not active.size:
                break
        if iterations[active].max() >= max_iterations:
            raise RuntimeError(f"soft value iteration did not reach tol={tol} after "
                               f"{max_iterations} Newton steps")
        iterations[active] += 1
        # soft_newton_step: (I − γ P_g) V = Σ_b g (r + V_soft − q), then q ← r + γ C V
        rhs = ga[:, 0] * (ra[:, 0] + va - qa[:, 0])
        for b in range(1, B):
            rhs += ga[:, b] * (ra[:, b] + va - qa[:, b])
        x = ops.plan.solve(ops.cells(ga), gamma, rhs)
        cv = None
        qa = gamma * ops.forward(x).reshape(S, B, -1)
        qa += ra
        va, ga = _soft_value_actions(qa, beta)
        Q_out[..., active], V_out[..., active], G_out[..., active] = qa, va, ga
    result = SoftVIResult(q=np.ascontiguousarray(Q_out.transpose(2, 0, 1)),
                          v=np.ascontiguousarray(V_out.T),
                          policy=np.ascontiguousarray(G_out.transpose(2, 0, 1)),
                          iterations=iterations, residual=residual)
    carry.clear()
    carry.update(q=result.q, V=V_out, G=G_out, CV=CV_out, ops=ops)
    return result


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
        """Re-solve at the problem's current θ (warm-started from the last solution).

        Args:
            env: the unwrapped tabular configurable MDP (its :meth:`tabular_model` is solved).
        """
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

    @property
    def exact(self) -> bool:
        """Whether this follower is the exact best response (solved to ``tol``, no step cap)."""
        return self.max_iterations is None

    def _solved(self) -> SoftVIResult:
        if self.result is None:
            raise RuntimeError("the follower has not been solved yet")
        return self.result

    @property
    def policy(self) -> np.ndarray:
        """The soft best response ``g(b|s) = softmax(Q_F(s, ·)/β)``, shape ``(S, B)``."""
        return self._solved().policy

    @property
    def soft_q(self) -> np.ndarray:
        """The follower's soft Q-values ``Q_F(s, b)``, shape ``(S, B)``."""
        return self._solved().q

    @property
    def soft_v(self) -> np.ndarray:
        """The follower's soft values ``V_F(s) = β log Σ_b exp(Q_F(s, b)/β)``, shape ``(S,)``."""
        return self._solved().v

    def act(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Inverse-CDF sampling of ``b ~ g(·|s)`` for a batch of state indices."""
        u = rng.random(len(states))
        return (u[:, None] >= self._cum[states]).sum(axis=1).astype(np.int64)


# ---------------------------------------------------------------------- sub-optimal followers
#: conventions of the k-step array: entropy bonus of the next state (ours) or the current one
FORMS = ("paper", "official")


def soft_policy_iteration(model: TabularModel, beta: float, gamma: float, q0: np.ndarray,
                          iterations: int, *, backups: int = 5, form: str = "paper") -> np.ndarray:
    """``k`` soft (modified) policy iterations from ``q0``: the authors' k-step follower.

    Each iteration ``i`` (the authors' ``general_value_iteration``) forms the
    Boltzmann policy ``π_i = softmax(Q/β)`` and then applies ``backups`` (5) soft *evaluation*
    backups of ``π_i``. With ``H_i(s) = −Σ_b π_i log π_i`` and ``C`` the continuation matrix
    (terminal rows zero):

    * ``form="paper"`` (our convention, the entropy bonus of the *next* state; the fixed point
      is the paper's ``Q_F``, eq. 18)::

          Q(s, b) ← r_F(s, b) + γ Σ_{s'} C(s'|s, b) [Σ_{b'} π_i(b'|s') Q(s', b') + β H_i(s')]

      The first backup of every iteration is exactly the soft Bellman optimality backup.
    * ``form="official"`` (the authors' array, the bonus of the *current* state, their "KL"
      term up to a constant)::

          Q(s, b) ← r_F(s, b) + β H_i(s) + γ Σ_{s'} C(s'|s, b) Σ_{b'} π_i(b'|s') Q(s', b')

      Its fixed point is ``Q_F(s, b) + β H_g(s)`` (a per-state shift: same Boltzmann policy).
      Within an iteration the two forms differ by exactly ``β H_i(s)``; across iterations the
      official array carries the previous iteration's ``H`` into the next first backup, so
      the intermediate policies differ slightly (both converge to the soft-optimal ``g``).

    Vectorised over states and actions; ``β H`` is computed as ``V_soft(Q) − Σ_b π Q`` (no log
    of tiny probabilities).

    Args:
        model: the configurable MDP at the current θ.
        beta: entropy temperature β > 0.
        gamma: follower discount γ_F in [0, 1).
        q0: ``(S, B)`` start (the authors: N(0, 1) draws, or the previous result).
        iterations: policy iterations ``k ≥ 1`` (the authors: 1, 2, 5, 10, 20, 50).
        backups: evaluation backups per iteration (the authors: 5).
        form: ``"paper"`` or ``"official"``.

    Returns:
        The ``(S, B)`` array after ``k`` iterations (in ``form``'s convention).
    """
    beta = check_beta(beta)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, got {form!r}")
    for name, val in (("iterations", iterations), ("backups", backups)):
        if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)) or val < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {val!r}")
    S, B = model.n_states, model.n_actions
    q = np.array(q0, dtype=np.float64)
    if q.shape != (S, B):
        raise ValueError(f"q0 must have shape {(S, B)}, got {q.shape}")
    if not np.all(np.isfinite(q)):
        raise ValueError("q0 contains NaN or inf")
    r = model.r_follower
    for _ in range(int(iterations)):
        v_soft, g = soft_value(q, beta)
        bonus = v_soft - (g * q).sum(axis=1)  # β H(π_i(·|s)) exactly
        for _ in range(int(backups)):
            if form == "paper":
                q = r + gamma * model.continuation_values((g * q).sum(axis=1) + bonus)
            else:
                q = r + bonus[:, None] + gamma * model.continuation_values((g * q).sum(axis=1))
    return q


def official_to_soft_q(q: np.ndarray, beta: float) -> np.ndarray:
    """Map the authors' array (``form="official"``) to our ``Q_F`` convention: ``Q − β H(s)``.

    With ``π = softmax(Q/β)``, ``β H(π(·|s)) = V_soft(Q)(s) − Σ_b π Q``; at the fixed point this
    recovers the soft-optimal ``Q_F`` exactly, and the Boltzmann policy is unchanged.
    """
    v_soft, g = soft_value(q, beta)
    return q - (v_soft - (g * q).sum(axis=1))[:, None]


def check_policy(policy: Any, shape: tuple[int, ...], name: str = "policy") -> np.ndarray:
    """``policy`` as a float array of ``shape`` whose last axis holds distributions.

    Raises:
        ValueError: a wrong shape, or rows that are not probability distributions.
    """
    g = np.asarray(policy, dtype=np.float64)
    if g.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {g.shape}")
    if not np.all(np.isfinite(g)) or np.any(g < 0) or not np.allclose(g.sum(axis=-1), 1.0,
                                                                      atol=1e-6):
        raise ValueError(f"{name} rows must be probability distributions (finite, >= 0, sum 1)")
    return g


def entropy_bonus(g: np.ndarray, beta: float) -> np.ndarray:
    """``β H(g) = −β Σ_b g log g`` along the last axis, with ``0 log 0 = 0``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        glogg = np.where(g > 0, g * np.log(np.where(g > 0, g, 1.0)), 0.0)
    return -beta * glogg.sum(axis=-1)


def soft_policy_evaluation(model: TabularModel, policy: Any, beta: float,
                           gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact soft value of an *arbitrary* follower policy ``g`` (one linear solve).

    ``V^g(s) = Σ_b g(b|s) [r_F(s, b) − β log g(b|s) + γ Σ_{s'} C(s'|s, b) V^g(s')]``, i.e.
    ``(I − γ P_g) V^g = Σ_b g (r_F − β log g)`` with ``P_g = Σ_b g C`` (terminal rows zero),
    and ``Q^g(s, b) = r_F(s, b) + γ Σ_{s'} C(s'|s, b) V^g(s')``. This is the follower's
    entropy-regularised objective (paper eq. 18's ``V_F`` when ``g`` is the soft-optimal
    policy; ``0 log 0 = 0``, so deterministic policies are allowed).

    Args:
        model: the configurable MDP at θ.
        policy: ``(S, B)`` probabilities (e.g. ``br.policy`` of any publishing follower).
        beta: entropy temperature β > 0.
        gamma: follower discount γ_F in [0, 1).

    Returns:
        ``(Q^g (S, B), V^g (S,))``.
    """
    beta = check_beta(beta)
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
    g = check_policy(policy, (model.n_states, model.n_actions))
    r = model.r_follower
    rhs = (g * r).sum(axis=1) + entropy_bonus(g, beta)
    v = np.asarray(model.solve_discounted(model.policy_transition(g), rhs, gamma),
                   dtype=np.float64)
    return r + gamma * model.continuation_values(v), v


@dataclass(frozen=True)
class FollowerGap:
    """Sub-optimality of a follower policy ``g`` at θ (soft-value gap to the exact best response).

    ``gap(s) = V_F^*(s) − V^g(s) ≥ 0`` (soft values, :func:`soft_policy_evaluation`); by the
    soft performance-difference identity ``gap = β (I − γ P_g)^{-1} KL(g ‖ g*)``, the discounted
    expected KL divergence to the best response along ``g``'s own trajectories (whence the
    authors' name ``kl_optimality_gap``, facts §2.1; their MG ``FollowerRelativeOptimalityGap``
    is ``relative_start``, facts §3.3).

    Attributes:
        start: ``Σ_s μ0(s) gap(s)``, the gap at the start distribution.
        max: ``max_s gap(s)``.
        relative_start: ``start / |Σ_s μ0(s) V_F^*(s)|`` (``inf`` if that value is 0).
        v_opt: ``(S,)`` exact ``V_F^*``.
        v_policy: ``(S,)`` ``V^g``.
    """

    start: float
    max: float
    relative_start: float
    v_opt: np.ndarray
    v_policy: np.ndarray


def follower_optimality_gap(model: TabularModel, policy: Any, beta: float, gamma: float, *,
                            v_opt: np.ndarray | None = None) -> FollowerGap:
    """The follower's sub-optimality at θ: :class:`FollowerGap` of ``policy``.

    Note: the authors regularise with ``−β KL(π ‖ uniform) = β H − β log B`` per step; their
    values differ from ours by ``β log B`` times the expected discounted number of acting steps,
    which depends on the policy when episodes terminate, so their gap is close to but not
    identical to ours on Four-Rooms (ours is the paper's entropy objective, eq. 18).

    Args:
        model: the configurable MDP at θ.
        policy: ``(S, B)`` follower policy.
        beta: entropy temperature β > 0.
        gamma: follower discount γ_F.
        v_opt: the exact ``V_F^*`` if already known (else solved here, Newton, tol 1e-10).
    """
    _, v_pol = soft_policy_evaluation(model, policy, beta, gamma)
    if v_opt is None:
        v_opt = soft_value_iteration(model, beta, gamma).v
    v_opt = np.asarray(v_opt, dtype=np.float64)
    gap = v_opt - v_pol
    start_opt = float(model.mu0 @ v_opt)
    start = float(model.mu0 @ gap)
    rel = start / abs(start_opt) if start_opt != 0 else float("inf")
    return FollowerGap(start=start, max=float(gap.max()), relative_start=rel, v_opt=v_opt,
                       v_policy=v_pol)
