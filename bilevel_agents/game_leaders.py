"""Leaders for two-player Markov games: BC-HG (Theorem 2), NAIVE-PGD and Bi-AC (App. C.1, D).

All three share one loop (:class:`GameLeader`, a :class:`~bilevel_agents.base.Leader`): per outer
iteration (Alg. 1) the follower has best-responded to the current leader policy ``f_θ``; a batch
of complete episodes is sampled; the leader's critic ``Q_L(s, a, b)`` is updated (Alg. 3, TD);
then the gradient is ``(1/E) Σ_k w_k ∇θ log f_θ(a_k|s_k)`` with per-step weights from
:mod:`bilevel_agents.game_estimators`; clip to norm 1 (paper) and take an Adam (default, as the
authors) or SGD ascent step; the follower re-solves (warm-started).

* :class:`GameBCHG`: ``w`` = partial term (Alg. 5) + Benefit-weighted FollowerQGrad (Alg. 7,
  Alg. 1 line 16) with the Benefit from follower samples (or the exact expectation under the
  tabular follower).
* :class:`GameNaivePGD`: partial term only (``∂θ J_L`` at a fixed follower); on- or off-policy
  critic (``buffer_episodes``).
* :class:`GameBiAC`: NAIVE-PGD's actor with the Bi-AC critic target (paper eqs. 44–45): the next
  actions are the Stackelberg solution of the stage game under the follower's best response.

Leader policies are the wrapper's θ-parameterisation (tabular softmax for the toy game, the
linear-Gaussian ``N(Ks, W²)`` for the LQR game); ``∇θ log f`` is analytic
(:meth:`GameBestResponse.leader_score`).

Variance reduction (all unbiased, on by default, ``control_variates=False`` for the plain
estimator): the partial term uses ``Q_L(s,a,b) − V_L(s)``; the FollowerQGrad sum uses
``V_F(s_k,a_k) − c(s_k)`` with ``c(s) = E_{a~f} V_F(s, a)`` (toy) or ``V_F(s, Ks)`` (LQR) and drops
its first term (a function of ``(s_t, a_t)``, which cancels against the zero-mean Benefit). For
the LQR game's nearly deterministic leader (W = 1e-3, so ``|∇ log f| ~ 1/W``) the partial
term's baseline is ``Q_L(s, Ks, z)`` with ``z = b + K_a (a − Ks)``, the follower action that the
same follower noise gives at the mean leader action (independent of the leader's noise, so
unbiased; a white-box follower, Assumption 1, exposes ``K_a``).
"""

from __future__ import annotations

import copy
from typing import Any, ClassVar

import numpy as np
import torch

from bilevel_agents.base import Leader, clip_by_global_norm
from bilevel_agents.game_estimators import bchg_weights
from bilevel_envs.wrappers.game_best_response import GameBatch

__all__ = [
    "GameBCHG",
    "GameBiAC",
    "GameLeader",
    "GameNaivePGD",
    "MLPGameCritic",
    "TabularGameCritic",
]


# ============================================================================ critics
class TabularGameCritic:
    """Tabular ``Q_L(s, a, b)`` trained by TD (Alg. 3 with a tabular parameterisation).

    Target ``y = r_L + γ_L Σ_{a',b'} f(a'|s') g(b'|s',a') Q(s',a',b')`` (expected SARSA under the
    current policies), or the Bi-AC Stackelberg target (eqs. 44–45) with ``target="stackelberg"``.
    Each step moves every visited cell by ``lr`` × its mean TD error over the batch (vectorised),
    or over a uniform minibatch of ``max_samples`` transitions when the data are larger (replay
    buffers of off-policy variants).
    """

    def __init__(self, n_states: int, n_leader_actions: int, n_follower_actions: int,
                 lr: float = 0.5, steps: int = 20, target: str = "expected", init: float = 0.0,
                 max_samples: int = 4096, seed: int | None = None):
        if target not in ("expected", "stackelberg"):
            raise ValueError(f"target must be 'expected' or 'stackelberg', got {target!r}")
        if not 0 < lr <= 1:
            raise ValueError(f"critic lr must be in (0, 1], got {lr!r}")
        self.q = np.full((n_states, n_leader_actions, n_follower_actions), float(init))
        self.lr, self.steps, self.target = float(lr), int(steps), target
        self.max_samples = int(max_samples)
        self._rng = np.random.default_rng(seed)

    def values(self, s, a, b) -> np.ndarray:
        return self.q[s, a, b]

    def next_values(self, br: Any) -> np.ndarray:
        """``(S,)`` bootstrap value of each next state."""
        f = br.leader_policy
        g = br.policy
        if self.target == "expected":
            return np.einsum("sa,sab,sab->s", f, g, self.q)
        b_star = g.argmax(axis=2)  # (S, A) follower best response b*(a')
        q_star = np.take_along_axis(self.q, b_star[..., None], axis=2)[..., 0]  # (S, A)
        return q_star.max(axis=1)  # Q(s', a*, b*(a*))

    def update(self, data: GameBatch, br: Any, gamma: float) -> float:
        cols = [np.ravel(x) for x in (data.obs, data.leader_actions, data.follower_actions,
                                      data.r_leader, data.next_obs)]
        err = 0.0
        for _ in range(self.steps):
            s, a, b, r, s2 = cols
            if len(s) > self.max_samples:
                idx = self._rng.integers(0, len(s), self.max_samples)
                s, a, b, r, s2 = (c[idx] for c in cols)
            flat = np.ravel_multi_index((s, a, b), self.q.shape)
            counts = np.bincount(flat, minlength=self.q.size).reshape(self.q.shape)
            visited = counts > 0
            td = r + gamma * self.next_values(br)[s2] - self.q[s, a, b]
            sums = np.bincount(flat, weights=td, minlength=self.q.size).reshape(self.q.shape)
            self.q[visited] += self.lr * sums[visited] / counts[visited]
            err = float(np.mean(td ** 2))
        return err

    def state_dict(self) -> dict:
        return {"q": self.q.copy()}

    def load_state_dict(self, state: dict) -> None:
        self.q = np.array(state["q"], dtype=np.float64)


class MLPGameCritic:
    """MLP ``Q_L(s, a, b)`` (2×64 ReLU, as the paper; float32) trained by TD with a target network.

    SARSA-style target (Alg. 3) ``y = r_L + γ_L Q̄(s', a', b')`` with ``a' ~ f(·|s')``,
    ``b' ~ g(·|s', a')`` sampled from the current policies; Adam, minibatches of ``batch_size``,
    soft target updates ``τ`` after every step.
    """

    def __init__(self, in_dim: int, hidden: int = 64, lr: float = 1e-3, steps: int = 20,
                 batch_size: int = 128, tau: float = 0.01, seed: int | None = None):
        if seed is not None:
            torch.manual_seed(int(seed))
        self.net = torch.nn.Sequential(
            torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, hidden),
            torch.nn.ReLU(), torch.nn.Linear(hidden, 1))
        self.target = copy.deepcopy(self.net)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self.steps, self.batch_size, self.tau = int(steps), int(batch_size), float(tau)
        self._rng = np.random.default_rng(seed)

    @staticmethod
    def _inputs(s, a, b) -> torch.Tensor:
        s = np.asarray(s, dtype=np.float64)
        lead = s.shape[:-1]
        x = np.concatenate([s, np.asarray(a, np.float64).reshape(lead + (-1,)),
                            np.asarray(b, np.float64).reshape(lead + (-1,))], axis=-1)
        return torch.from_numpy(x.astype(np.float32))

    def values(self, s, a, b) -> np.ndarray:
        with torch.no_grad():
            return self.net(self._inputs(s, a, b))[..., 0].numpy().astype(np.float64)

    def update(self, data: GameBatch, br: Any, gamma: float) -> float:
        n_s = data.obs.shape[-1]
        s = data.obs.reshape(-1, n_s)
        a = data.leader_actions.reshape(len(s), -1)
        b = data.follower_actions.reshape(len(s), -1)
        r = data.r_leader.reshape(-1)
        s2 = data.next_obs.reshape(-1, n_s)
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
        return err

    def state_dict(self) -> dict:
        return {"net": self.net.state_dict(), "target": self.target.state_dict(),
                "opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.target.load_state_dict(state["target"])
        self.opt.load_state_dict(state["opt"])


# ============================================================================ leaders
class GameLeader(Leader):
    """Shared loop of the game leaders (Alg. 1): sample, critic TD, weighted score, ascend.

    Args:
        br: a :class:`~bilevel_envs.wrappers.game_best_response.GameBestResponse`.
        lr: actor step size (Adam by default).
        max_grad_norm: global-norm clip (paper 1.0; ``None`` = none). The authors' toy configs do
            not clip, and clipping hurts there: per-batch estimates are ≫ 1 in norm, so clipped
            steps average directions, not gradients, which is biased (tabular BC-HG on the R = 2
            toy settles at f(0|A) ≈ 0.60 with clip 1 vs ≈ 0.53 without; optimum 0.51).
        seed: seeds θ's init, rollouts and critic.
        theta0, init_scale: initial θ, default ``N(0, init_scale²)`` (toy: 0.01 ≈ uniform
            policy; LQR: the paper draws ``K ~ N(0, I)``, i.e. ``init_scale=1``).
        optimizer: ``"adam"`` (authors) or ``"sgd"``.
        episodes: complete episodes per iteration (paper: 3 toy, 4 LQR).
        critic: a critic; default tabular (toy) or MLP (LQR).
        critic_kwargs: options of the default critic.
        buffer_episodes: critic replay size in episodes (``None`` = on-policy: this batch).
        explore_iterations: iterations whose batches use a random leader (the authors' LQR runs
            play ``N(0, 1)`` actions for the first 4000 steps); no actor update then.
        benefit_samples: follower samples ``M`` per Benefit (``None``: exact expectation under
            a tabular follower; LQR default 32; the authors use 256).
        control_variates: use the unbiased baselines described in the module docstring.
        critic_exploration: LQR only: also roll out ``episodes`` episodes with leader actions
            ``Ks + σ ε`` (σ = this value) and train the critic on them too, so that the
            critic's dependence on ``a`` is identifiable (on-policy data have ``a`` within
            ``W = 1e-3`` of ``Ks``); the actor still uses on-policy episodes only.
    """

    name: ClassVar[str] = "game-leader"
    critic_target: ClassVar[str] = "expected"

    def __init__(self, br: Any, *, lr: float = 0.01, max_grad_norm: float | None = 1.0,
                 seed: int | None = None, theta0: Any = None, init_scale: float = 0.01,
                 optimizer: str = "adam", episodes: int = 3, critic: Any = None,
                 critic_kwargs: dict | None = None, buffer_episodes: int | None = None,
                 explore_iterations: int = 0, benefit_samples: int | None = None,
                 control_variates: bool = True, critic_exploration: float | None = None):
        if int(episodes) < 1:
            raise ValueError(f"episodes must be >= 1, got {episodes!r}")
        param = getattr(br, "leader_parameterization", None)
        if theta0 is None and param is not None and type(param).__name__ != "TabularSoftmax":
            theta0 = param.initial(np.random.default_rng(seed))  # e.g. Xavier for an MLP
        super().__init__(br, lr=lr, max_grad_norm=max_grad_norm, seed=seed, theta0=theta0,
                         init_scale=init_scale, optimizer=optimizer)
        self.episodes = int(episodes)
        self.buffer_episodes = buffer_episodes
        self.explore_iterations = int(explore_iterations)
        self.control_variates = bool(control_variates)
        self.critic_exploration = critic_exploration
        self._tabular = br._is_toy
        if benefit_samples is None and not self._tabular:
            benefit_samples = 32
        self.benefit_samples = benefit_samples
        if critic is None:
            ck = dict(critic_kwargs or {})
            if self._tabular:
                p = br.problem
                critic = TabularGameCritic(p.n_states, p.n_leader_actions,
                                           p.n_follower_actions, target=self.critic_target,
                                           seed=seed, **ck)
            else:
                p = br.problem
                critic = MLPGameCritic(p.state_dim + p.leader_action_dim + p.follower_action_dim,
                                       seed=seed, **ck)
        self.critic = critic
        self._buffer: list[np.ndarray] = []
        self.last_metrics = {}

    # ------------------------------------------------------------------ pieces
    def _explore_sampler(self):
        if self._tabular:
            n = self.br.problem.n_leader_actions
            return lambda obs, rng: rng.integers(0, n, size=np.shape(obs)[0])
        k = self.br.problem.leader_action_dim
        return lambda obs, rng: rng.standard_normal((np.shape(obs)[0], k))

    def sample_batch(self) -> GameBatch:
        explore = self.iteration < self.explore_iterations
        return self.br.rollout(self.episodes, rng=self.rng,
                               leader_sampler=self._explore_sampler() if explore else None)

    def critic_data(self, batch: GameBatch) -> GameBatch:
        """The critic's data: this batch (on-policy) or a ring buffer of recent episodes."""
        if self.critic_exploration is not None and not self._tabular:
            sigma = float(self.critic_exploration)
            K = self.br.leader_gain

            def noisy(obs, rng):
                return obs @ K.T + sigma * rng.standard_normal((len(obs), K.shape[0]))

            extra = self.br.rollout(self.episodes, rng=self.rng, leader_sampler=noisy)
            batch = GameBatch(*(np.concatenate([x, y]) for x, y in zip(batch, extra)))
        if self.buffer_episodes is None:
            return batch
        cap = int(self.buffer_episodes)
        if not self._buffer:  # preallocate (no per-iteration concatenation of the buffer)
            self._buffer = [np.empty((cap,) + x.shape[1:], dtype=x.dtype) for x in batch]
            self._filled, self._pos = 0, 0
        idx = (self._pos + np.arange(batch.n_episodes)) % cap
        for store, x in zip(self._buffer, batch):
            store[idx] = x
        self._pos = int((self._pos + batch.n_episodes) % cap)
        self._filled = min(self._filled + batch.n_episodes, cap)
        return GameBatch(*(store[:self._filled] for store in self._buffer))

    def _q_and_baseline(self, batch: GameBatch):
        """``Q_L`` at the batch and the partial term's baseline (``(E, T)`` each)."""
        br, c = self.br, self.critic
        s, a, b = batch.obs, batch.leader_actions, batch.follower_actions
        q = c.values(s, a, b)
        if not self.control_variates:
            return q, np.zeros_like(q)
        if self._tabular:
            v_l = np.einsum("sa,sab,sab->s", br.leader_policy, br.policy, c.q)
            return q, v_l[s]
        fol = br.follower
        a_mean = s @ br.leader_gain.T
        z = b + (a - a_mean) @ fol.K_a.T
        return q, c.values(s, a_mean, z)

    def benefit(self, batch: GameBatch, q: np.ndarray) -> np.ndarray:
        """``B_L(s,a,b) = Q_L(s,a,b) − E_{b'~g(·|s,a)} Q_L(s,a,b')`` at every step."""
        br = self.br
        s, a = batch.obs, batch.leader_actions
        if self.benefit_samples is None:
            mean = np.einsum("...b,...b->...", br.policy[s, a], self.critic.q[s, a])
            return q - mean
        M = int(self.benefit_samples)
        E, T = q.shape
        s_m = np.repeat(s.reshape((E * T,) + s.shape[2:]), M, axis=0)
        a_m = np.repeat(a.reshape((E * T,) + a.shape[2:]), M, axis=0)
        b_m = br.follower.act(br.problem.follower_obs(s_m, a_m), self.rng)
        return q - self.critic.values(s_m, a_m, b_m).reshape(E, T, M).mean(axis=-1)

    def follower_baseline(self, batch: GameBatch) -> np.ndarray | None:
        if not self.control_variates:
            return None
        br, s = self.br, batch.obs
        if self._tabular:
            return (br.leader_policy * br.soft_v).sum(axis=1)[s]
        E, T = s.shape[:2]
        flat = s.reshape(E * T, -1)
        return br.follower_value(flat, flat @ br.leader_gain.T).reshape(E, T)

    def weights(self, batch: GameBatch) -> np.ndarray:
        """Per-step weights ``w_k`` of ``∇θ log f(a_k|s_k)`` (method-specific)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the loop
    def estimate_gradient(self) -> np.ndarray:
        batch = self.sample_batch()
        td = self.critic.update(self.critic_data(batch), self.br, self.br.gamma_leader)
        self.last_metrics = {"critic_td_mse": td,
                             "batch_return": float(batch.returns().mean())}
        if self.iteration < self.explore_iterations:
            return np.zeros(self.br.config_space.shape)
        w = self.weights(batch)
        score = self.br.leader_score(batch.obs, batch.leader_actions)
        return np.einsum("et,etd->d", w, score) / batch.n_episodes

    def update(self) -> dict[str, float]:
        """One outer iteration: estimate, clip, Adam/SGD ascent, re-solve the follower."""
        grad = np.asarray(self.estimate_gradient(), dtype=np.float64)
        if not np.all(np.isfinite(grad)):
            raise FloatingPointError(f"non-finite gradient estimate at iteration {self.iteration}")
        step = clip_by_global_norm(grad, self.max_grad_norm)
        if self.optimizer == "adam" and np.any(step):  # an all-zero (exploration) step is no data
            step = self._adam_direction(step)
        rejected = 0.0
        try:
            self.br.set_config(self.theta + self.lr * step)
        except ValueError:  # e.g. a non-stabilisable LQR gain: keep θ
            rejected = 1.0
        self.iteration += 1
        return {"grad_norm": float(np.linalg.norm(grad)), "rejected_step": rejected,
                **self.last_metrics}

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "episodes": self.episodes,
                "buffer_episodes": self.buffer_episodes,
                "explore_iterations": self.explore_iterations,
                "benefit_samples": self.benefit_samples,
                "control_variates": self.control_variates,
                "critic_exploration": self.critic_exploration}


class GameNaivePGD(GameLeader):
    """NAIVE-PGD: the partial derivative only (Alg. 5; App. C.1), ignoring the follower."""

    name: ClassVar[str] = "game-naive"

    def weights(self, batch: GameBatch) -> np.ndarray:
        q, base = self._q_and_baseline(batch)
        return bchg_weights(q - base, None, None, 1.0, self.br.gamma_leader,
                            self.br.gamma_follower)


class GameBiAC(GameNaivePGD):
    """Bi-AC adapted to the decentralised setting (App. C.1, eqs. 44–45): NAIVE-PGD's actor with
    the Stackelberg stage-game critic target (tabular games)."""

    name: ClassVar[str] = "game-biac"
    critic_target: ClassVar[str] = "stackelberg"


class GameBCHG(GameLeader):
    """BC-HG for Markov games (Theorem 2, eq. 8; Alg. 1 with Alg. 3, 5, 7)."""

    name: ClassVar[str] = "game-bchg"

    def weights(self, batch: GameBatch) -> np.ndarray:
        q, base = self._q_and_baseline(batch)
        B = self.benefit(batch, q)
        return bchg_weights(q - base, B, batch.follower_value, self.br.beta,
                            self.br.gamma_leader, self.br.gamma_follower,
                            baseline=self.follower_baseline(batch),
                            include_first=not self.control_variates)
