"""The exact model of a tabular configurable MDP at one θ (what exact solvers read)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["TabularModel"]


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
        return self.r_follower.shape[0]

    @property
    def n_actions(self) -> int:
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
