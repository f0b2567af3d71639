"""HPGD's regularised DQN: a factorised soft Q-network follower for large discrete action sets.

The follower of Thoma et al. (2024) for Tax Design, written from the description of its code
(a network of one head per action dimension, soft targets, Boltzmann play). It learns online,
like :class:`~bilevel_envs.followers.soft_q_learning.SoftQLearning`, but with a network instead
of a table, so it also answers problems with continuous states (``BiLevel/TaxDesign-v0``).

Network and targets. An MLP (``layers`` hidden layers of ``width`` ReLU units) maps the
follower's observation features to one block of outputs per action dimension ``i`` (sizes
``n_i``; ``MultiDiscrete(nvec)`` gives one per entry, ``Discrete(n)`` one head unless ``heads``
factorises it: the tabular economy's 1250 joint actions are ``(10, 5, 5, 5)`` by default). On
minibatches of a replay buffer each head ``Q_i`` regresses its own soft target::

    y_i = r_F + γ_F (1 − terminated) · β log Σ_{b'} exp(Q̄_i(s', b')/β)

(mean squared error over heads and transitions; ``Q̄`` a target network copied every
``target_update`` transitions; Adam, gradient norm clipped to ``max_grad_norm``). The policy is
the product of the heads' ``softmax(Q_i(s, ·)/β)``; while it learns it plays a uniform action with
probability ``ε``, decayed linearly from ``epsilon_start`` to ``epsilon_end`` over
``epsilon_steps`` transitions (off-policy, so the targets do not change). With one head this is
soft Q-learning with a function approximator: its fixed point is the soft Bellman equation (paper
eq. 18). With several heads it is HPGD's approximation, not the joint soft best response: each
head is credited with the whole reward and its target carries only its own dimension's entropy,
but the outputs grow with ``Σ n_i`` (25 for Tax Design) instead of ``Π n_i`` (1250).

Differences from HPGD's code, each a choice stated here: at the time limit the target
bootstraps (only ``terminated`` stops it; HPGD's ``(1 − done)`` stops at the 200-step cut too),
and ``Box`` observations are scaled to ``[−1, 1]`` by the space's bounds (tax assets are ±100).
HPGD retrains the network from scratch at every leader evaluation (3·10⁶ transitions); this
follower keeps learning across leader updates (``steps_per_leader_update`` transitions per
:meth:`SoftDQN.solve`, after ``warmup_steps`` on the first), as the suite's other learning
followers do.

Its experience: ``n_envs`` episodes of the problem's batched simulator stepped together at the
current θ, with the follower's own generator (starts, actions, next states, minibatches) and
episodes that continue across solves. The network is initialised from a torch generator seeded
from the same seed, so a seed fixes everything.

Publishing: on tabular problems (``publish=True``) its ``policy`` table (the product of the
heads' Boltzmann laws at every state); never ``soft_q`` / ``soft_v``, which the factorised heads
do not define for joint actions. :meth:`SoftDQN.policy_readout` gives that table for evaluation
also in black-box mode.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from bilevel_envs.followers.sb3 import TorchThreads
from bilevel_envs.utils import check_beta, check_float, check_int

__all__ = ["SoftDQN", "soft_dqn_targets"]


def soft_dqn_targets(r: torch.Tensor, terminated: torch.Tensor, next_q: list[torch.Tensor],
                     gamma: float, beta: float) -> list[torch.Tensor]:
    """Each head's soft target ``r + γ (1 − terminated) β logsumexp(Q̄_i(s', ·)/β)``.

    Args:
        r: ``(N,)`` follower rewards.
        terminated: ``(N,)`` bools (no bootstrap).
        next_q: per head, the ``(N, n_i)`` target-network values at the next observations.
        gamma: the follower's discount.
        beta: the temperature.

    Returns:
        Per head, the ``(N,)`` regression targets.
    """
    keep = gamma * (~terminated).to(r.dtype)
    return [r + keep * beta * torch.logsumexp(q / beta, dim=1) for q in next_q]


class SoftDQN:
    """HPGD's factorised soft DQN follower at temperature β (module docstring).

    Args:
        beta: entropy temperature β > 0.
        steps_per_leader_update: own transitions per :meth:`solve` (rounded up to whole rounds of
            ``n_envs``).
        heads: the action dimensions (default: ``nvec`` of a ``MultiDiscrete`` space; for a
            ``Discrete(n)`` space the problem's ``action_factors`` if it has them, e.g. the
            tabular economy's ``(10, 5, 5, 5)``, else ``(n,)``); for a ``Discrete`` space their
            product must be ``n`` (joint index in C order, as ``np.ravel_multi_index``).
        width, layers: the MLP's hidden width and depth (HPGD: 64, 2).
        lr: Adam step size (HPGD: 5e-5).
        max_grad_norm: gradient norm clip (HPGD: 1).
        buffer_size: replay capacity in transitions (HPGD: 10,000).
        batch_size: minibatch size (HPGD: 1000).
        learning_starts: transitions stored before the first gradient step (HPGD: 10,000).
        train_every: rounds of ``n_envs`` transitions per gradient step (HPGD: 1).
        target_update: transitions between target-network copies (HPGD: 5000).
        epsilon_start, epsilon_end, epsilon_steps: the linear ε schedule (HPGD: 1 → 0.1 over
            10⁶ transitions).
        n_envs: episodes stepped together (HPGD: 10).
        warmup_steps: extra transitions on the first solve only.
        publish: publish the policy table on tabular problems (``False``: black box).
        gamma: follower discount (default: the problem's ``gamma_follower``).
        max_episode_steps: episode time limit (default: the problem's).
        torch_threads: torch intra-op threads while it trains and acts (restored afterwards;
            one is fastest for networks this small; ``None``: torch's setting).
        seed: seed of everything the follower draws.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> fol = SoftDQN(beta=0.1, steps_per_leader_update=200, learning_starts=100,
        ...               batch_size=32, seed=0)
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.1, follower=fol)
        >>> fol.total_steps, br.policy.shape
        (200, (104, 4))
    """

    exact = False

    def __init__(self, beta: float, steps_per_leader_update: int = 1000, *,
                 heads: tuple[int, ...] | None = None, width: int = 64, layers: int = 2,
                 lr: float = 5e-5, max_grad_norm: float = 1.0, buffer_size: int = 10_000,
                 batch_size: int = 1000, learning_starts: int = 10_000, train_every: int = 1,
                 target_update: int = 5000, epsilon_start: float = 1.0,
                 epsilon_end: float = 0.1, epsilon_steps: int = 1_000_000, n_envs: int = 10,
                 warmup_steps: int = 0, publish: bool = True, gamma: float | None = None,
                 max_episode_steps: int | None = None, torch_threads: int | None = 1,
                 seed: int | None = None):
        self.beta = check_beta(beta)
        self.steps_per_leader_update = check_int("steps_per_leader_update",
                                                 steps_per_leader_update, 0)
        self.heads = None if heads is None else tuple(
            check_int("heads", h, 1) for h in np.atleast_1d(heads).tolist())
        self.width, self.layers = check_int("width", width, 1), check_int("layers", layers, 1)
        self.lr = check_float("lr", lr, low=0.0, low_open=True)
        self.max_grad_norm = check_float("max_grad_norm", max_grad_norm, low=0.0,
                                         low_open=True)
        self.buffer_size = check_int("buffer_size", buffer_size, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.learning_starts = check_int("learning_starts", learning_starts, 0)
        self.train_every = check_int("train_every", train_every, 1)
        self.target_update = check_int("target_update", target_update, 1)
        self.epsilon_start = check_float("epsilon_start", epsilon_start, low=0.0, high=1.0)
        self.epsilon_end = check_float("epsilon_end", epsilon_end, low=0.0, high=1.0)
        self.epsilon_steps = check_int("epsilon_steps", epsilon_steps, 0)
        self.n_envs = check_int("n_envs", n_envs, 1)
        self.warmup_steps = check_int("warmup_steps", warmup_steps, 0)
        if not isinstance(publish, (bool, np.bool_)):
            raise ValueError(f"publish must be True or False, got {publish!r}")
        self.publish = bool(publish)
        self.gamma = check_float("gamma", gamma, low=0.0, high=1.0, high_open=True,
                                 allow_none=True)
        self.max_episode_steps = check_int("max_episode_steps", max_episode_steps, 1,
                                           allow_none=True)
        self.torch_threads = check_int("torch_threads", torch_threads, 1, allow_none=True)
        self._rng = np.random.default_rng(seed)
        self.net: torch.nn.Sequential | None = None
        self.total_steps = self.n_solves = self.n_updates = 0
        self._pi: np.ndarray | None = None
        self.last_loss = float("nan")  # of the latest gradient step

    def describe(self) -> str:
        """``soft-dqn`` plus ``(black-box)`` when it publishes nothing."""
        return "soft-dqn" + ("" if self.publish else " (black-box)")

    # ------------------------------------------------------------------ set-up
    def _layout(self, obs_space: gym.Space, act_space: gym.Space,
                action_factors: tuple[int, ...] | None) -> dict[str, Any]:
        """What the network's shape and the feature map depend on, as plain data (a snapshot
        stores it, so that a fresh follower can rebuild the network before loading it)."""
        if isinstance(obs_space, gym.spaces.Discrete):
            layout: dict[str, Any] = {"tabular": True, "dim": int(obs_space.n)}
        elif isinstance(obs_space, gym.spaces.Box) and len(obs_space.shape) == 1:
            low = np.asarray(obs_space.low, np.float64)
            high = np.asarray(obs_space.high, np.float64)
            finite = np.isfinite(low) & np.isfinite(high) & (high > low)
            layout = {"tabular": False, "dim": int(obs_space.shape[0]),
                      "center": np.where(finite, (low + high) / 2, 0.0),
                      "scale": np.where(finite, (high - low) / 2, 1.0)}
        else:
            raise ValueError(f"soft-dqn needs Discrete or flat Box observations, got {obs_space}")
        if isinstance(act_space, gym.spaces.MultiDiscrete):
            nvec = tuple(int(n) for n in np.asarray(act_space.nvec).ravel())
            if self.heads is not None and self.heads != nvec:
                raise ValueError(f"heads must be the MultiDiscrete nvec {nvec}, got {self.heads}")
            layout.update(joint=False, heads=nvec)
        elif isinstance(act_space, gym.spaces.Discrete):
            heads = tuple(int(h) for h in self.heads or action_factors or (int(act_space.n),))
            if math.prod(heads) != int(act_space.n):
                raise ValueError(f"heads {heads} must multiply to the {int(act_space.n)} "
                                 "actions of the Discrete space")
            layout.update(joint=True, heads=heads)
        else:
            raise ValueError(f"soft-dqn needs Discrete or MultiDiscrete actions, got {act_space}")
        return layout

    def _build(self, layout: dict[str, Any]) -> None:
        self._layout_data = layout
        self.tabular, self._dim = bool(layout["tabular"]), int(layout["dim"])
        if not self.tabular:
            self._center = np.asarray(layout["center"], np.float64)
            self._scale = np.asarray(layout["scale"], np.float64)
        self._joint, self._heads = bool(layout["joint"]), tuple(int(h) for h in layout["heads"])
        self._splits = list(self._heads)
        sizes = [self._dim] + [self.width] * self.layers
        # every layer is initialised inside the seeded block: the seed fixes the network, and
        # the caller's torch stream does not move
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(self._rng.integers(2**63)))
            mods: list[torch.nn.Module] = []
            for a, b in zip(sizes[:-1], sizes[1:]):
                mods += [torch.nn.Linear(a, b), torch.nn.ReLU()]
            self.net = torch.nn.Sequential(*mods, torch.nn.Linear(sizes[-1], sum(self._heads)))
        self.target = copy.deepcopy(self.net).requires_grad_(False)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        n, h = self.buffer_size, len(self._heads)
        self._buf = {"x": np.zeros((n, self._dim), np.float32), "a": np.zeros((n, h), np.int64),
                     "r": np.zeros(n, np.float32), "x2": np.zeros((n, self._dim), np.float32),
                     "term": np.zeros(n, bool)}
        self._pos = self._size = 0
        self._states: np.ndarray | None = None
        self._t = np.zeros(self.n_envs, np.int64)
        self._since_target = 0

    def _features(self, states: Any) -> np.ndarray:
        if self.tabular:
            return np.eye(self._dim, dtype=np.float32)[np.asarray(states, np.int64)]
        x = np.asarray(states, np.float64).reshape(-1, self._dim)
        return ((x - self._center) / self._scale).astype(np.float32)

    def _head_q(self, net: torch.nn.Module, x: np.ndarray | torch.Tensor) -> list[torch.Tensor]:
        return list(torch.split(net(torch.as_tensor(x)), self._splits, dim=1))

    def _probs(self, x: np.ndarray) -> list[np.ndarray]:
        with torch.no_grad():
            return [torch.softmax(q.double() / self.beta, dim=1).numpy()
                    for q in self._head_q(self.net, x)]

    def _sample(self, x: np.ndarray, rng: np.random.Generator, epsilon: float) -> np.ndarray:
        """``(N, H)`` head indices: Boltzmann per head, uniform w.p. ``epsilon`` (fixed draws)."""
        n = x.shape[0]
        u = rng.random((n, len(self._heads)))
        out = np.empty((n, len(self._heads)), np.int64)
        for i, p in enumerate(self._probs(x)):  # a few heads, not a hot-path loop
            cum = np.cumsum(p, axis=1)
            cum[:, -1] = 1.0
            out[:, i] = (u[:, i:i + 1] >= cum).sum(axis=1)
        if epsilon > 0.0:
            explore = rng.random(n) < epsilon
            uniform = np.minimum((rng.random((n, len(self._heads))) * self._heads).astype(
                np.int64), np.asarray(self._heads) - 1)
            out = np.where(explore[:, None], uniform, out)
        return out

    def _to_env(self, idx: np.ndarray) -> np.ndarray:
        return np.ravel_multi_index(tuple(idx.T), self._heads) if self._joint else idx

    def _from_env(self, actions: np.ndarray) -> np.ndarray:
        a = np.asarray(actions, np.int64)
        return np.stack(np.unravel_index(a, self._heads), axis=1) if self._joint else a

    # ------------------------------------------------------------------ protocol
    def solve(self, problem: Any) -> None:
        """θ changed: learn from ``steps_per_leader_update`` own transitions at the new θ."""
        problem = getattr(problem, "unwrapped", problem)
        if self.net is None:
            self._build(self._layout(problem.observation_space, problem.action_space,
                                     getattr(problem, "action_factors", None)))
        self._gamma_used = float(problem.gamma_follower if self.gamma is None else self.gamma)
        n = self.steps_per_leader_update + (self.warmup_steps if self.n_solves == 0 else 0)
        limit = int(self.max_episode_steps or problem.max_episode_steps)
        # experience is sequential by definition (each step changes the next policy): a loop
        # over rounds, each round vectorised over the n_envs episodes
        with TorchThreads(self.torch_threads):
            for _ in range(-(-n // self.n_envs)):
                self._round(problem, limit)
        self.n_solves += 1
        self._pi = None

    def _epsilon(self) -> float:
        frac = 1.0 if self.epsilon_steps == 0 else min(1.0, self.total_steps / self.epsilon_steps)
        return self.epsilon_start + frac * (self.epsilon_end - self.epsilon_start)

    def _round(self, problem: Any, limit: int) -> None:
        rng = self._rng
        if self._states is None:
            self._states = problem.sample_initial_states(self.n_envs, rng)
            self._t[:] = 0
        x = self._features(self._states)
        idx = self._sample(x, rng, self._epsilon())
        nxt, r_f, _, term = problem.transition(self._states, self._to_env(idx), rng)
        self._store(x, idx, r_f, self._features(nxt), term)
        self._t += 1
        done = np.asarray(term, bool) | (self._t >= limit)
        if done.any():
            nxt = np.array(nxt, copy=True)
            nxt[done] = problem.sample_initial_states(int(done.sum()), rng)
            self._t[done] = 0
        self._states = nxt
        self.total_steps += self.n_envs
        self._since_target += self.n_envs
        rounds = self.total_steps // self.n_envs
        if self._size >= max(self.learning_starts, 1) and rounds % self.train_every == 0:
            self._update()
        if self._since_target >= self.target_update:
            self.target.load_state_dict(self.net.state_dict())
            self._since_target = 0

    def _update(self) -> None:
        """One gradient step on a minibatch of the buffer (module docstring for the loss)."""
        j = self._rng.integers(self._size, size=self.batch_size)
        b = {name: torch.as_tensor(arr[j]) for name, arr in self._buf.items()}
        with torch.no_grad():
            targets = soft_dqn_targets(b["r"], b["term"], self._head_q(self.target, b["x2"]),
                                       self._gamma_used, self.beta)
        q = self._head_q(self.net, b["x"])
        loss = sum(torch.mean((qi.gather(1, b["a"][:, i:i + 1]).squeeze(1) - yi) ** 2)
                   for i, (qi, yi) in enumerate(zip(q, targets))) / len(q)
        self.optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.n_updates += 1
        self.last_loss = float(loss.detach())

    def observe(self, batch: Any) -> None:
        """Store the leader's transitions (its own actions at the current θ) in the buffer."""
        if self.net is None:
            raise RuntimeError("call solve(problem) before observe(batch)")
        self._store(self._features(batch.obs), self._from_env(batch.actions), batch.r_follower,
                    self._features(batch.next_obs), batch.terminated)

    def _store(self, x, idx, r, x2, term) -> None:
        """Write transitions into the ring buffer (oldest overwritten first)."""
        n = len(idx)
        k = np.arange(self._pos, self._pos + n) % self.buffer_size
        for name, value in (("x", x), ("a", idx), ("r", r), ("x2", x2), ("term", term)):
            self._buf[name][k] = value
        self._pos = int((self._pos + n) % self.buffer_size)
        self._size = min(self._size + n, self.buffer_size)

    def act(self, states: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample the Boltzmann product policy (no ε) for a batch of states, from ``rng``."""
        if self.net is None:
            raise RuntimeError("call solve(problem) before act()")
        with TorchThreads(self.torch_threads):
            return self._to_env(self._sample(self._features(states), rng, 0.0))

    def policy_readout(self) -> np.ndarray | None:
        """The ``(S, B)`` policy it acts with on a tabular problem (the product of the heads'
        Boltzmann laws), published or not; ``None`` otherwise. For evaluation only."""
        if self.net is None or not self.tabular:
            return None
        if self._pi is None:
            probs = self._probs(np.eye(self._dim, dtype=np.float32))
            joint = probs[0]
            for p in probs[1:]:  # C order: the last head varies fastest
                joint = (joint[:, :, None] * p[:, None, :]).reshape(self._dim, -1)
            self._pi = joint
        return self._pi

    @property
    def policy(self) -> np.ndarray | None:
        """The tabular policy table when published, else ``None``."""
        return self.policy_readout() if self.publish else None

    soft_q = None
    soft_v = None

    def state_dict(self) -> dict:
        """Networks, optimiser moments, buffer, episodes, counters and generator."""
        state: dict[str, Any] = {"built": self.net is not None,
                                 "total_steps": self.total_steps, "n_solves": self.n_solves,
                                 "n_updates": self.n_updates, "rng": self._rng.bit_generator.state}
        if self.net is not None:
            state.update(
                layout=self._layout_data,
                net={k: v.detach().numpy().copy() for k, v in self.net.state_dict().items()},
                target={k: v.detach().numpy().copy()
                        for k, v in self.target.state_dict().items()},
                optimizer=copy.deepcopy(self.optimizer.state_dict()),
                buffer={k: v[:self._size].copy() for k, v in self._buf.items()},
                pos=self._pos, size=self._size, since_target=self._since_target,
                states=None if self._states is None else np.array(self._states, copy=True),
                t=self._t.copy(), gamma_used=getattr(self, "_gamma_used", None))
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`, into a fresh follower or one that has trained."""
        if state["built"] and self.net is None:
            self._build(state["layout"])
        self.total_steps, self.n_solves = int(state["total_steps"]), int(state["n_solves"])
        self.n_updates = int(state["n_updates"])
        self._rng.bit_generator.state = state["rng"]
        self._pi = None
        if not state["built"]:
            return
        self.net.load_state_dict({k: torch.as_tensor(np.array(v))
                                  for k, v in state["net"].items()})
        self.target.load_state_dict({k: torch.as_tensor(np.array(v))
                                     for k, v in state["target"].items()})
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self._size, self._pos = int(state["size"]), int(state["pos"])
        for k, v in state["buffer"].items():
            self._buf[k][:self._size] = v
        self._since_target = int(state["since_target"])
        s = state["states"]
        self._states = None if s is None else np.array(s, copy=True)
        self._t = np.array(state["t"], np.int64)
        self._gamma_used = state["gamma_used"]
