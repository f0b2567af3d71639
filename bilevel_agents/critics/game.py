"""Leader critics ``Q_L(s, a, b)`` of two-player Markov games (paper Alg. 3; Bi-AC's eqs. 44–45).

Both follow the :class:`~bilevel_agents.critics.Critic` protocol with the game's joint action:
``q(states, leader_actions, follower_actions)`` and ``v(states, br, leader_actions=None)``
(``E_{b~g(·|s,a)} Q_L(s, a, b)`` given ``a``, else ``E_{a~f, b~g} Q_L``).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from bilevel_envs.wrappers import GameBatch

__all__ = ["MLPGameCritic", "TabularGameCritic"]

TARGETS = ("expected", "stackelberg")


class TabularGameCritic:
    """Tabular ``Q_L(s, a, b)`` trained by TD (Alg. 3 with a tabular parameterisation).

    Target ``y = r_L + γ_L Σ_{a',b'} f(a'|s') g(b'|s',a') Q(s',a',b')`` (expected SARSA under the
    current policies), or the Bi-AC Stackelberg target (eqs. 44–45) with ``target="stackelberg"``.
    Each step moves every visited cell by ``lr`` × its mean TD error over the batch (vectorised),
    or over a uniform minibatch of ``max_samples`` transitions when the data are larger (replay
    buffers of off-policy variants).

    Args:
        n_states, n_leader_actions, n_follower_actions: table shape.
        lr: step size in (0, 1].
        steps: TD steps per update.
        target: ``"expected"`` or ``"stackelberg"``.
        init: initial value of every cell.
        max_samples: minibatch size when the data are larger.
        seed: seeds the minibatch draws.
    """

    def __init__(self, n_states: int, n_leader_actions: int, n_follower_actions: int,
                 lr: float = 0.5, steps: int = 20, target: str = "expected", init: float = 0.0,
                 max_samples: int = 4096, seed: int | None = None):
        if target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
        if not 0 < lr <= 1:
            raise ValueError(f"critic lr must be in (0, 1], got {lr!r}")
        self.table = np.full((n_states, n_leader_actions, n_follower_actions), float(init))
        self.lr, self.steps, self.target = float(lr), int(steps), target
        self.max_samples = int(max_samples)
        self._rng = np.random.default_rng(seed)

    def q(self, states, leader_actions, follower_actions) -> np.ndarray:
        """``Q_L(s, a, b)`` elementwise."""
        return self.table[states, leader_actions, follower_actions]

    def v(self, states, br: Any, leader_actions=None) -> np.ndarray:
        """``E_{b~g(·|s,a)} Q_L(s, a, b)`` given ``a``, else ``E_{a~f, b~g} Q_L(s, a, b)``."""
        if leader_actions is None:
            return np.einsum("sa,sab,sab->s", br.leader_policy, br.policy, self.table)[states]
        return np.einsum("...b,...b->...", br.policy[states, leader_actions],
                         self.table[states, leader_actions])

    def next_values(self, br: Any) -> np.ndarray:
        """``(S,)`` bootstrap value of each next state."""
        f = br.leader_policy
        g = br.policy
        if self.target == "expected":
            return np.einsum("sa,sab,sab->s", f, g, self.table)
        b_star = g.argmax(axis=2)  # (S, A) follower best response b*(a')
        q_star = np.take_along_axis(self.table, b_star[..., None], axis=2)[..., 0]  # (S, A)
        return q_star.max(axis=1)  # Q(s', a*, b*(a*))

    def update(self, batch: GameBatch, br: Any) -> dict[str, float]:
        """``steps`` TD steps on ``batch``; returns the last step's mean squared TD error."""
        gamma = br.gamma_leader
        cols = [np.ravel(x) for x in (batch.obs, batch.leader_actions, batch.follower_actions,
                                      batch.r_leader, batch.next_obs)]
        err = 0.0
        for _ in range(self.steps):
            s, a, b, r, s2 = cols
            if len(s) > self.max_samples:
                idx = self._rng.integers(0, len(s), self.max_samples)
                s, a, b, r, s2 = (c[idx] for c in cols)
            flat = np.ravel_multi_index((s, a, b), self.table.shape)
            counts = np.bincount(flat, minlength=self.table.size).reshape(self.table.shape)
            visited = counts > 0
            td = r + gamma * self.next_values(br)[s2] - self.table[s, a, b]
            sums = np.bincount(flat, weights=td, minlength=self.table.size).reshape(
                self.table.shape)
            self.table[visited] += self.lr * sums[visited] / counts[visited]
            err = float(np.mean(td ** 2))
        return {"critic_td_mse": err}

    def state_dict(self) -> dict[str, Any]:
        """The table and the minibatch generator."""
        return {"table": self.table.copy(), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.table = np.array(state["table"], dtype=np.float64)
        if state.get("rng") is not None:
            self._rng.bit_generator.state = state["rng"]


class MLPGameCritic:
    """MLP ``Q_L(s, a, b)`` (2×64 ReLU, as the paper; float32) trained by TD with a target network.

    SARSA-style target (Alg. 3) ``y = r_L + γ_L Q̄(s', a', b')`` with ``a' ~ f(·|s')``,
    ``b' ~ g(·|s', a')`` sampled from the current policies; Adam, minibatches of ``batch_size``,
    soft target updates ``τ`` after every step.

    Args:
        in_dim: ``dim s + dim a + dim b``.
        hidden: hidden width.
        lr: Adam step size.
        steps: Adam steps per update.
        batch_size: minibatch size.
        tau: soft target update rate.
        seed: seeds the weights (through torch's global generator) and the minibatches.
        v_samples: leader and follower draws per state for :meth:`v`.
    """

    def __init__(self, in_dim: int, hidden: int = 64, lr: float = 1e-3, steps: int = 20,
                 batch_size: int = 128, tau: float = 0.01, seed: int | None = None,
                 v_samples: int = 32):
        if seed is not None:
            torch.manual_seed(int(seed))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.target = copy.deepcopy(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.steps, self.batch_size, self.tau = int(steps), int(batch_size), float(tau)
        self.v_samples = int(v_samples)
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _inputs(s, a, b) -> torch.Tensor:
        s = np.asarray(s, dtype=np.float64)
        lead = s.shape[:-1]
        x = np.concatenate([s, np.asarray(a, np.float64).reshape(lead + (-1,)),
                            np.asarray(b, np.float64).reshape(lead + (-1,))], axis=-1)
        return torch.from_numpy(x.astype(np.float32))

    def q(self, states, leader_actions, follower_actions) -> np.ndarray:
        """``Q_L(s, a, b)`` for batches with leading dimensions ``(...)``."""
        with torch.no_grad():
            return self.net(self._inputs(states, leader_actions, follower_actions)
                            )[..., 0].numpy().astype(np.float64)

    def v(self, states, br: Any, leader_actions=None) -> np.ndarray:
        """Monte Carlo ``E_b Q_L`` given ``a`` (else ``E_{a,b}``), ``v_samples`` draws per row."""
        s = np.asarray(states, dtype=np.float64)
        flat = s.reshape(-1, s.shape[-1])
        M = self.v_samples
        s_m = np.repeat(flat, M, axis=0)
        if leader_actions is None:
            a_m = br.sample_leader_actions(s_m, self._rng)
        else:
            a = np.asarray(leader_actions, dtype=np.float64).reshape(len(flat), -1)
            a_m = np.repeat(a, M, axis=0)
        b_m = br.follower.act(br.problem.follower_obs(s_m, a_m), self._rng)
        return self.q(s_m, a_m, b_m).reshape(len(flat), M).mean(axis=1).reshape(s.shape[:-1])

    def update(self, batch: GameBatch, br: Any) -> dict[str, float]:
        """``steps`` Adam steps of TD on ``batch``; returns the last minibatch's loss."""
        gamma = br.gamma_leader
        n_s = batch.obs.shape[-1]
        s = batch.obs.reshape(-1, n_s)
        a = batch.leader_actions.reshape(len(s), -1)
        b = batch.follower_actions.reshape(len(s), -1)
        r = batch.r_leader.reshape(-1)
        s2 = batch.next_obs.reshape(-1, n_s)
        x = self._inputs(s, a, b)
        err = 0.0
        for _ in range(self.steps):
            idx = self._rng.integers(0, len(s), size=min(self.batch_size, len(s)))
            a2 = br.sample_leader_actions(s2[idx], self._rng)
            b2 = br.follower.act(br.problem.follower_obs(s2[idx], a2), self._rng)
            with torch.no_grad():
                y = torch.from_numpy(r[idx].astype(np.float32)) + gamma * self.target(
                    self._inputs(s2[idx], a2, b2))[:, 0]
            loss = torch.mean((self.net(x[idx])[:, 0] - y) ** 2)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            with torch.no_grad():
                for p, pt in zip(self.net.parameters(), self.target.parameters()):
                    pt.mul_(1 - self.tau).add_(self.tau * p)
            err = float(loss.detach())
        return {"critic_td_mse": err}

    def state_dict(self) -> dict[str, Any]:
        """Weights, target weights, optimiser and generator."""
        return {"net": copy.deepcopy(self.net.state_dict()),
                "target": copy.deepcopy(self.target.state_dict()),
                "opt": copy.deepcopy(self.opt.state_dict()), "rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])
        if state.get("rng") is not None:
            self._rng.bit_generator.state = state["rng"]
