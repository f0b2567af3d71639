"""Pure logic of the bi-level LQR Markov game (paper §5.4, App. C.4 eqs. 52–54, C.6 eq. 109).

``s' = A s + B b + C a``, follower reward ``r_F = −(sᵀQ̄s + bᵀR̄b)`` (eq. 53), leader reward
``r_L = exp(−½ (s − s*)ᵀ Σ (s − s*))`` (§5.4), both of the pre-move state. No process noise:
the only randomness is in the players' policies.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["LQRGameParams"]


def _mat(x, name: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
    arr = np.array(x, dtype=np.float64, ndmin=2)
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True)
class LQRGameParams:
    """Matrices of the LQR game; defaults are the paper's (App. C.6, eq. 109).

    Attributes:
        A: ``(n, n)`` state matrix. B: ``(n, m)`` follower input. C: ``(n, k)`` leader input.
        Qbar: ``(n, n)`` PSD state cost. Rbar: ``(m, m)`` PD action cost.
        s0: ``(n,)`` deterministic start state. target: ``(n,)`` leader's target ``s*``.
        sharpness: ``(n, n)`` PSD ``Σ`` of the leader reward (paper: ``diag(5, 100)²``).
    """

    A: np.ndarray = field(default_factory=lambda: [[0.0, 1.0], [0.0, 0.0]])
    B: np.ndarray = field(default_factory=lambda: [[0.0], [0.1]])
    C: np.ndarray = field(default_factory=lambda: [[0.1], [0.0]])
    Qbar: np.ndarray = field(default_factory=lambda: np.eye(2))
    Rbar: np.ndarray = field(default_factory=lambda: np.eye(1))
    s0: np.ndarray = field(default_factory=lambda: [1.0, 0.0])
    target: np.ndarray = field(default_factory=lambda: [-0.8, 0.0])
    sharpness: np.ndarray = field(default_factory=lambda: np.diag([5.0, 100.0]) ** 2)

    def __post_init__(self):
        A = _mat(self.A, "A")
        n = A.shape[0]
        if A.shape != (n, n):
            raise ValueError(f"A must be square, got {A.shape}")
        B = _mat(self.B, "B")
        C = _mat(self.C, "C")
        if B.shape[0] != n or C.shape[0] != n:
            raise ValueError(f"B and C must have {n} rows, got {B.shape} and {C.shape}")
        m, k = B.shape[1], C.shape[1]
        Q = _mat(self.Qbar, "Qbar", (n, n))
        R = _mat(self.Rbar, "Rbar", (m, m))
        if np.linalg.eigvalsh((Q + Q.T) / 2).min() < -1e-12:
            raise ValueError("Qbar must be positive semi-definite")
        if np.linalg.eigvalsh((R + R.T) / 2).min() <= 0:
            raise ValueError("Rbar must be positive definite")
        sig = _mat(self.sharpness, "sharpness", (n, n))
        s0 = _mat(self.s0, "s0", (1, n))[0]
        tgt = _mat(self.target, "target", (1, n))[0]
        for name, val in (("A", A), ("B", B), ("C", C), ("Qbar", Q), ("Rbar", R), ("s0", s0),
                          ("target", tgt), ("sharpness", sig)):
            object.__setattr__(self, name, val)

    @property
    def dims(self) -> tuple[int, int, int]:
        """``(n, m, k)``: state, follower-action and leader-action dimensions."""
        return self.A.shape[0], self.B.shape[1], self.C.shape[1]

    def step(self, s: np.ndarray, a: np.ndarray, b: np.ndarray):
        """Batched ``(s', r_F, r_L)`` for ``s (N, n)``, ``a (N, k)``, ``b (N, m)``."""
        nxt = s @ self.A.T + b @ self.B.T + a @ self.C.T
        r_f = -(np.einsum("ni,ij,nj->n", s, self.Qbar, s)
                + np.einsum("ni,ij,nj->n", b, self.Rbar, b))
        return nxt, r_f, self.leader_reward(s)

    def leader_reward(self, s: np.ndarray) -> np.ndarray:
        """``exp(−½ (s − s*)ᵀ Σ (s − s*))`` for a batch ``(N, n)``."""
        d = s - self.target
        return np.exp(-0.5 * np.einsum("ni,ij,nj->n", d, self.sharpness, d))
