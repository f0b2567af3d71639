"""MLP TD critic ``Q_L(s, b)`` for continuous configurable MDPs (paper Alg. 3, App. C.5).

The leader's critic of BC-HG / HPGD(TD) on continuous problems: an MLP on ``[s, b]`` trained by
semi-gradient TD(0) on the SARSA target ``y = r_L + γ_L Q(s', b')`` (Alg. 3), with
``V_L(s) = E_{b~g} Q_L(s, b)`` (Alg. 1 line 10) taken over the follower's Gaussian policy.

Cheaper than the authors' design, same role:

- **Warm start.** The authors re-initialise the network every outer iteration and run 5000
  full-batch Adam steps (lr 1e-4). θ moves little per iteration, so ``Q_L^{θ†}`` does too: we
  keep the network and run ``steps`` (default 100) Adam steps per iteration, with a longer
  ``first_steps`` fit on the first batch. ``warm_start=False`` reproduces the authors' scheme.
- **Normalisation.** Inputs are standardised and the output is scaled with statistics frozen at
  the first batch (so warm starts stay consistent); this lets a larger Adam step (1e-3) work.
- **All transitions are used.** Where an episode was cut by the time limit or the batch end,
  the bootstrap uses ``b' ~ g(·|s')`` drawn from the follower (the process does not terminate
  there); the authors drop those transitions. Terminal transitions do not bootstrap.
- **V_L by sigma points.** ``E_{b~N(μ, Σ)} Q(s, b)`` is estimated with the ``2m`` symmetric
  sigma points ``μ ± √m L e_i`` (``LLᵀ = Σ``), exact for any ``Q`` quadratic in ``b`` (such as the
  true ``Q_L`` of an LQR problem), in place of 256 random draws per state;
  ``v_method="samples"`` gives the authors' Monte Carlo average.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch import nn

from bilevel_agents.estimators.returns import discounted_reverse_sum
from bilevel_envs.core import Batch

__all__ = ["MLPCritic"]

_V_METHODS = ("sigma", "samples")


def _mlp(n_in: int, hidden: tuple[int, ...], gen: torch.Generator,
         dtype: torch.dtype) -> nn.Sequential:
    layers: list[nn.Module] = []
    sizes = (n_in, *hidden)
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.ReLU()]
    layers.append(nn.Linear(sizes[-1], 1))
    net = nn.Sequential(*layers).to(dtype)
    with torch.no_grad():
        linears = [m for m in net if isinstance(m, nn.Linear)]
        for i, lin in enumerate(linears):
            gain = 0.01 if i == len(linears) - 1 else np.sqrt(2.0)
            # orthogonal init from our own generator (reproducible per seed)
            w = torch.randn(lin.weight.shape, generator=gen, dtype=torch.float64)
            q, r = torch.linalg.qr(w if w.shape[0] >= w.shape[1] else w.T)
            q = q * torch.sign(torch.diagonal(r))
            lin.weight.copy_((gain * (q if w.shape[0] >= w.shape[1] else q.T)).to(dtype))
            lin.bias.zero_()
    return net


class MLPCritic:
    """TD(0) MLP critic ``Q_L(s, b)`` (paper Alg. 3); a :class:`~bilevel_agents.critics.Critic`.

    Args:
        state_dim: dimension of ``s``.
        action_dim: dimension of the follower's action ``b``.
        gamma: leader discount γ_L.
        hidden: hidden layer sizes (paper: (64, 64)).
        lr: Adam step size α_TD.
        steps: Adam steps per outer iteration when warm-started.
        first_steps: Adam steps of the first fit (and of every fit if ``warm_start=False``).
        warm_start: keep the network across iterations (``False``: re-initialise to the same
            initial weights each iteration, as the authors do).
        minibatch: transitions per Adam step (sampled without replacement); ``None`` = full
            batch (the authors' choice).
        max_grad_norm: global-norm clip of the critic's gradient (authors: 1.0).
        v_method: ``"sigma"`` (2m sigma points, exact for quadratic Q) or ``"samples"``.
        v_samples: follower draws per state for ``v_method="samples"`` (authors: 256).
        dtype: ``"float32"`` (fast, default) or ``"float64"``.
        seed: seeds the initial weights, minibatches and bootstrap draws.
    """

    def __init__(self, state_dim: int, action_dim: int, *, gamma: float,
                 hidden: tuple[int, ...] = (64, 64), lr: float = 1e-3, steps: int = 50,
                 first_steps: int = 1000, warm_start: bool = True, minibatch: int | None = 1000,
                 max_grad_norm: float | None = 1.0, v_method: str = "sigma",
                 v_samples: int = 256, dtype: str = "float32", seed: int | None = None):
        for name, val in (("state_dim", state_dim), ("action_dim", action_dim),
                          ("first_steps", first_steps), ("v_samples", v_samples)):
            if int(val) < 1:
                raise ValueError(f"{name} must be >= 1, got {val!r}")
        if int(steps) < 0:
            raise ValueError(f"steps must be >= 0, got {steps!r}")
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must be in [0, 1), got {gamma!r}")
        if not (np.isfinite(lr) and lr > 0):
            raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
        if v_method not in _V_METHODS:
            raise ValueError(f"v_method must be one of {_V_METHODS}, got {v_method!r}")
        if minibatch is not None and int(minibatch) < 1:
            raise ValueError(f"minibatch must be >= 1 or None, got {minibatch!r}")
        if dtype not in ("float32", "float64"):
            raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
        if any(int(h) < 1 for h in hidden):
            raise ValueError(f"hidden sizes must be >= 1, got {hidden!r}")
        self.state_dim, self.action_dim = int(state_dim), int(action_dim)
        self.gamma, self.lr = float(gamma), float(lr)
        self.hidden = tuple(int(h) for h in hidden)
        self.steps, self.first_steps = int(steps), int(first_steps)
        self.warm_start = bool(warm_start)
        self.minibatch = None if minibatch is None else int(minibatch)
        self.max_grad_norm = max_grad_norm
        self.v_method, self.v_samples = v_method, int(v_samples)
        self.rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(self.rng.integers(2**62)))
        self.dtype = getattr(torch, dtype)
        self.net = _mlp(self.state_dim + self.action_dim, self.hidden, gen, self.dtype)
        self._init_state = copy.deepcopy(self.net.state_dict())
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self.norm: dict[str, np.ndarray] | None = None  # frozen at the first batch
        self.n_updates = 0

    # ------------------------------------------------------------------ network I/O
    def _inputs(self, states: np.ndarray, actions: np.ndarray) -> torch.Tensor:
        x = np.concatenate([np.asarray(states, np.float64).reshape(-1, self.state_dim),
                            np.asarray(actions, np.float64).reshape(-1, self.action_dim)], 1)
        return torch.from_numpy((x - self.norm["x_mean"]) / self.norm["x_std"]).to(self.dtype)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1) * self.norm["y_scale"] + self.norm["y_shift"]

    def _fit_normaliser(self, batch: Batch) -> None:
        x = np.concatenate([batch.obs.reshape(len(batch), -1),
                            batch.actions.reshape(len(batch), -1)], 1).astype(np.float64)
        ret = discounted_reverse_sum(batch.r_leader, self.gamma, batch.episode_end)
        self.norm = {"x_mean": x.mean(0), "x_std": x.std(0) + 1e-8,
                     "y_shift": float(ret.mean()), "y_scale": float(ret.std() + 1e-8)}

    # ------------------------------------------------------------------ protocol
    def q(self, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``Q_L(s, b)`` per row, ``(N,)``."""
        if self.norm is None:
            raise RuntimeError("the critic has not been fitted yet: call update(batch, br)")
        with torch.no_grad():
            return self._forward(self._inputs(states, actions)).numpy().astype(np.float64)

    def v(self, states: np.ndarray, br: Any) -> np.ndarray:
        """``V_L(s) = E_{b~g(·|s)} Q_L(s, b)`` (Alg. 1 line 10) over the follower's policy."""
        s = np.asarray(states, dtype=np.float64).reshape(-1, self.state_dim)
        n, m = s.shape[0], self.action_dim
        if self.v_method == "sigma":
            mean, cov = br.policy(s)
            offsets = np.sqrt(m) * np.linalg.cholesky(cov).T  # rows: √m L e_i
            pts = mean[:, None, :] + np.concatenate([offsets, -offsets])[None]  # (n, 2m, m)
            q = self.q(np.repeat(s, 2 * m, axis=0), pts.reshape(-1, m))
            return q.reshape(n, 2 * m).mean(1)
        rep = np.repeat(s, self.v_samples, axis=0)
        b = br.follower.act(rep, self.rng)
        return self.q(rep, b).reshape(n, self.v_samples).mean(1)

    def update(self, batch: Batch, br: Any) -> dict[str, float]:
        """Fit on one batch by semi-gradient TD(0) on ``r_L + γ Q(s', b')`` (Alg. 3)."""
        n = len(batch)
        if self.norm is None:
            self._fit_normaliser(batch)
        cold = self.n_updates == 0 or not self.warm_start
        if cold and self.n_updates > 0:  # authors' scheme: same initial weights every time
            self.net.load_state_dict(self._init_state)
            self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        # next action: the same episode's next one, or a fresh follower draw where it was cut
        next_actions = np.empty_like(batch.actions, dtype=np.float64)
        next_actions[:-1] = batch.actions[1:]
        cut = batch.episode_end & ~batch.terminated
        if cut.any():
            next_actions[cut] = br.follower.act(batch.next_obs[cut], self.rng)
        boot = torch.from_numpy(np.where(batch.terminated, 0.0, self.gamma)).to(self.dtype)
        x = self._inputs(batch.obs, batch.actions)
        x_next = self._inputs(batch.next_obs, next_actions)
        r = torch.from_numpy(np.asarray(batch.r_leader, dtype=np.float64)).to(self.dtype)
        steps = self.first_steps if cold else self.steps
        scale = self.norm["y_scale"]
        sq = 0.0
        for _ in range(steps):
            if self.minibatch is not None and self.minibatch < n:
                idx = torch.from_numpy(self.rng.choice(n, self.minibatch, replace=False))
                xb, xn, rb, gb = x[idx], x_next[idx], r[idx], boot[idx]
            else:
                xb, xn, rb, gb = x, x_next, r, boot
            with torch.no_grad():
                y = rb + gb * self._forward(xn)
            err = (self._forward(xb) - y) / scale  # loss in normalised units
            loss = (err * err).mean()
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if self.max_grad_norm is not None:
                nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
            self.optimizer.step()
            sq = float(loss.detach())
        self.n_updates += 1
        return {"critic_td_rms": float(np.sqrt(sq)) * scale, "critic_steps": float(steps)}

    def state_dict(self) -> dict[str, Any]:
        """Weights, optimiser, normaliser, update count and generator."""
        return {"net": copy.deepcopy(self.net.state_dict()),
                "optimizer": copy.deepcopy(self.optimizer.state_dict()),
                "norm": copy.deepcopy(self.norm), "n_updates": self.n_updates,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.norm, self.n_updates = copy.deepcopy(state["norm"]), int(state["n_updates"])
        self.rng.bit_generator.state = state["rng"]
