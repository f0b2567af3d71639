"""The exact model of a tabular configurable MDP at one θ (what exact solvers read)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["StackedTabularModel", "TabularModel"]


@dataclass(frozen=True)
class TabularModel:
    """Exact model of a tabular configurable MDP at one θ.

    Attributes:
        transitions: sparse ``(S*B, S)`` matrix; row ``s*B + b`` is ``p(·|s, b)``.
        r_follower: ``(S, B)`` follower reward ``r_F^θ(s, b)``.
        r_leader: ``(S, B)`` leader reward ``r_L^θ(s, b)``.
        mu0: ``(S,)`` initial state distribution.
        terminal: ``(S,)`` bool; acting in a terminal state pays its reward and ends the episode
            (zero continuation value).
        cont: the continuation matrix (computed if not given; problems pass a cached one).
    """

    transitions: sp.csr_array
    r_follower: np.ndarray
    r_leader: np.ndarray
    mu0: np.ndarray
    terminal: np.ndarray
    cont: sp.csr_array | None = field(default=None, repr=False)
    cont3: np.ndarray | None = field(default=None, repr=False)

    #: problems up to this many states are also solved with dense linear algebra (faster)
    DENSE_LIMIT = 1500

    def __post_init__(self):
        if self.cont is None:
            keep = np.repeat(~self.terminal, self.n_actions).astype(float)
            object.__setattr__(self, "cont", sp.csr_array(sp.diags_array(keep) @ self.transitions))
        if self.cont3 is None and self.dense:
            S, B = self.r_follower.shape
            object.__setattr__(self, "cont3", self.cont.toarray().reshape(S, B, S))

    @property
    def n_states(self) -> int:
        """Number of states ``S``."""
        return self.r_follower.shape[0]

    @property
    def n_actions(self) -> int:
        """Number of follower actions ``B``."""
        return self.r_follower.shape[1]

    @property
    def P(self) -> np.ndarray:
        """Dense ``(S, B, S)`` transition tensor (only sensible for small problems)."""
        S, B = self.r_follower.shape
        return self.transitions.toarray().reshape(S, B, S)

    def continuation_values(self, v: np.ndarray) -> np.ndarray:
        """``(C v)(s, b) = Σ_{s'} C(s'|s,b) v(s')`` as an ``(S, B)`` array."""
        if self.cont3 is not None:
            return self.cont3 @ v
        return (self.cont @ v).reshape(self.r_follower.shape)

    def continuation(self) -> sp.csr_array:
        """``(S*B, S)`` transition matrix with terminal rows zeroed (no continuation value)."""
        return self.cont

    @property
    def dense(self) -> bool:
        """Whether dense linear algebra is used for this model's solves."""
        return self.n_states <= self.DENSE_LIMIT

    def policy_transition(self, policy: np.ndarray):
        """``P_g(s'|s) = Σ_b g(b|s) C(s'|s,b)`` (dense ``(S,S)`` or sparse), terminal rows 0."""
        if self.dense:
            return np.einsum("sb,sbt->st", policy, self.cont3)
        S, B = policy.shape
        rows = sp.csr_array((policy.ravel(), (np.repeat(np.arange(S), B), np.arange(S * B))),
                            shape=(S, S * B))
        return rows @ self.cont

    @staticmethod
    def solve_discounted(P_pi: Any, rhs: np.ndarray, gamma: float,
                         transpose: bool = False) -> np.ndarray:
        """Solve ``(I − γ P_π) x = rhs`` (or its transpose), dense or sparse."""
        if isinstance(P_pi, np.ndarray):
            A = np.eye(P_pi.shape[0]) - gamma * P_pi
            return np.linalg.solve(A.T if transpose else A, rhs)
        import scipy.sparse.linalg as spla

        A = sp.eye_array(P_pi.shape[0]) - gamma * P_pi
        return spla.spsolve(sp.csc_array(A.T if transpose else A), rhs)


class StackedTabularModel:
    """N models of one tabular problem that share everything but θ: one structure (transitions,
    ``mu0``, terminal states), N reward tables. It answers what :class:`TabularModel` answers,
    for stacks: ``continuation_values`` of ``(N, S)`` values, ``policy_transition`` of
    ``(N, S, B)`` policies, ``solve_discounted`` of stacked systems, so that the solvers and
    exact formulas written for one model (soft Newton, leader values, the exact hypergradient)
    serve N runs at once.

    Each operation is the one :class:`TabularModel` performs, run by run, so the numbers are
    the same bit for bit: dense continuation values are one BLAS ``gemv`` per run (numpy's
    stacked matmul), ``P_g`` is accumulated over actions in the same order as ``einsum``, and
    stacked dense solves are LAPACK's ``gesv`` per matrix. Large (sparse) problems solve run
    by run with the single model's sparse solver (the factorisation dominates there).

    Args:
        base: the model of one run (its structure is shared).
        r_follower, r_leader: ``(N, S, B)`` reward tables.
    """

    def __init__(self, base: TabularModel, r_follower: np.ndarray, r_leader: np.ndarray):
        self.base = base
        self.r_follower = np.asarray(r_follower, dtype=np.float64)
        self.r_leader = np.asarray(r_leader, dtype=np.float64)
        self.mu0, self.terminal = base.mu0, base.terminal
        self.cont, self.cont3 = base.cont, base.cont3
        self.n_states, self.n_actions, self.dense = base.n_states, base.n_actions, base.dense
        self.n_runs = self.r_follower.shape[0]
        S, B = base.n_states, base.n_actions
        if self.r_follower.shape[1:] != (S, B) or self.r_leader.shape != self.r_follower.shape:
            raise ValueError(f"reward stacks must have shape (N, {S}, {B}), got "
                             f"{self.r_follower.shape} and {self.r_leader.shape}")
        # P_g(s, t) = Σ_b g(b|s) C(t|s, b): entries in CSR order, i.e. b increasing for every
        # (s, t), the order in which einsum accumulates them
        cont = sp.csr_array(base.cont)
        cont.sort_indices()
        self._rows = np.repeat(np.arange(S * B), np.diff(cont.indptr))
        self._cont_data = cont.data
        self._pg_cells, self._pg_key = np.unique((self._rows // B) * S + cont.indices,
                                                 return_inverse=True)

    def subset(self, runs: np.ndarray) -> "StackedTabularModel":
        """The models of some runs (an index array)."""
        sub = copy.copy(self)  # the structure is shared
        sub.r_follower, sub.r_leader = self.r_follower[runs], self.r_leader[runs]
        sub.n_runs = sub.r_follower.shape[0]
        return sub

    def continuation_values(self, v: np.ndarray) -> np.ndarray:
        """``(C v_n)(s, b)`` for ``(N, S)`` values: ``(N, S, B)``."""
        S, B = self.n_states, self.n_actions
        if self.cont3 is not None:
            out = np.matmul(self.cont3.reshape(S * B, S), v[..., None])[..., 0]
        else:
            out = (self.cont @ v.reshape(-1, S).T).T
        return out.reshape(v.shape[:-1] + (S, B))

    def policy_transition(self, policy: np.ndarray):
        """``P_g`` of each run: ``(N, S, S)`` dense, or a list of sparse matrices."""
        if not self.dense:
            return [self.base.policy_transition(g) for g in policy]
        S, B = self.n_states, self.n_actions
        n, cells = policy.shape[0], self._pg_cells.size
        w = policy.reshape(n, S * B)[:, self._rows] * self._cont_data
        keys = (np.arange(n)[:, None] * cells + self._pg_key).ravel()
        out = np.zeros((n, S * S))
        out[:, self._pg_cells] = np.bincount(keys, weights=w.ravel(),
                                             minlength=n * cells).reshape(n, cells)
        return out.reshape(n, S, S)

    def solve_discounted(self, P_pi: Any, rhs: np.ndarray, gamma: float,
                         transpose: bool = False) -> np.ndarray:
        """Solve ``(I − γ P_π,n) x_n = rhs_n`` (or the transposes) for every run; ``rhs`` is
        ``(N, S)`` or one ``(S,)`` right-hand side for all."""
        n = len(P_pi)
        rhs = np.broadcast_to(np.asarray(rhs, dtype=np.float64), (n, self.n_states))
        if isinstance(P_pi, np.ndarray):
            A = gamma * P_pi
            np.subtract(np.eye(P_pi.shape[-1]), A, out=A)  # I − γP, without a second copy
            if transpose:
                A = A.swapaxes(-1, -2)
            return np.linalg.solve(A, rhs[..., None])[..., 0]
        return np.stack([TabularModel.solve_discounted(P, b, gamma, transpose)
                         for P, b in zip(P_pi, rhs)])
