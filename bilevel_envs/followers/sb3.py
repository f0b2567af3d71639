"""Any Stable-Baselines3 model as the follower of a configurable MDP (a learning follower).

:class:`SB3Follower` trains an SB3 model online between leader updates: every
:meth:`SB3Follower.solve` (θ has changed) runs SB3's own
``model.learn(total_timesteps=steps_per_leader_update, reset_num_timesteps=False)`` on a
follower-facing env, :class:`FollowerEnv`, that *shares the wrapper's problem instance*: θ set
through ``BestResponse.set_config`` is the θ the model trains on, with no copy to keep in sync.
(For models built on another env the follower pushes θ with
``vec_env.env_method("set_config", θ)``; never ``vec_env.set_attr``: SB3's ``DummyVecEnv.set_attr``
writes a shadow attribute on the outer ``Monitor`` and the real env keeps its old θ,
ecosystem_conventions §3.3 SB3-VEC-1.)

What it publishes, read through SB3's API only (ecosystem_conventions §3.5):

* tabular problems (``Discrete`` observations and actions): ``policy`` = the ``(S, B)`` table of
  the model's action law, observations one-hot encoded by ``policy.obs_to_tensor``:
  PPO / A2C: ``policy.get_distribution(obs).distribution.probs``; DQN: ``softmax(q_net(obs)/β)``
  (DQN's ``predict`` is ε-greedy on a hard-max Q; as a follower of temperature β it plays the
  Boltzmann policy of its Q-network). The wrapper's rollouts and :meth:`SB3Follower.act` sample
  this table, so the exact leader objective under the follower's *actual* policy can be computed
  (``bilevel_envs.followers.soft_value_iteration.follower_optimality_gap``).
* never ``soft_q`` / ``soft_v``: SB3 has no soft values (``None``).
* continuous problems: nothing; :meth:`SB3Follower.act` samples SAC's squashed Gaussian with the
  caller's generator (other algorithms: ``model.predict`` under seeds drawn from it).

SAC with ``ent_coef = β`` *is* the MaxEnt follower, with two precise caveats. SB3's SAC
maximises ``E Σ_t γ^t (r_t + α H(π(·|s_t)))``: its critic target is
``r + γ (min_j Q_j(s', a') − α log π(a'|s'))`` and its actor loss ``E[α log π(a|s) − Q(s, a)]``,
i.e. ``Q(s, a) = r + γ E V(s')`` and ``V(s) = E_a[Q(s, a) − α log π(a|s)]``: our ``Q_F``, ``V_F``
(paper eq. 18, App. C.4) with ``α = β`` exactly, same placement of the entropy bonus (next state
in Q, current state in V), same sign and scale (no 1/α reward scaling). The caveats: (1) SB3's
policy is ``a = low + (high − low)(tanh(u) + 1)/2`` with ``u`` Gaussian, a bounded
(``[−10, 10]²`` for the building) squashed Gaussian, whereas the MaxEnt-LQR optimum is the
unbounded ``N(−Ks, (β/2)S⁻¹)``; inside the box and far from its edges tanh is nearly linear and
the family contains a close approximation. (2) SB3's ``log π`` is the density of the *normalised*
action ``tanh(u) ∈ [−1, 1]^m`` (tanh Jacobian included, not the affine rescaling), so its
entropy is ours minus ``Σ_i log((high_i − low_i)/2)`` = ``m log 10`` for the building: a constant
per step, which shifts every soft value by ``β m log 10 / (1 − γ)`` and leaves the optimal policy
unchanged. SAC ``ent_coef="auto"`` (SB3's default) learns α towards a target entropy: not a
follower of temperature β, so :func:`make_sb3_follower` sets ``ent_coef=β`` unless told
otherwise. PPO / A2C's ``ent_coef`` is an entropy bonus on the policy loss, not in the return:
an approximation only.

Exact resume: :meth:`SB3Follower.state_dict` holds the networks and optimiser moments
(``model.get_parameters()``), SB3's torch variables (SAC's ``log_ent_coef``), the counters and
last observations SB3 continues from, the filled part of the replay buffer, the follower env's
state and generator, and the private global RNG states: SB3 draws from the *global*
``numpy``/``torch``/``random`` generators (ε-greedy, replay sampling, minibatch permutations,
policy sampling), so the follower runs ``learn`` with its own saved global states swapped in
(:class:`PrivateGlobalRNG`) and leaves the caller's globals untouched.

SB3 is an optional dependency (``pip install bilevel[sb3]``); it is imported on first use.
"""

from __future__ import annotations

import copy
import inspect
import random
import warnings
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding

from bilevel_envs.utils import check_beta

__all__ = ["SB3_ALGORITHMS", "FollowerEnv", "PrivateGlobalRNG", "SB3Follower", "TorchThreads",
           "make_sb3_follower"]

#: the SB3 algorithms a follower spec may name, and the action spaces they support
SB3_ALGORITHMS = {"PPO": ("Discrete", "Box", "MultiDiscrete", "MultiBinary"),
                  "A2C": ("Discrete", "Box", "MultiDiscrete", "MultiBinary"), "DQN": ("Discrete",),
                  "SAC": ("Box",), "TD3": ("Box",), "DDPG": ("Box",)}

#: SB3 attributes that ``learn(reset_num_timesteps=False)`` continues from (beyond torch state)
_MODEL_ATTRS = ("num_timesteps", "_n_updates", "_episode_num", "_last_obs",
                "_last_episode_starts", "_last_original_obs", "_total_timesteps",
                "_num_timesteps_at_start", "_current_progress_remaining", "exploration_rate",
                "_n_calls")
#: the arrays of SB3's ``ReplayBuffer`` (what a snapshot of an off-policy learner must keep)
_BUFFER_ARRAYS = ("observations", "next_observations", "actions", "rewards", "dones",
                  "timeouts")


# ---------------------------------------------------------------------- follower-facing env
class FollowerEnv(gym.Env):
    """The follower's single-agent view of a configurable MDP, sharing the problem instance.

    It steps the problem's batched simulator (``sample_initial_states``, ``transition``,
    ``state_to_obs``) at the problem's *current* θ with its own state, time step and generator,
    so SB3 can train on it while the wrapper (and the user) use the problem itself: a θ set on
    the problem is seen at the next step, and nothing of the problem's own episode state is
    touched. Episodes end at termination or after ``max_episode_steps`` (truncation). The
    reward is ``r_F``; ``info["leader_reward"]`` is ``r_L``. Spaces are copies of the problem's
    (SB3 seeds the action space it is given).

    Args:
        problem: a :class:`~bilevel_envs.core.ConfigurableEnv` (wrapped or not: unwrapped here).
        max_episode_steps: time limit (default: the problem's ``max_episode_steps``).
        seed: seed of the env's generator (otherwise SB3 seeds it at its first reset).
    """

    metadata = {"render_modes": []}

    def __init__(self, problem: Any, max_episode_steps: int | None = None,
                 seed: int | None = None):
        super().__init__()
        self.problem = getattr(problem, "unwrapped", problem)
        self.observation_space = copy.deepcopy(self.problem.observation_space)
        self.action_space = copy.deepcopy(self.problem.action_space)
        self.max_episode_steps = int(max_episode_steps or self.problem.max_episode_steps)
        if self.max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be >= 1, got {max_episode_steps!r}")
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seed)
        self._state: Any = None
        self._t = 0

    def set_config(self, theta: Any) -> None:
        """Set θ on the problem (a no-op when the shared problem already has it)."""
        theta = np.asarray(theta, dtype=np.float64)
        if not (theta.shape == self.problem.config.shape
                and np.array_equal(theta, self.problem.config)):
            self.problem.set_config(theta)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Start an episode at ``problem.sample_initial_states`` (``options={"config": θ}`` too)."""
        super().reset(seed=seed)
        options = dict(options or {})
        if "config" in options:
            self.set_config(options.pop("config"))
        if options:
            raise ValueError(f"unknown reset options {sorted(options)}; allowed: ['config']")
        self._state = self.problem.sample_initial_states(1, self.np_random)[0]
        self._t = 0
        return self.problem.state_to_obs(self._state), {}

    def step(self, action: Any):
        """One step of the problem's simulator at its current θ."""
        if self._state is None:
            raise RuntimeError("call reset() before step()")
        a = self.problem.validate_action(action)
        nxt, r_f, r_l, term = self.problem.transition(np.asarray([self._state]),
                                                      np.asarray([a]), self.np_random)
        self._state, self._t = nxt[0], self._t + 1
        terminated = bool(term[0])
        truncated = not terminated and self._t >= self.max_episode_steps
        return (self.problem.state_to_obs(self._state), float(r_f[0]), terminated, truncated,
                {"leader_reward": float(r_l[0])})

    def follower_env_state(self) -> dict:
        """Episode position and generator (what :class:`SB3Follower` snapshots)."""
        state = self._state
        return {"state": None if state is None else np.array(state, copy=True), "t": self._t,
                "rng": self.np_random.bit_generator.state}

    def load_follower_env_state(self, state: dict) -> None:
        """Restore a :meth:`follower_env_state`."""
        s = state["state"]
        if s is not None:
            s = np.array(s, copy=True)
            s = s[()] if s.ndim == 0 else s  # a numpy scalar for tabular states
        self._state = s
        self._t = int(state["t"])
        self.np_random.bit_generator.state = state["rng"]


# ---------------------------------------------------------------------- private global RNGs
class PrivateGlobalRNG:
    """The ``random`` / ``numpy`` / ``torch`` *global* generator states of one follower.

    SB3 samples from the global generators. ``with rng_ctx:`` swaps this follower's saved states
    in, runs the block, saves them back and restores the caller's: the follower's randomness is
    reproducible from its seed and part of its ``state_dict``, and the caller's global streams do
    not move. Not re-entrant.

    Args:
        seed: seed of the three streams (``None``: fresh entropy).
    """

    def __init__(self, seed: int | None = None):
        if seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        outer = self._capture()
        try:
            random.seed(seed)
            np.random.seed(int(seed) % 2**32)
            self._torch().manual_seed(int(seed))
            self._states = self._capture()
        finally:
            self._restore(outer)
        self._outer: tuple | None = None

    @staticmethod
    def _torch():
        import torch

        return torch

    def _capture(self) -> tuple:
        return (random.getstate(), np.random.get_state(legacy=False),
                self._torch().get_rng_state().numpy().copy())

    def _restore(self, states: tuple) -> None:
        random.setstate(states[0])
        np.random.set_state(states[1])
        self._torch().set_rng_state(self._torch().from_numpy(np.array(states[2], np.uint8)))

    def __enter__(self) -> PrivateGlobalRNG:
        """Swap the follower's states in (the caller's are saved)."""
        if self._outer is not None:
            raise RuntimeError("PrivateGlobalRNG is not re-entrant")
        self._outer = self._capture()
        self._restore(self._states)
        return self

    def __exit__(self, *exc: object) -> None:
        """Save the follower's states back and restore the caller's."""
        self._states = self._capture()
        self._restore(self._outer)
        self._outer = None

    def state_dict(self) -> dict:
        """The three saved states (plain tuples, dicts and arrays)."""
        py, npy, th = self._states
        return {"python": py, "numpy": copy.deepcopy(npy), "torch": th.copy()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict`."""
        py = state["python"]
        py = (py[0], tuple(py[1]), py[2])
        self._states = (py, copy.deepcopy(state["numpy"]), np.array(state["torch"], np.uint8))


class TorchThreads:
    """Temporarily set torch's intra-op thread count (``None``: no change)."""

    def __init__(self, n: int | None):
        self.n, self.saved = n, None

    def __enter__(self) -> None:
        if self.n is not None:
            import torch

            self.saved = torch.get_num_threads()
            if self.saved != self.n:
                torch.set_num_threads(int(self.n))

    def __exit__(self, *exc: object) -> None:
        if self.n is not None and self.saved is not None and self.saved != self.n:
            import torch

            torch.set_num_threads(self.saved)


# ---------------------------------------------------------------------- tensor <-> numpy trees
def _to_numpy(tree: Any) -> Any:
    import torch

    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu().numpy().copy()
    if isinstance(tree, dict):
        return {k: _to_numpy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_numpy(v) for v in tree)
    return copy.deepcopy(tree)


def _to_torch(tree: Any) -> Any:
    import torch

    if isinstance(tree, np.ndarray):
        return torch.from_numpy(np.array(tree, copy=True))
    if isinstance(tree, dict):
        return {k: _to_torch(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_torch(v) for v in tree)
    return copy.deepcopy(tree)


def _recursive_getattr(obj: Any, name: str) -> Any:
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# ---------------------------------------------------------------------- the follower
class SB3Follower:
    """A Stable-Baselines3 model as the follower of a configurable MDP (module docstring).

    Args:
        model: any SB3 ``BaseAlgorithm`` whose env is a :class:`FollowerEnv` on the wrapper's
            problem (built by :func:`make_sb3_follower`), or any env of the same problem (θ is
            then pushed with ``env_method("set_config", θ)``; exact resume needs FollowerEnv).
        beta: the follower's temperature β (the DQN Boltzmann policy; SAC's ``ent_coef``).
        steps_per_leader_update: SB3 timesteps per :meth:`solve` (two-timescale ratio). On-policy
            algorithms collect whole rollouts of ``n_steps × n_envs``: use a multiple of it.
        warmup_steps: extra timesteps on the first solve.
        publish_policy: publish the ``(S, B)`` policy table on tabular problems (``False``: a
            black-box follower; :meth:`act` still samples the same table).
        seed: seed of the private global RNG streams (default: ``model.seed``).
        rng_context: an existing :class:`PrivateGlobalRNG` (the one the model was built under).
        callback: an SB3 callback passed to every ``learn`` call.
        torch_threads: torch intra-op threads while training and acting (restored afterwards;
            ``None``: leave torch's setting). SB3's networks here are tiny, so threads only add
            synchronisation: one ``Linear(104, 64)`` on a 32-batch took 52 µs with 1 thread and
            2.3 ms with 2 on the 2-core test machine under load.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> env = gym.make("BiLevel/FourRooms-v0")
        >>> fol = make_sb3_follower(env, "DQN", beta=0.1, seed=0, steps_per_leader_update=200,
        ...                         learning_starts=0)  # doctest: +SKIP
        >>> br = BestResponse(env, beta=0.1, follower=fol)  # doctest: +SKIP
        >>> br.policy.shape  # doctest: +SKIP
        (104, 4)
    """

    def __init__(self, model: Any, beta: float, steps_per_leader_update: int = 1000, *,
                 warmup_steps: int = 0, publish_policy: bool = True, seed: int | None = None,
                 rng_context: PrivateGlobalRNG | None = None, callback: Any = None,
                 torch_threads: int | None = 1):
        self.model, self.beta = model, check_beta(beta)
        self.torch_threads = torch_threads
        for name, val in (("steps_per_leader_update", steps_per_leader_update),
                          ("warmup_steps", warmup_steps)):
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)) \
                    or val < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {val!r}")
        self.steps_per_leader_update, self.warmup_steps = int(steps_per_leader_update), \
            int(warmup_steps)
        self.publish_policy, self.callback = bool(publish_policy), callback
        self._rng_ctx = rng_context or PrivateGlobalRNG(
            seed if seed is not None else getattr(model, "seed", None))
        self.n_solves = 0
        obs_space, act_space = model.observation_space, model.action_space
        self.tabular = isinstance(obs_space, gym.spaces.Discrete) and isinstance(
            act_space, gym.spaces.Discrete)
        self._table: np.ndarray | None = None
        n_steps = getattr(model, "n_steps", None)
        if hasattr(model, "rollout_buffer") and n_steps and self.steps_per_leader_update % (
                n_steps * model.n_envs):
            warnings.warn(f"steps_per_leader_update={self.steps_per_leader_update} is not a "
                          f"multiple of n_steps*n_envs={n_steps * model.n_envs}: "
                          f"{type(model).__name__} collects whole rollouts, so each solve trains "
                          "a rounded-up number of steps", stacklevel=2)

    def describe(self) -> str:
        """``sb3:ALGO`` (plus ``(black-box)`` when it publishes no policy)."""
        return f"sb3:{type(self.model).__name__}" + ("" if self.publish_policy else
                                                     " (black-box)")

    # ------------------------------------------------------------------ protocol
    def solve(self, problem: Any) -> None:
        """θ changed: train ``steps_per_leader_update`` SB3 timesteps at the new θ.

        θ reaches the model's env through ``env_method("set_config", θ)`` (a no-op for a
        :class:`FollowerEnv` sharing the problem); then
        ``model.learn(total_timesteps=n, reset_num_timesteps=False)``.
        """
        problem = getattr(problem, "unwrapped", problem)
        vec = self.model.get_env()
        if vec is None:
            raise ValueError(f"{self.describe()}: the model has no env; build it on "
                             "FollowerEnv(problem) (make_sb3_follower does)")
        vec.env_method("set_config", problem.config)
        n = self.steps_per_leader_update + (self.warmup_steps if self.n_solves == 0 else 0)
        with TorchThreads(self.torch_threads):
            if n > 0:
                with self._rng_ctx:
                    self.model.learn(total_timesteps=n, reset_num_timesteps=False,
                                     progress_bar=False, callback=self.callback)
            self.n_solves += 1
            self._refresh()

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample the model's actions for a batch, every random number drawn from ``rng``.

        Tabular: inverse CDF on the policy table. SAC: ``u = mean + std · ε`` with
        ``ε ~ rng``, ``a = unscale(tanh(u))`` (SB3's squashed Gaussian). Others:
        ``model.predict(obs, deterministic=False)`` with the global streams seeded from ``rng``.
        """
        if self.n_solves == 0:
            raise RuntimeError("call solve(problem) before act()")
        if self._table is not None:
            states = np.asarray(obs, dtype=np.int64).reshape(-1)
            u = rng.random(len(states))
            return (u[:, None] >= self._cum[states]).sum(axis=1).astype(np.int64)
        with TorchThreads(self.torch_threads):
            return self._act_network(np.asarray(obs), rng)

    def _act_network(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        import torch

        policy = self.model.policy
        actor = getattr(policy, "actor", None)
        if actor is not None and hasattr(actor, "get_action_dist_params") \
                and not getattr(self.model, "use_sde", False):
            with torch.no_grad():
                obs_t, _ = policy.obs_to_tensor(obs)
                mean, log_std, _ = actor.get_action_dist_params(obs_t)
                eps = torch.from_numpy(rng.standard_normal(tuple(mean.shape))).to(mean.dtype)
                squashed = torch.tanh(mean + log_std.exp() * eps).numpy().astype(np.float64)
            return policy.unscale_action(squashed)
        with PrivateGlobalRNG(int(rng.integers(2**62))):
            actions, _ = self.model.predict(obs, deterministic=False)
        return np.asarray(actions)

    @property
    def policy(self) -> np.ndarray | None:
        """The ``(S, B)`` policy table read from SB3 (tabular problems), else ``None``."""
        return self._table if self.publish_policy else None

    @property
    def soft_q(self) -> None:
        """Always ``None``: SB3 has no soft values."""
        return None

    @property
    def soft_v(self) -> None:
        """Always ``None``: SB3 has no soft values."""
        return None

    def policy_table(self) -> np.ndarray:
        """The ``(S, B)`` action law of the model read through SB3's API (tabular problems).

        One-hot observations via ``policy.obs_to_tensor(arange(S))``; PPO/A2C:
        ``get_distribution(obs).distribution.probs``; DQN: ``softmax(q_net(obs)/β)``. Rows are
        renormalised in float64.
        """
        import torch

        if not self.tabular:
            raise ValueError(f"{self.describe()}: policy_table needs Discrete observations and "
                             "actions")
        policy = self.model.policy
        n_states = int(self.model.observation_space.n)
        with torch.no_grad():
            obs_t, _ = policy.obs_to_tensor(np.arange(n_states))
            if hasattr(policy, "get_distribution"):
                probs = policy.get_distribution(obs_t).distribution.probs
                table = probs.double().numpy()
            elif hasattr(policy, "q_net"):
                q = policy.q_net(obs_t).double()
                table = torch.softmax(q / self.beta, dim=1).numpy()
            else:
                raise ValueError(f"{self.describe()}: cannot read a policy table from "
                                 f"{type(policy).__name__}")
        table = np.clip(table, 0.0, None)
        return table / table.sum(axis=1, keepdims=True)

    def _refresh(self) -> None:
        if self.tabular:
            self._table = self.policy_table()
            self._cum = np.cumsum(self._table, axis=1)
            self._cum[:, -1] = 1.0

    # ------------------------------------------------------------------ snapshots
    def state_dict(self) -> dict:
        """Everything SB3's continued ``learn`` and :meth:`act` depend on (module docstring)."""
        model = self.model
        _, torch_vars = model._get_torch_save_params()
        state: dict[str, Any] = {
            "params": _to_numpy(model.get_parameters()),
            "torch_vars": {name: _to_numpy(_recursive_getattr(model, name))
                           for name in torch_vars},
            "attrs": {name: copy.deepcopy(getattr(model, name)) for name in _MODEL_ATTRS
                      if hasattr(model, name)},
            "action_space_rng": model.action_space.np_random.bit_generator.state,
            "global_rng": self._rng_ctx.state_dict(),
            "n_solves": self.n_solves,
            "replay_buffer": None, "envs": None,
        }
        buf = getattr(model, "replay_buffer", None)
        if buf is not None:
            filled = buf.buffer_size if buf.full else buf.pos
            state["replay_buffer"] = {
                "pos": int(buf.pos), "full": bool(buf.full),
                "arrays": {k: getattr(buf, k)[:filled].copy() for k in _BUFFER_ARRAYS
                           if isinstance(getattr(buf, k, None), np.ndarray)}}
        vec = model.get_env()
        if vec is not None:
            try:
                state["envs"] = vec.env_method("follower_env_state")
            except AttributeError:
                warnings.warn(f"{self.describe()}: the model's env is not a FollowerEnv, so its "
                              "episode state is not snapshotted (resume is not exact)",
                              stacklevel=2)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` in place (same model object; no training)."""
        import torch

        model = self.model
        model.set_parameters(_to_torch(state["params"]), exact_match=True)
        for name, value in state["torch_vars"].items():
            with torch.no_grad():
                _recursive_getattr(model, name).copy_(torch.from_numpy(np.array(value)))
        for name, value in state["attrs"].items():
            setattr(model, name, copy.deepcopy(value))
        model.action_space.np_random.bit_generator.state = state["action_space_rng"]
        self._rng_ctx.load_state_dict(state["global_rng"])
        self.n_solves = int(state["n_solves"])
        rb = state.get("replay_buffer")
        if rb is not None:
            buf = model.replay_buffer
            for k, arr in rb["arrays"].items():
                getattr(buf, k)[:len(arr)] = arr
            buf.pos, buf.full = int(rb["pos"]), bool(rb["full"])
        if state.get("envs") is not None:
            vec = model.get_env()
            for i, env_state in enumerate(state["envs"]):
                vec.env_method("load_follower_env_state", env_state, indices=[i])
        if self.n_solves > 0:
            self._refresh()


# ---------------------------------------------------------------------- factory
def _space_kind(space: gym.Space) -> str:
    return type(space).__name__


def sb3_algorithm_arguments(algo: str) -> list[str]:
    """The keyword arguments of SB3's ``algo`` constructor (besides ``policy`` and ``env``)."""
    import stable_baselines3

    cls = getattr(stable_baselines3, algo)
    return sorted(p for p in inspect.signature(cls.__init__).parameters
                  if p not in ("self", "policy", "env"))


def make_sb3_follower(problem: Any, algo: str, beta: float, *, seed: int | None = None,
                      steps_per_leader_update: int = 1000, warmup_steps: int = 0,
                      publish_policy: bool = True, max_episode_steps: int | None = None,
                      policy: str = "MlpPolicy", **algo_kwargs: Any) -> SB3Follower:
    """Build an SB3 model of ``algo`` on a :class:`FollowerEnv` of ``problem`` and wrap it.

    Defaults set here (all overridable through ``algo_kwargs``): ``gamma = γ_F`` of the
    problem, ``verbose=0``, ``device="cpu"``, ``seed``; SAC: ``ent_coef = β`` (the MaxEnt
    follower, module docstring); off-policy algorithms: ``buffer_size = 100_000`` (snapshots copy
    the filled part of the buffer).

    Args:
        problem: the configurable MDP (the instance the wrapper holds; wrapped or not).
        algo: one of :data:`SB3_ALGORITHMS` (``"PPO"``, ``"A2C"``, ``"DQN"``, ``"SAC"``, ...).
        beta: the follower's temperature β.
        seed: seeds the model, the env and the private global RNG streams.
        steps_per_leader_update: SB3 timesteps per solve (see :class:`SB3Follower`).
        warmup_steps: extra timesteps on the first solve.
        publish_policy: publish the policy table (tabular problems).
        max_episode_steps: the follower env's time limit (default: the problem's).
        policy: SB3 policy name.
        **algo_kwargs: constructor arguments of the SB3 algorithm (e.g. ``learning_starts=0``).

    Raises:
        ValueError: unknown algorithm, an action space it does not support, or an argument
            its constructor does not take (naming the allowed ones).
    """
    beta = check_beta(beta)
    if algo not in SB3_ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algo!r}; allowed: {sorted(SB3_ALGORITHMS)}")
    import stable_baselines3

    problem = getattr(problem, "unwrapped", problem)
    kind = _space_kind(problem.action_space)
    if kind not in SB3_ALGORITHMS[algo]:
        ok = sorted(a for a, kinds in SB3_ALGORITHMS.items() if kind in kinds)
        raise ValueError(f"sb3:{algo} does not support the {kind} action space of "
                         f"{type(problem).__name__}; allowed here: {ok}")
    allowed = sb3_algorithm_arguments(algo)
    unknown = sorted(set(algo_kwargs) - set(allowed))
    if unknown:
        raise ValueError(f"sb3:{algo}: unknown argument(s) {unknown}; allowed: follower options "
                         f"['steps', 'warmup', 'publish', 'policy'] and {algo} arguments "
                         f"{allowed}")
    kwargs: dict[str, Any] = {"gamma": problem.gamma_follower, "verbose": 0, "device": "cpu",
                              "seed": seed}
    if algo == "SAC":
        kwargs["ent_coef"] = beta
    if "buffer_size" in allowed:
        kwargs["buffer_size"] = 100_000
    kwargs.update(algo_kwargs)
    if algo == "SAC" and kwargs["ent_coef"] != beta:
        warnings.warn(f"sb3:SAC with ent_coef={kwargs['ent_coef']!r} != beta={beta}: not the "
                      "MaxEnt follower of temperature beta", stacklevel=2)
    env = FollowerEnv(problem, max_episode_steps=max_episode_steps, seed=seed)
    ctx = PrivateGlobalRNG(seed)
    with ctx:  # network initialisation draws from the global torch stream
        model = getattr(stable_baselines3, algo)(policy, env, **kwargs)
    return SB3Follower(model, beta, steps_per_leader_update, warmup_steps=warmup_steps,
                       publish_policy=publish_policy, rng_context=ctx)
