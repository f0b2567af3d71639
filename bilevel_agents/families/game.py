"""Two-player Markov games (paper §2 eq. 4, Theorem 2): the leader's parameter is its policy.

Per outer iteration (Alg. 1) the follower has best-responded to the current leader policy
``f_θ``; a batch of complete episodes is sampled; the leader's critic ``Q_L(s, a, b)`` is updated
(Alg. 3); the gradient is ``(1/E) Σ_k w_k ∇θ log f_θ(a_k|s_k)`` with per-step weights from
:mod:`bilevel_agents.estimators.theorem2` (partial term, Alg. 5, plus the Benefit-weighted
FollowerQGrad, Alg. 7). Sample-based leaders default to Adam with lr 0.01 (the authors'
optimiser); the follower re-solves (warm-started).

Variance reduction (all unbiased, on by default, ``control_variates=False`` for the plain
estimator): the partial term uses ``Q_L(s,a,b) − V_L(s)``; the FollowerQGrad sum uses
``V_F(s_k,a_k) − c(s_k)`` with ``c(s) = E_{a~f} V_F(s, a)`` (tabular) or ``V_F(s, Ks)``
(linear-Gaussian) and drops its first term (a function of ``(s_t, a_t)``, which cancels against
the zero-mean Benefit). For the LQR game's nearly deterministic leader (W = 1e-3, so
``|∇ log f| ~ 1/W``) the partial term's baseline is ``Q_L(s, Ks, z)`` with ``z = b + K_a (a −
Ks)``, the follower action that the same follower noise gives at the mean leader action
(independent of the leader's noise, so unbiased; a white-box follower, Assumption 1, exposes
``K_a``).

Two leader-policy kinds: tabular softmax policies (the toy game; :class:`TabularGameFamily`)
and linear-Gaussian policies ``a ~ N(Ks, W²)`` (the LQR game; :class:`GaussianGameFamily`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import numpy as np

from bilevel_agents.critics.game import MLPGameCritic, TabularGameCritic
from bilevel_agents.critics.model import LQRModelCritic
from bilevel_agents.critics.oracle import exact_critic
from bilevel_agents.estimators.theorem2 import guiding_weights, partial_weights
from bilevel_agents.families.base import Family
from bilevel_envs.followers.base import describe, published
from bilevel_envs.utils import check_float, check_int
from bilevel_envs.wrappers import GameBatch

__all__ = ["GameFamily", "GameOptions", "GaussianGameFamily", "TabularGameFamily"]


@dataclasses.dataclass(frozen=True)
class GameOptions:
    """Sampling options of Markov games.

    Attributes:
        episodes: complete episodes per iteration (paper: 3 toy, 4 LQR).
        buffer_episodes: critic replay size in episodes (``None`` = on-policy: this batch).
        explore_iterations: iterations whose batches use a random leader (the authors' LQR
            runs play ``N(0, 1)`` actions for the first 4000 steps); no actor update then.
        benefit_samples: follower samples ``M`` per Benefit (``None``: the exact expectation
            under a tabular follower; linear-Gaussian default 32; the authors use 256).
        control_variates: use the unbiased baselines of the module docstring.
        critic_exploration: linear-Gaussian games only: also roll out ``episodes`` episodes
            with leader actions ``Ks + σ ε`` (σ = this value) and train the critic on them too,
            so that the critic's dependence on ``a`` is identifiable (on-policy data have ``a``
            within ``W = 1e-3`` of ``Ks``); the actor still uses on-policy episodes only.
    """

    episodes: int = 3
    buffer_episodes: int | None = None
    explore_iterations: int = 0
    benefit_samples: int | None = None
    control_variates: bool = True
    critic_exploration: float | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "episodes", check_int("episodes", self.episodes, 1))
        set_(self, "buffer_episodes", check_int("buffer_episodes", self.buffer_episodes, 1,
                                                allow_none=True))
        set_(self, "explore_iterations", check_int("explore_iterations",
                                                   self.explore_iterations, 0))
        set_(self, "benefit_samples", check_int("benefit_samples", self.benefit_samples, 1,
                                                allow_none=True))
        set_(self, "critic_exploration", check_float("critic_exploration",
                                                     self.critic_exploration, low=0.0,
                                                     low_open=True, allow_none=True))


class GameFamily(Family):
    """What both leader-policy kinds share (see the module docstring)."""

    label = "Markov games"
    Options = GameOptions
    defaults = {"optimizer": "adam"}
    rejects_infeasible_steps = True

    def __init__(self, br: Any, **options: Any):
        super().__init__(br, **options)
        missing = [n for n in ("policy", "soft_v") if published(br.follower, n) is None]
        if missing:
            raise ValueError(f"Markov-game leaders need the follower's published {missing} "
                             "(Theorem 2's V_F(s, a) and the Benefit's E_b); "
                             f"{describe(br.follower)} publishes none")
        self._buffer: list[np.ndarray] = []
        self._filled = self._pos = 0

    @property
    def benefit_samples(self) -> int | None:
        """Follower samples per Benefit (``None``: exact expectation)."""
        return self.options.benefit_samples

    # ------------------------------------------------------------------ sampling
    def explore_sampler(self) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """The random leader of the exploration phase."""
        raise NotImplementedError

    def exploring(self, leader: Any) -> bool:
        """The first ``explore_iterations`` iterations only collect data."""
        return leader.iteration < self.options.explore_iterations

    def collect(self, leader: Any) -> GameBatch:
        """``episodes`` complete episodes under ``f_θ`` (or the random exploration leader)."""
        sampler = self.explore_sampler() if self.exploring(leader) else None
        return self.br.rollout(self.options.episodes, rng=leader.rng, leader_sampler=sampler)

    def batch_metrics(self, batch: GameBatch) -> dict[str, float]:
        """The batch's mean undiscounted leader return."""
        return {"batch_return": float(batch.returns().mean())}

    def extra_critic_episodes(self, leader: Any) -> GameBatch | None:
        """Episodes that only the critic sees (none by default)."""
        return None

    def critic_data(self, leader: Any, batch: GameBatch) -> GameBatch:
        """This batch (on-policy) or a ring buffer of recent episodes."""
        extra = self.extra_critic_episodes(leader)
        if extra is not None:
            batch = GameBatch(*(np.concatenate([x, y]) for x, y in zip(batch, extra)))
        if self.options.buffer_episodes is None:
            return batch
        cap = self.options.buffer_episodes
        if not self._buffer:  # preallocate (no per-iteration concatenation of the buffer)
            self._buffer = [np.empty((cap,) + x.shape[1:], dtype=x.dtype) for x in batch]
            self._filled, self._pos = 0, 0
        idx = (self._pos + np.arange(batch.n_episodes)) % cap
        for store, x in zip(self._buffer, batch):
            store[idx] = x
        self._pos = int((self._pos + batch.n_episodes) % cap)
        self._filled = min(self._filled + batch.n_episodes, cap)
        return GameBatch(*(store[:self._filled] for store in self._buffer))

    # ------------------------------------------------------------------ the estimate
    def partial_baseline(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """The partial term's control variate at every step."""
        raise NotImplementedError

    def follower_baseline(self, batch: GameBatch) -> np.ndarray:
        """The FollowerQGrad sum's control variate ``c(s_k)``."""
        raise NotImplementedError

    def leader_q(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """``Q_L(s_k, a_k, b_k)`` from the critic, ``(E, T)``."""
        return leader.critic.q(batch.obs, batch.leader_actions, batch.follower_actions)

    def partial_term(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """Alg. 5 weights ``γ_L^k (Q_L − baseline)``."""
        q = self.leader_q(leader, batch)
        base = (self.partial_baseline(leader, batch) if self.options.control_variates
                else np.zeros_like(q))
        return partial_weights(q - base, self.br.gamma_leader)

    def benefit(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """``B_L(s,a,b) = Q_L(s,a,b) − E_{b'~g(·|s,a)} Q_L(s,a,b')`` at every step (exact under a
        tabular follower or from a critic with ``expected_benefit = True``, e.g. the LQR model
        critic; else from ``benefit_samples`` follower draws, Alg. 1 l. 10–11)."""
        br, critic = self.br, leader.critic
        q = self.leader_q(leader, batch)
        s, a = batch.obs, batch.leader_actions
        M = self.benefit_samples
        if M is None or getattr(critic, "expected_benefit", False):
            return q - critic.v(s, br, a)  # closed-form E_b (tabular, or a model critic)
        E, T = q.shape
        s_m = np.repeat(s.reshape((E * T,) + s.shape[2:]), M, axis=0)
        a_m = np.repeat(a.reshape((E * T,) + a.shape[2:]), M, axis=0)
        b_m = br.follower.act(br.problem.follower_obs(s_m, a_m), leader.rng)
        return q - critic.q(s_m, a_m, b_m).reshape(E, T, M).mean(axis=-1)

    def response_term(self, leader: Any, batch: GameBatch, stats: GameBatch,
                      factor: np.ndarray, advantage: bool) -> np.ndarray:
        """Alg. 7 weights of the Benefit-weighted FollowerQGrad (Alg. 1 line 16)."""
        if advantage:
            raise ValueError(f"the ∇Q_F − ∇V_F form is defined for configurable MDPs, not "
                             f"{self.label}")
        cv = self.options.control_variates
        baseline = self.follower_baseline(batch) if cv else None
        return guiding_weights(factor, batch.follower_value, self.br.beta, self.br.gamma_leader,
                               self.br.gamma_follower, baseline=baseline, include_first=not cv)

    def gradient(self, leader: Any, batch: GameBatch, term: np.ndarray) -> np.ndarray:
        """``(1/E) Σ_k w_k ∇θ log f_θ(a_k|s_k)`` (Theorem 2's sample form)."""
        score = self.br.leader_score(batch.obs, batch.leader_actions)
        return np.einsum("et,etd->d", term, score) / batch.n_episodes

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The critic's replay buffer (if any)."""
        return {"buffer": [x[:self._filled].copy() for x in self._buffer],
                "filled": int(self._filled), "pos": int(self._pos)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`."""
        cap = self.options.buffer_episodes
        stored = state.get("buffer") or []
        if cap is None or not stored:
            self._buffer, self._filled, self._pos = [], 0, 0
            return
        self._buffer = [np.empty((cap,) + np.shape(x)[1:], dtype=np.asarray(x).dtype)
                        for x in stored]
        for store, x in zip(self._buffer, stored):
            store[:len(x)] = x
        self._filled, self._pos = int(state["filled"]), int(state["pos"])


class TabularGameFamily(GameFamily):
    """Games with finitely many states and leader actions (the toy game)."""

    label = "tabular Markov games"
    #: the toy game's protocol (docs/results/games.md): Adam 0.003, no clipping (the authors'
    #: toy configs have none), 3 episodes of 150 steps per iteration
    defaults = {"lr": 0.003, "optimizer": "adam", "max_grad_norm": None, "episodes": 3}

    def __init__(self, br: Any, **options: Any):
        super().__init__(br, **options)
        if self.options.critic_exploration is not None:
            raise ValueError("critic_exploration is for linear-Gaussian leaders; tabular games "
                             "explore through the leader's own policy")

    def initial_theta(self, rng: np.random.Generator, init_scale: float) -> np.ndarray:
        """The leader policy's own initialisation (tabular softmax: N(0, init_scale²))."""
        return self.br.leader_parameterization.initial(rng, init_scale)

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """``"td"``: tabular TD with the expected-SARSA target; ``"stackelberg"``: Bi-AC's."""
        if kind is None or not isinstance(kind, str):
            return kind
        p = self.problem
        shape = (p.n_states, p.n_leader_actions, p.n_follower_actions)
        if kind in ("td", "stackelberg"):
            target = "expected" if kind == "td" else "stackelberg"
            return TabularGameCritic(*shape, target=target, seed=leader.seed, **critic_kwargs)
        if kind == "exact":
            return exact_critic(self.br, **critic_kwargs)
        raise ValueError(f"critic must be a Critic or one of ['exact', 'stackelberg', 'td'] on "
                         f"{self.label}, got {kind!r}")

    def explore_sampler(self) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """Uniform leader actions."""
        n = self.problem.n_leader_actions
        return lambda obs, rng: rng.integers(0, n, size=np.shape(obs)[0])

    def partial_baseline(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """``V_L(s) = E_{a~f, b~g} Q_L(s, a, b)``."""
        return leader.critic.v(batch.obs, self.br)

    def follower_baseline(self, batch: GameBatch) -> np.ndarray:
        """``E_{a~f} V_F(s, a)``."""
        br = self.br
        return (br.leader_policy * br.soft_v).sum(axis=1)[batch.obs]


class GaussianGameFamily(GameFamily):
    """Games with a linear-Gaussian leader ``a ~ N(Ks, W²)`` (the LQR game)."""

    label = "linear-Gaussian Markov games"
    #: the LQR game's protocol (docs/results/games.md, the authors' Fig. 5): Adam 0.1, clip 1,
    #: 4 episodes of 100 steps, 10 iterations of N(0, 1) exploration
    defaults = {"lr": 0.1, "optimizer": "adam", "max_grad_norm": 1.0, "episodes": 4,
                "explore_iterations": 10}
    #: the paper draws the initial gain K0 ~ N(0, I)
    init_defaults = {"init_scale": 1.0}

    @property
    def benefit_samples(self) -> int:
        """Follower samples per Benefit (default 32: no closed-form expectation)."""
        M = self.options.benefit_samples
        return 32 if M is None else M

    def hparams(self) -> dict[str, Any]:
        """Sampling options (with ``benefit_samples`` resolved)."""
        return {**super().hparams(), "benefit_samples": self.benefit_samples}

    def make_critic(self, leader: Any, kind: Any, critic_kwargs: dict[str, Any]) -> Any:
        """``"td"``: an MLP TD critic; ``"model"``: the plug-in model-based critic
        (:class:`~bilevel_agents.critics.LQRModelCritic`, from samples); ``"exact"``: the exact
        LQR critic."""
        if kind is None or not isinstance(kind, str):
            return kind
        p = self.problem
        if kind == "td":
            return MLPGameCritic(p.state_dim + p.leader_action_dim + p.follower_action_dim,
                                 seed=leader.seed, **critic_kwargs)
        if kind == "model":
            return LQRModelCritic(**critic_kwargs)
        if kind == "exact":
            return exact_critic(self.br, **critic_kwargs)
        raise ValueError(f"critic must be a Critic or one of ['exact', 'model', 'td'] on "
                         f"{self.label}, got {kind!r}")

    def explore_sampler(self) -> Callable[[np.ndarray, np.random.Generator], np.ndarray]:
        """N(0, I) leader actions (the authors' exploration)."""
        k = self.problem.leader_action_dim
        return lambda obs, rng: rng.standard_normal((np.shape(obs)[0], k))

    def extra_critic_episodes(self, leader: Any) -> GameBatch | None:
        """With ``critic_exploration``: episodes with leader actions ``Ks + σ ε``."""
        sigma = self.options.critic_exploration
        if sigma is None:
            return None
        K = self.br.leader_gain

        def noisy(obs, rng):
            return obs @ K.T + sigma * rng.standard_normal((len(obs), K.shape[0]))

        return self.br.rollout(self.options.episodes, rng=leader.rng, leader_sampler=noisy)

    def partial_baseline(self, leader: Any, batch: GameBatch) -> np.ndarray:
        """``Q_L(s, Ks, z)`` with ``z = b + K_a (a − Ks)`` (module docstring)."""
        br = self.br
        s, a, b = batch.obs, batch.leader_actions, batch.follower_actions
        a_mean = s @ br.leader_gain.T
        z = b + (a - a_mean) @ br.follower.K_a.T
        return leader.critic.q(s, a_mean, z)

    def follower_baseline(self, batch: GameBatch) -> np.ndarray:
        """``V_F(s, Ks)``."""
        br, s = self.br, batch.obs
        E, T = s.shape[:2]
        flat = s.reshape(E * T, -1)
        return br.follower_value(flat, flat @ br.leader_gain.T).reshape(E, T)
