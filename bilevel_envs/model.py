"""The exact model of a tabular configurable MDP at one θ (what exact solvers read).

Linear solves ``(I − γ P_g) x = b`` (policy evaluation: the follower's Newton steps, the leader's
values, the exact hypergradient) go through an :class:`EliminationPlan` on models up to
:attr:`TabularModel.DENSE_LIMIT` states: sparse Gaussian elimination on a static schedule, the
same arithmetic for one model and for a :class:`StackedTabularModel` of N runs. Larger models
use SuperLU. ``TabularModel.SOLVER = "lapack"`` restores the previous solver (dense LAPACK up to
``DENSE_LIMIT`` states, dense continuation products): the same numbers to round-off.
"""

from __future__ import annotations

import copy
import heapq
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

__all__ = ["EliminationPlan", "PolicyTransition", "StackedTabularModel", "TabularModel"]


class PolicyTransition:
    """``P_g(s'|s) = Σ_b g(b|s) C(s'|s, b)`` of one policy or of a stack, as its entries on the
    model's sparsity pattern: what :meth:`TabularModel.policy_transition` returns for the
    elimination solver (:meth:`toarray` gives the dense matrix)."""

    def __init__(self, ops: "_Operators", cells: np.ndarray, stacked: bool):
        self.ops, self.cells, self.stacked = ops, cells, stacked

    @property
    def shape(self) -> tuple[int, ...]:
        """``(S, S)``, or ``(N, S, S)`` for a stack of ``N`` policies."""
        S = self.ops.plan.n_states
        return (self.cells.shape[1], S, S) if self.stacked else (S, S)

    def __len__(self) -> int:
        return self.cells.shape[1] if self.stacked else self.ops.plan.n_states

    def toarray(self) -> np.ndarray:
        """The dense matrix ``(S, S)`` (a stack: ``(N, S, S)``)."""
        plan = self.ops.plan
        S, n = plan.n_states, self.cells.shape[1]
        out = np.zeros((n, S, S))
        out[:, plan.cell_s, plan.cell_t] = self.cells.T
        return out if self.stacked else out[0]

    def __array__(self, dtype=None, copy=None):
        out = self.toarray()
        return out if dtype is None else out.astype(dtype)


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

    #: models up to this many states are solved in memory (elimination plan or dense LAPACK,
    #: see :attr:`SOLVER`); larger ones with sparse SuperLU solves
    DENSE_LIMIT = 1500
    #: the solver of models up to :attr:`DENSE_LIMIT` states: ``"elimination"`` (sparse
    #: Gaussian elimination on a static schedule, :class:`EliminationPlan`; the default) or
    #: ``"lapack"`` (the previous solver: dense ``(S, S)`` matrices, LAPACK ``gesv``, dense
    #: continuation products; the same numbers to round-off). Read at every call, by single
    #: models and stacks alike.
    SOLVER = "elimination"
    #: the elimination plan serves models with at most this many actions. Building its
    #: operators is Python work proportional to the nonzeros of ``C``, repaid over the many
    #: solves of one structure; a model with many actions (tabular tax design: 1,250) and
    #: θ-dependent dynamics (a new ``C`` every outer iteration) is solved densely instead.
    ELIMINATION_MAX_ACTIONS = 32

    def __post_init__(self):
        if self.cont is None:
            keep = np.repeat(~self.terminal, self.n_actions).astype(float)
            object.__setattr__(self, "cont", sp.csr_array(sp.diags_array(keep) @ self.transitions))
        # canonical index order from the start: the elimination operators need sorted rows,
        # and sorting later (in place, on a matrix the problem caches) would change the
        # summation order of products computed before and after, hence their last bits
        self.cont.sort_indices()

    def dense_continuation(self) -> np.ndarray | None:
        """The dense ``(S, B, S)`` continuation tensor of an in-memory model (built on first
        use; ``None`` for large models). Only ``SOLVER = "lapack"`` computes with it."""
        if self.cont3 is None and self.dense:
            S, B = self.r_follower.shape
            object.__setattr__(self, "cont3", self.cont.toarray().reshape(S, B, S))
        return self.cont3

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

    @property
    def operators(self) -> "_Operators | None":
        """The elimination solver's operators of this structure (``None``: another solver)."""
        if (TabularModel.SOLVER == "elimination" and self.dense
                and self.n_actions <= TabularModel.ELIMINATION_MAX_ACTIONS):
            return _operators(self.cont, self.n_actions)
        return None

    def continuation_values(self, v: np.ndarray) -> np.ndarray:
        """``(C v)(s, b) = Σ_{s'} C(s'|s,b) v(s')`` as an ``(S, B)`` array."""
        ops = self.operators
        if ops is not None:
            return ops.forward(v).reshape(self.r_follower.shape)
        if self.dense_continuation() is not None:
            return self.cont3 @ v
        return (self.cont @ v).reshape(self.r_follower.shape)

    def transposed_continuation_values(self, y: np.ndarray) -> np.ndarray:
        """``(Cᵀ y)(s') = Σ_{s,b} C(s'|s,b) y(s,b)`` of an ``(S, B)`` array: ``(S,)``."""
        ops = self.operators
        if ops is not None:
            return ops.backward(y.reshape(-1))
        if self.dense_continuation() is not None:
            return np.einsum("sbt,...sb->...t", self.cont3, y)
        return self.cont.T @ y.reshape(-1)

    def continuation(self) -> sp.csr_array:
        """``(S*B, S)`` transition matrix with terminal rows zeroed (no continuation value)."""
        return self.cont

    @property
    def dense(self) -> bool:
        """Whether the model is solved in memory (at most :attr:`DENSE_LIMIT` states)."""
        return self.n_states <= self.DENSE_LIMIT

    def policy_transition(self, policy: np.ndarray):
        """``P_g(s'|s) = Σ_b g(b|s) C(s'|s,b)``, terminal rows 0: a :class:`PolicyTransition`
        (the elimination solver), a dense ``(S, S)`` array (``SOLVER = "lapack"``) or a sparse
        matrix (large models); what :meth:`solve_discounted` takes."""
        ops = self.operators
        if ops is not None:
            return PolicyTransition(ops, ops.cells(np.asarray(policy, dtype=np.float64)[..., None]),
                                    stacked=False)
        if self.dense:
            return np.einsum("sb,sbt->st", policy, self.dense_continuation())
        S, B = policy.shape
        rows = sp.csr_array((policy.ravel(), (np.repeat(np.arange(S), B), np.arange(S * B))),
                            shape=(S, S * B))
        return rows @ self.cont

    @staticmethod
    def solve_discounted(P_pi: Any, rhs: np.ndarray, gamma: float,
                         transpose: bool = False) -> np.ndarray:
        """Solve ``(I − γ P_π) x = rhs`` (or its transpose): a :class:`PolicyTransition` by
        elimination, a dense array by LAPACK, a sparse matrix by SuperLU."""
        if isinstance(P_pi, PolicyTransition):
            rhs = np.asarray(rhs, dtype=np.float64)
            return P_pi.ops.plan.solve(P_pi.cells, gamma, rhs[:, None], transpose)[:, 0]
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
    serve N runs at once. The structural operations do not read the reward tables, so any
    number of runs (e.g. the unconverged runs of a Newton solve) can be passed to them.

    Each operation is the one :class:`TabularModel` performs, run by run, so the numbers are
    the same bit for bit: the elimination solver's operations act on every run alike (runs on
    the last axis, elementwise arithmetic and term-by-term sums, LAPACK ``gesv`` per matrix
    for the dense root). With ``TabularModel.SOLVER = "lapack"``: dense continuation values
    are one BLAS ``gemv`` per run (numpy's stacked matmul), ``P_g`` is accumulated over
    actions in the same order as ``einsum``, and stacked dense solves are LAPACK's ``gesv``
    per matrix. Large (sparse) problems solve run by run with the single model's sparse
    solver (the factorisation dominates there).

    Args:
        base: the model of one run (its structure is shared).
        r_follower, r_leader: ``(N, S, B)`` reward tables.
    """

    def __init__(self, base: TabularModel, r_follower: np.ndarray, r_leader: np.ndarray):
        self.base = base
        self.r_follower = np.asarray(r_follower, dtype=np.float64)
        self.r_leader = np.asarray(r_leader, dtype=np.float64)
        self.mu0, self.terminal = base.mu0, base.terminal
        self.cont = base.cont
        self.n_states, self.n_actions, self.dense = base.n_states, base.n_actions, base.dense
        self.n_runs = self.r_follower.shape[0]
        S, B = base.n_states, base.n_actions
        if self.r_follower.shape[1:] != (S, B) or self.r_leader.shape != self.r_follower.shape:
            raise ValueError(f"reward stacks must have shape (N, {S}, {B}), got "
                             f"{self.r_follower.shape} and {self.r_leader.shape}")
        self._legacy = None

    @property
    def operators(self) -> "_Operators | None":
        """The elimination solver's operators (``None``: another solver)."""
        return self.base.operators

    @property
    def cont3(self) -> np.ndarray | None:
        """The dense continuation tensor (``SOLVER = "lapack"``), see
        :meth:`TabularModel.dense_continuation`."""
        return self.base.dense_continuation()

    def _legacy_tables(self):
        # P_g(s, t) = Σ_b g(b|s) C(t|s, b): entries in CSR order, i.e. b increasing for every
        # (s, t), the order in which einsum accumulates them
        if self._legacy is None:
            S, B = self.n_states, self.n_actions
            cont = sp.csr_array(self.base.cont)
            cont.sort_indices()
            rows = np.repeat(np.arange(S * B), np.diff(cont.indptr))
            cells, key = np.unique((rows // B) * S + cont.indices, return_inverse=True)
            self._legacy = (rows, cont.data, cells, key)
        return self._legacy

    def subset(self, runs: np.ndarray) -> "StackedTabularModel":
        """The models of some runs (an index array)."""
        sub = copy.copy(self)  # the structure is shared
        sub.r_follower, sub.r_leader = self.r_follower[runs], self.r_leader[runs]
        sub.n_runs = sub.r_follower.shape[0]
        return sub

    def continuation_values(self, v: np.ndarray) -> np.ndarray:
        """``(C v_n)(s, b)`` for ``(N, S)`` values: ``(N, S, B)``."""
        S, B = self.n_states, self.n_actions
        ops = self.operators
        if ops is not None:
            flat = np.ascontiguousarray(v.reshape(-1, S).T)
            return ops.forward(flat).T.reshape(v.shape[:-1] + (S, B))
        if self.cont3 is not None:
            out = np.matmul(self.cont3.reshape(S * B, S), v[..., None])[..., 0]
        else:
            out = (self.cont @ v.reshape(-1, S).T).T
        return out.reshape(v.shape[:-1] + (S, B))

    def transposed_continuation_values(self, y: np.ndarray) -> np.ndarray:
        """``(Cᵀ y_n)(s')`` for ``(N, S, B)`` arrays: ``(N, S)``."""
        S, B = self.n_states, self.n_actions
        ops = self.operators
        if ops is not None:
            flat = np.ascontiguousarray(y.reshape(-1, S * B).T)
            return ops.backward(flat).T.reshape(y.shape[:-2] + (S,))
        if self.cont3 is not None:
            return np.einsum("sbt,...sb->...t", self.cont3, y)
        flat = y.reshape(y.shape[:-2] + (-1,))
        return (self.cont.T @ flat.T).T

    def policy_transition(self, policy: np.ndarray):
        """``P_g`` of each run: a stacked :class:`PolicyTransition` (the elimination solver),
        ``(N, S, S)`` dense (``SOLVER = "lapack"``), or a list of sparse matrices."""
        ops = self.operators
        if ops is not None:
            g = np.ascontiguousarray(np.moveaxis(np.asarray(policy, dtype=np.float64), 0, -1))
            return PolicyTransition(ops, ops.cells(g), stacked=True)
        if not self.dense:
            return [self.base.policy_transition(g) for g in policy]
        S, B = self.n_states, self.n_actions
        rows, data, cells_, key = self._legacy_tables()
        n, cells = policy.shape[0], cells_.size
        w = policy.reshape(n, S * B)[:, rows] * data
        keys = (np.arange(n)[:, None] * cells + key).ravel()
        out = np.zeros((n, S * S))
        out[:, cells_] = np.bincount(keys, weights=w.ravel(),
                                     minlength=n * cells).reshape(n, cells)
        return out.reshape(n, S, S)

    def solve_discounted(self, P_pi: Any, rhs: np.ndarray, gamma: float,
                         transpose: bool = False) -> np.ndarray:
        """Solve ``(I − γ P_π,n) x_n = rhs_n`` (or the transposes) for every run; ``rhs`` is
        ``(N, S)`` or one ``(S,)`` right-hand side for all."""
        n = len(P_pi)
        rhs = np.broadcast_to(np.asarray(rhs, dtype=np.float64), (n, self.n_states))
        if isinstance(P_pi, PolicyTransition):
            x = P_pi.ops.plan.solve(P_pi.cells, gamma, np.ascontiguousarray(rhs.T), transpose)
            return np.ascontiguousarray(x.T)
        if isinstance(P_pi, np.ndarray):
            A = gamma * P_pi
            np.subtract(np.eye(P_pi.shape[-1]), A, out=A)  # I − γP, without a second copy
            if transpose:
                A = A.swapaxes(-1, -2)
            return np.linalg.solve(A, rhs[..., None])[..., 0]
        return np.stack([TabularModel.solve_discounted(P, b, gamma, transpose)
                         for P, b in zip(P_pi, rhs)])

# ---------------------------------------------------------------------- the elimination solver
def _minimum_degree(adj: list[set[int]]) -> tuple[list[int], list[set[int]]]:
    """Minimum-degree elimination order of a symmetric graph (ties: the lowest state), with
    each node's neighbours when it is eliminated (its column of the filled factor)."""
    adj = [set(a) for a in adj]
    heap = [(len(a), i) for i, a in enumerate(adj)]
    heapq.heapify(heap)
    done = [False] * len(adj)
    order, fronts = [], []
    while heap:
        deg, k = heapq.heappop(heap)
        if done[k] or deg != len(adj[k]):
            continue  # eliminated, or a stale degree
        done[k] = True
        nb = adj[k]
        order.append(k)
        fronts.append(nb)
        for u in nb:
            au = adj[u]
            au.discard(k)
            au |= nb
            au.discard(u)
            heapq.heappush(heap, (len(au), u))
        adj[k] = set()
    return order, fronts


def _rounds(groups: list[list[Any]]) -> tuple[np.ndarray, list[Any], list[int]]:
    """Lay out the terms of several sums for term-by-term accumulation: targets sorted by
    number of terms (decreasing, stable), then the terms round-major (every target's first
    term, then every second term, ...). Returns (target order, flat terms, targets per round).
    """
    order = np.argsort([-len(g) for g in groups], kind="stable")
    counts = [len(groups[i]) for i in order]
    terms, sizes = [], []
    for w in range(counts[0] if counts else 0):
        active = [groups[i] for i, c in zip(order, counts) if c > w]
        sizes.append(len(active))
        terms.extend(g[w] for g in active)
    return order, terms, sizes


class EliminationPlan:
    """Gaussian elimination of ``(I − γ P_g) x = b`` on one model structure, for any policy
    ``g``, any ``γ`` and any number of systems at once.

    All matrices ``I − γ P_g`` of a tabular model share one sparsity pattern (the states each
    state can reach in one step, and the diagonal), and every such matrix is strictly
    diagonally dominant by rows (its transpose by columns), so Gaussian elimination needs no
    pivoting. The plan is built once per pattern: a minimum-degree order of the states, the
    pattern of the factors, and a static schedule over the levels of the elimination tree (the
    pivots of a level are independent). Each level is a few numpy operations on every entry it
    finalises, for all systems at once (systems on the last axis), so N systems cost about the
    numpy calls of one plus N times the arithmetic of the sparse factors (about 1,300
    multiply-adds on the 104-state Four-Rooms against ~375,000 for a dense LU). Entries are
    computed in Crout order (each ``a_rc − Σ_m l_rm u_mc``, the terms in increasing ``m``),
    the right-hand side as one more column of ``U`` (the forward substitution fused with the
    factorisation), then back substitution. The pivots at the top of the tree (a chain of at
    most ``ROOT_MAX``) form one small dense system (their Schur complement), solved by LAPACK.

    The arithmetic of one system does not depend on the others: every operation is
    elementwise or a term-by-term sum in a fixed order, and the dense root is LAPACK's
    ``gesv`` per matrix, so a system solved alone and the same system solved in a stack of
    any size give the same bits.
    """

    #: the dense root: at most this many states at the top of the elimination tree
    ROOT_MAX = 32

    def __init__(self, cont: sp.csr_array, n_actions: int):
        SB, S = cont.shape
        B = int(n_actions)
        self.n_states, self.n_actions = S, B
        rows = np.repeat(np.arange(SB), np.diff(cont.indptr))
        cells = np.unique((rows // B) * S + cont.indices)
        self.cell_s, self.cell_t = cells // S, cells % S
        adj: list[set[int]] = [set() for _ in range(S)]
        for a, b in zip(self.cell_s.tolist(), self.cell_t.tolist()):
            if a != b:
                adj[a].add(b)
                adj[b].add(a)
        order, fronts = _minimum_degree(adj)
        perm = np.asarray(order, dtype=np.int64)  # new -> old
        inv = np.empty(S, dtype=np.int64)
        inv[perm] = np.arange(S)  # old -> new
        self.perm, self.inv = perm, inv
        struct = [sorted(int(inv[u]) for u in f) for f in fronts]  # column k of L, new indices
        parent = [s[0] if s else -1 for s in struct]
        level = [0] * S
        for k in range(S):
            if parent[k] >= 0:
                level[parent[k]] = max(level[parent[k]], level[k] + 1)
        n_levels = max(level) + 1 if S else 0
        width = np.bincount(level, minlength=n_levels)
        top = n_levels
        while top > 0 and width[top - 1] == 1 and n_levels - top < self.ROOT_MAX:
            top -= 1
        if n_levels - top < 2:
            top = n_levels  # a dense root of 0 or 1 state is not worth a LAPACK call
        root = [k for k in range(S) if level[k] >= top]
        in_root = set(root)
        self.root = np.asarray(root, dtype=np.int64)
        rhs = S  # the right-hand side is column S of the factorisation (forward solve fused)
        slot: dict[tuple[int, int], int] = {}

        def at(i, j):
            return slot.setdefault((i, j), len(slot))

        for k in range(S):
            at(k, k)
            at(k, rhs)
            for j in struct[k]:
                at(k, j)
                at(j, k)
        for a in root:
            for b in root:
                at(a, b)
        self.n_slots = len(slot)
        s_new, t_new = inv[self.cell_s], inv[self.cell_t]
        self.cell_slot = np.array([slot[(a, b)] for a, b in zip(s_new.tolist(), t_new.tolist())],
                                  dtype=np.int64)
        self.cell_slot_t = np.array([slot[(b, a)] for a, b in zip(s_new.tolist(),
                                                                  t_new.tolist())],
                                    dtype=np.int64)
        self.cell_diag = np.flatnonzero(self.cell_s == self.cell_t)
        no_cell = np.setdiff1d(np.arange(S), self.cell_s[self.cell_diag])
        self.unit_slots = np.array([slot[(int(inv[s]), int(inv[s]))] for s in no_cell],
                                   dtype=np.int64)
        self.rhs_slots = np.array([slot[(k, rhs)] for k in range(S)], dtype=np.int64)
        # Crout: entry (r, c) is final once every pivot m < min(r, c) with r, c in its front
        # has been subtracted: a_rc − Σ_m l_rm u_mc, the terms in increasing m
        terms: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for m in range(S):
            if m in in_root:
                continue
            front = struct[m]
            for r in front:
                l_rm = slot[(r, m)]
                for c in front + [rhs]:
                    terms.setdefault((r, c), []).append((l_rm, slot[(m, c)]))
        self.levels = []
        by_level: list[list[int]] = [[] for _ in range(top)]
        for k in range(S):
            if level[k] < top:
                by_level[level[k]].append(k)
        for pivots in by_level:
            targets = []
            for k in pivots:
                targets += [(k, k), (k, rhs)] + [(k, j) for j in struct[k]]
                targets += [(i, k) for i in struct[k]]
            order_t, flat, sizes = _rounds([terms.get(t, []) for t in targets])
            targets = [targets[i] for i in order_t]
            pos = {t: i for i, t in enumerate(targets)}
            lower = [i for i, (r, c) in enumerate(targets) if c != rhs and r > c]
            self.levels.append(dict(
                slots=np.array([slot[t] for t in targets], dtype=np.int64),
                left=np.array([a for a, _ in flat], dtype=np.int64),
                right=np.array([b for _, b in flat], dtype=np.int64),
                sizes=sizes,
                lower=np.array(lower, dtype=np.int64),
                pivot=np.array([pos[(targets[i][1], targets[i][1])] for i in lower],
                               dtype=np.int64)))
        m = len(root)
        targets = [(a, b) for a in root for b in root] + [(a, rhs) for a in root]
        order_t, flat, sizes = _rounds([terms.get(t, []) for t in targets])
        self.root_level = dict(
            slots=np.array([slot[targets[i]] for i in order_t], dtype=np.int64),
            left=np.array([a for a, _ in flat], dtype=np.int64),
            right=np.array([b for _, b in flat], dtype=np.int64),
            sizes=sizes, unsort=np.argsort(order_t, kind="stable"), m=m)
        # back substitution, top down: x_k = (y_k − Σ_j u_kj x_j) / u_kk, j in k's front
        self.back = []
        for pivots in reversed(by_level):
            order_t, flat, sizes = _rounds([[(slot[(k, j)], j) for j in struct[k]]
                                            for k in pivots])
            pivots = [pivots[i] for i in order_t]
            self.back.append(dict(
                pivots=np.array(pivots, dtype=np.int64),
                u=np.array([a for a, _ in flat], dtype=np.int64),
                x=np.array([b for _, b in flat], dtype=np.int64), sizes=sizes,
                y=np.array([slot[(k, rhs)] for k in pivots], dtype=np.int64),
                diag=np.array([slot[(k, k)] for k in pivots], dtype=np.int64)))
        self.n_terms = (sum(lv["left"].size for lv in self.levels)
                        + self.root_level["left"].size)
        for lv in self.levels + [self.root_level] + self.back:
            # the target of every term in the round-major layout: what ``ufunc.at`` reads
            lv["target"] = (np.concatenate([np.arange(k) for k in lv["sizes"]])
                            if lv["sizes"] else np.zeros(0, dtype=np.int64))
        for lv in self.levels + [self.root_level]:
            lv["target_slot"] = lv["slots"][lv["target"]]
        for lv in self.levels:
            lv["lower_slot"] = lv["slots"][lv["lower"]]
            lv["pivot_slot"] = lv["slots"][lv["pivot"]]

    @staticmethod
    def _accumulate(v: np.ndarray, terms: np.ndarray, sizes: list[int]) -> None:
        """``v[t] −= terms of t``, term by term (round-major layout of :func:`_rounds`)."""
        off = 0
        for size in sizes:
            v[:size] -= terms[off:off + size]
            off += size

    def solve(self, cells: np.ndarray, gamma: float, rhs: np.ndarray,
              transpose: bool = False) -> np.ndarray:
        """Solve ``(I − γ P) x = rhs`` (or the transpose) for ``n`` systems at once.

        Args:
            cells: ``(n_cells, n)`` the entries of each ``P`` on the pattern (:meth:`cells`).
            gamma: the discount.
            rhs: ``(S, n)`` right-hand sides.
        Returns:
            ``(S, n)`` solutions.
        """
        n = cells.shape[1]
        if n == 1:
            return self._solve_one(cells[:, 0], gamma, rhs[:, 0], transpose)[:, None]
        F = self._entries(cells, gamma, rhs, transpose)
        for lv in self.levels:
            v = F[lv["slots"]]
            if lv["sizes"]:
                self._accumulate(v, F[lv["left"]] * F[lv["right"]], lv["sizes"])
            v[lv["lower"]] /= v[lv["pivot"]]
            F[lv["slots"]] = v
        x = np.empty((self.n_states, n))
        rl = self.root_level
        if rl["m"]:
            m = rl["m"]
            v = F[rl["slots"]]
            if rl["sizes"]:
                self._accumulate(v, F[rl["left"]] * F[rl["right"]], rl["sizes"])
            v = v[rl["unsort"]].T  # (n, m·m + m), row-major root matrix then its rhs
            sol = np.linalg.solve(v[:, :m * m].reshape(n, m, m), v[:, m * m:, None])
            x[self.root] = sol[..., 0].T
        for lv in self.back:
            y = F[lv["y"]]
            if lv["sizes"]:
                self._accumulate(y, F[lv["u"]] * x[lv["x"]], lv["sizes"])
            x[lv["pivots"]] = y / F[lv["diag"]]
        return x[self.inv]

    def _entries(self, cells: np.ndarray, gamma: float, rhs: np.ndarray,
                 transpose: bool) -> np.ndarray:
        """The factorisation's slots before elimination: ``I − γ P`` (or its transpose) on the
        pattern, 1 on states without a cell, the permuted right-hand side (systems on the last
        axis, or one system as 1-D arrays)."""
        F = np.zeros((self.n_slots,) + cells.shape[1:])
        a = cells * -gamma
        a[self.cell_diag] += 1.0
        F[self.cell_slot_t if transpose else self.cell_slot] = a
        F[self.unit_slots] = 1.0
        F[self.rhs_slots] = rhs[self.perm]
        return F

    def _solve_one(self, cells: np.ndarray, gamma: float, rhs: np.ndarray,
                   transpose: bool) -> np.ndarray:
        """:meth:`solve` for one system, on 1-D arrays: the same operations in the same order,
        hence the same bits. Each level's term-by-term sums are one unbuffered
        ``np.subtract.at`` over the round-major terms (it subtracts the terms of a target in
        the order given), which replaces a Python loop over rounds by one call: one system
        has no stack to share the cost of the calls."""
        F = self._entries(cells, gamma, rhs, transpose)
        subtract_in_order = np.subtract.at
        # the terms of a level read entries of earlier levels only: subtract them in F itself
        for lv in self.levels:
            if lv["sizes"]:
                subtract_in_order(F, lv["target_slot"], F[lv["left"]] * F[lv["right"]])
            F[lv["lower_slot"]] /= F[lv["pivot_slot"]]
        x = np.empty(self.n_states)
        rl = self.root_level
        if rl["m"]:
            m = rl["m"]
            if rl["sizes"]:
                subtract_in_order(F, rl["target_slot"], F[rl["left"]] * F[rl["right"]])
            v = F[rl["slots"][rl["unsort"]]]  # the root matrix row-major, then its rhs
            x[self.root] = np.linalg.solve(v[:m * m].reshape(1, m, m),
                                           v[m * m:].reshape(1, m, 1))[0, :, 0]
        for lv in self.back:
            y = F[lv["y"]]
            if lv["sizes"]:
                subtract_in_order(y, lv["target"], F[lv["u"]] * x[lv["x"]])
            x[lv["pivots"]] = y / F[lv["diag"]]
        return x[self.inv]


class _Operators:
    """The continuation operators of one model on an :class:`EliminationPlan`: ``P_g`` on the
    plan's pattern, ``C v`` and ``Cᵀ y``, each a few gathers and term-by-term sums (the same
    arithmetic for one system and for a stack)."""

    def __init__(self, plan: EliminationPlan, cont: sp.csr_array):
        S, B = plan.n_states, plan.n_actions
        cont = sp.csr_array(cont)
        cont.sort_indices()
        rows = np.repeat(np.arange(S * B), np.diff(cont.indptr))
        self.plan = plan
        # P_g(s, t) = Σ_b g(b|s) C(t|s, b): one coefficient per (cell, b)
        cell_of = {(int(s), int(t)): i for i, (s, t) in enumerate(zip(plan.cell_s, plan.cell_t))}
        self.cell_coef = np.zeros((len(cell_of), B))
        for r, t, c in zip(rows.tolist(), cont.indices.tolist(), cont.data.tolist()):
            self.cell_coef[cell_of[(r // B, t)], r % B] = c
        self.cell_state = plan.cell_s
        # (C v)(s, b) = Σ_t C(t|s, b) v(t): successors padded to the longest row (coef 0)
        width = int(np.diff(cont.indptr).max()) if cont.nnz else 1
        self.succ = np.zeros((S * B, width), dtype=np.int64)
        self.succ_coef = np.zeros((S * B, width))
        pos = np.arange(cont.nnz) - cont.indptr[rows]
        self.succ[rows, pos] = cont.indices
        self.succ_coef[rows, pos] = cont.data
        # (Cᵀ y)(t) = Σ_{s,b} C(t|s, b) y(s, b): predecessors padded likewise
        csc = sp.csc_array(cont)
        csc.sort_indices()
        cols = np.repeat(np.arange(S), np.diff(csc.indptr))
        width = int(np.diff(csc.indptr).max()) if csc.nnz else 1
        self.pred = np.zeros((S, width), dtype=np.int64)
        self.pred_coef = np.zeros((S, width))
        pos = np.arange(csc.nnz) - csc.indptr[cols]
        self.pred[cols, pos] = csc.indices
        self.pred_coef[cols, pos] = csc.data

    @staticmethod
    def _padded_sum(values: np.ndarray, coef: np.ndarray) -> np.ndarray:
        """``Σ_w coef[:, w] values[:, w]`` term by term (``values`` ``(R, W, ...)``)."""
        values *= coef.reshape(coef.shape + (1,) * (values.ndim - 2))
        if values.shape[1] == 1:
            return values[:, 0].copy()
        out = values[:, 0] + values[:, 1]
        for w in range(2, values.shape[1]):
            out += values[:, w]
        return out

    def cells(self, policy: np.ndarray) -> np.ndarray:
        """``P_g`` on the pattern for policies ``(S, B, n)``: ``(n_cells, n)``."""
        return self._padded_sum(policy[self.cell_state], self.cell_coef)

    def forward(self, v: np.ndarray) -> np.ndarray:
        """``C v`` for values ``(S, n)``: ``(S·B, n)``."""
        return self._padded_sum(v[self.succ], self.succ_coef)

    def backward(self, y: np.ndarray) -> np.ndarray:
        """``Cᵀ y`` for ``(S·B, n)``: ``(S, n)``."""
        return self._padded_sum(y[self.pred], self.pred_coef)


_PLANS: dict[tuple, EliminationPlan] = {}
_OPERATORS: dict[tuple, _Operators] = {}


def _cached(cache: dict, key: tuple, make):
    value = cache.get(key)
    if value is None:
        if len(cache) >= 8:
            cache.pop(next(iter(cache)))
        value = cache[key] = make()
    return value


def _operators(cont: sp.csr_array, n_actions: int) -> _Operators:
    """The operators of a continuation matrix: cached on it, and per content (the problems
    of a sweep build equal matrices); plans are cached per sparsity pattern."""
    ops = cont.__dict__.get("_bilevel_operators")
    if ops is None:
        pattern = (cont.shape, int(n_actions), np.asarray(cont.indptr).tobytes(),
                   np.asarray(cont.indices).tobytes())
        plan = _cached(_PLANS, pattern, lambda: EliminationPlan(cont, n_actions))
        ops = _cached(_OPERATORS, pattern + (np.asarray(cont.data).tobytes(),),
                      lambda: _Operators(plan, cont))
        cont.__dict__["_bilevel_operators"] = ops
    return ops
