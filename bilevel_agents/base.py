"""The leader protocol shared by every method, ours or a user's.

A leader owns the leader parameter θ, a random generator and (optionally) a critic. It talks to
the problem only through the :class:`~bilevel_envs.wrappers.BestResponse` wrapper's public API
(``config``, ``set_config``, ``rollout``, ``policy``, ``soft_v``, the problem's torch terms).
One outer iteration is ``update()``: estimate the hypergradient from a fresh batch, clip it,
take an ascent step, let the follower re-solve. Every leader trains through the same loop
(:func:`bilevel_agents.trainer.train`)::

    class MyLeader(Leader):
        def estimate_gradient(self):
            ...                      # any estimate of ∇θ J_L at self.theta
            return grad

    MyLeader(br, lr=0.1, seed=0).learn(1000)
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

import numpy as np

__all__ = ["Leader", "clip_by_global_norm"]


def clip_by_global_norm(grad: np.ndarray, max_norm: float | None) -> np.ndarray:
    """Scale ``grad`` so that its Euclidean norm is at most ``max_norm`` (``None``: no clip)."""
    if max_norm is None:
        return grad
    norm = float(np.linalg.norm(grad))
    return grad * (max_norm / norm) if norm > max_norm else grad


class Leader(abc.ABC):
    """Base class: θ, SGD ascent with global-norm clipping, checkpoints, the shared loop.

    Args:
        br: the follower's best-response wrapper.
        lr: ascent step size α > 0.
        max_grad_norm: clip the total gradient to this norm (paper: 1.0); ``None`` = no clip.
        seed: seeds θ's initialisation, the rollouts and the critic.
        theta0: initial θ; default ``N(0, init_scale²)`` as in the authors' code.
        init_scale: standard deviation of the default initialisation.
        lr_final: if set, the step size decays geometrically from ``lr`` to ``lr_final`` over
            ``lr_decay_iterations`` iterations, then stays there (the paper: constant ``lr``).
        lr_decay_iterations: length of the decay (required with ``lr_final``).
        optimizer: ``"sgd"`` (the paper) or ``"adam"`` (Adam on the clipped gradient, ascent).
    """

    #: short name used by the CLI and in result folders
    name: ClassVar[str] = "leader"

    def __init__(self, br: Any, *, lr: float = 0.1, max_grad_norm: float | None = 1.0,
                 seed: int | None = None, theta0: Any = None, init_scale: float = 0.01,
                 lr_final: float | None = None, lr_decay_iterations: int | None = None,
                 optimizer: str = "sgd"):
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if not init_scale >= 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
        if lr_final is not None and not (lr_final > 0 and lr_decay_iterations
                                         and int(lr_decay_iterations) >= 1):
            raise ValueError(f"lr_final must be > 0 with lr_decay_iterations >= 1, got "
                             f"lr_final={lr_final!r}, lr_decay_iterations={lr_decay_iterations!r}")
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")
        self.br = br
        self.optimizer = optimizer
        self.lr, self.max_grad_norm, self.seed = float(lr), max_grad_norm, seed
        self.lr_final = None if lr_final is None else float(lr_final)
        self.lr_decay_iterations = None if lr_final is None else int(lr_decay_iterations)
        self.init_scale = float(init_scale)
        self.rng = np.random.default_rng(seed)
        shape = br.config_space.shape
        theta0 = self.rng.normal(0.0, init_scale, size=shape) if theta0 is None else theta0
        self.br.set_config(theta0)
        self.iteration = 0
        self._adam = {"m": np.zeros(shape), "v": np.zeros(shape), "t": 0}
        #: extra per-iteration diagnostics set by estimate_gradient (critic error, episodes...)
        self.last_metrics: dict[str, float] = {}

    # ------------------------------------------------------------------ the method
    @property
    def theta(self) -> np.ndarray:
        """The current leader parameter (a copy)."""
        return self.br.config

    @property
    def current_lr(self) -> float:
        """The step size of the next update (constant unless ``lr_final`` is set)."""
        if self.lr_final is None:
            return self.lr
        frac = min(self.iteration / self.lr_decay_iterations, 1.0)
        return self.lr * (self.lr_final / self.lr) ** frac

    @abc.abstractmethod
    def estimate_gradient(self) -> np.ndarray:
        """One estimate of ``∇θ J_L`` at the current θ from a fresh batch."""

    def update(self) -> dict[str, float]:
        """One outer iteration: estimate, clip, ascend, re-solve the follower."""
        grad = np.asarray(self.estimate_gradient(), dtype=np.float64)
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"non-finite gradient estimate at iteration {self.iteration}")
        step = clip_by_global_norm(grad, self.max_grad_norm)
        if self.optimizer == "adam":
            step = self._adam_direction(step)
        self.br.set_config(self.theta + self.current_lr * step)
        self.iteration += 1
        return {"grad_norm": float(np.linalg.norm(grad)), **self.last_metrics}

    def _adam_direction(self, grad: np.ndarray, b1: float = 0.9, b2: float = 0.999,
                        eps: float = 1e-8) -> np.ndarray:
        """Adam's bias-corrected direction m̂ / (√v̂ + ε) (Kingma & Ba, 2015)."""
        m, v = self._adam["m"], self._adam["v"]
        m[:] = b1 * m + (1 - b1) * grad
        v[:] = b2 * v + (1 - b2) * grad**2
        self._adam["t"] = t = self._adam["t"] + 1
        return (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)

    def learn(self, iterations: int, **train_kwargs: Any) -> list[dict[str, float]]:
        """Train for ``iterations`` outer iterations with the shared loop
        (:func:`bilevel_agents.trainer.train`; progress bar, logs, checkpoints)."""
        from bilevel_agents.trainer import train

        return train(self, iterations, **train_kwargs)

    # ------------------------------------------------------------------ bookkeeping
    def hparams(self) -> dict[str, Any]:
        """The constructor arguments that define the run (saved beside the results)."""
        return {"leader": self.name, "lr": self.lr, "max_grad_norm": self.max_grad_norm,
                "seed": self.seed, "init_scale": self.init_scale, "lr_final": self.lr_final,
                "lr_decay_iterations": self.lr_decay_iterations, "optimizer": self.optimizer}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: θ, iteration, RNG state, critic."""
        state = {"theta": self.theta, "iteration": self.iteration,
                 "rng": self.rng.bit_generator.state,
                 "adam": {"m": self._adam["m"].copy(), "v": self._adam["v"].copy(),
                          "t": int(self._adam["t"])}}
        critic = getattr(self, "critic", None)
        if critic is not None:
            state["critic"] = critic.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.br.set_config(state["theta"])
        self.iteration = int(state["iteration"])
        self.rng.bit_generator.state = state["rng"]
        if "adam" in state:
            adam = state["adam"]
            self._adam = {"m": np.array(adam["m"]), "v": np.array(adam["v"]), "t": int(adam["t"])}
        critic = getattr(self, "critic", None)
        if critic is not None and "critic" in state:
            critic.load_state_dict(state["critic"])
