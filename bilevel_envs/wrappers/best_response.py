"""The follower's soft best response to the leader's current θ, as a Gymnasium wrapper.

``BestResponse(env, beta)`` solves the follower of a configurable MDP exactly (soft value
iteration for tabular problems, MaxEnt LQR for linear-Gaussian ones), re-solves (warm-started)
whenever θ changes, exposes ``policy``, ``soft_q`` and ``soft_v``, samples the follower's action
and rolls out batches of many episodes stepped together in numpy.

Any follower of the protocol (:mod:`bilevel_envs.followers.base`) can replace the exact one:
``BestResponse(env, beta, follower=make_follower("kstep:5:reset", env, beta, seed=0))``. The
wrapper then uses the protocol only: ``solve`` on every θ change (a learning follower learns
there), the published ``policy`` for the fast tabular rollouts when it is an ``(S, B)`` array and
``act`` otherwise, :class:`~bilevel_envs.followers.base.NotPublishedError` (an
``AttributeError``) from ``policy`` / ``soft_q`` / ``soft_v`` when the follower does not publish
them, and the follower's ``state_dict`` in :meth:`BestResponse.state_dict`.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

import gymnasium as gym
import numpy as np
from pettingzoo.utils.env import AECEnv, ParallelEnv

from bilevel_envs.core import Batch, ConfigurableEnv, TabularConfigurableEnv
from bilevel_envs.followers.base import check_follower_beta, published, require_published
from bilevel_envs.utils import check_beta

__all__ = ["SAMPLER_REVISION", "WALK_MAX_ENVS", "BestResponse", "stacked_tabular_walk", "walk_batch", "walk_draws",
           "walk_tables"]


class BestResponse(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Pairs a configurable MDP with its follower's entropy-regularised best response.

    Args:
        env: a configurable MDP (``gym.make("BiLevel/FourRooms-v0")`` or an unwrapped one).
        beta: the follower's entropy temperature β > 0.
        follower: a custom :class:`~bilevel_envs.followers.Follower` (e.g. from
            :func:`~bilevel_envs.followers.make_follower`: k-step, soft Q-learning, SB3); by
            default the problem's exact solver ``env.unwrapped.make_follower(beta, **kwargs)``.
        **follower_kwargs: options of the default solver (e.g. ``tol``, ``max_iterations``).

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
        >>> br.policy.shape
        (104, 4)
        >>> batch = br.rollout(100, seed=0)
        >>> len(batch)
        100
    """

    def __init__(self, env: gym.Env, beta: float, follower: Any = None, **follower_kwargs: Any):
        # recorded so that gym.make(br.spec) rebuilds the same follower (tol, max_iterations, ...)
        recorded = {"beta": beta, **follower_kwargs}
        if follower is not None:
            recorded["follower"] = follower
        gym.utils.RecordConstructorArgs.__init__(self, **recorded)
        if isinstance(env, (AECEnv, ParallelEnv)):
            raise ValueError(f"env is a leader-follower game ({type(env.unwrapped).__name__}): "
                             "use GameBestResponse(game, beta) or best_response(game, beta)")
        gym.Wrapper.__init__(self, env)
        self.beta = check_beta(beta)
        problem = env.unwrapped
        if not isinstance(problem, ConfigurableEnv):
            raise ValueError(
                f"env must be a bilevel_envs ConfigurableEnv, got {type(problem).__name__}"
            )
        if follower is None:
            follower = problem.make_follower(self.beta, **follower_kwargs)
        elif follower_kwargs:
            raise ValueError(f"follower_kwargs {sorted(follower_kwargs)} given with a follower")
        else:
            check_follower_beta(follower, self.beta)
        self.follower = follower
        self._rng = np.random.default_rng()
        self.follower.solve(problem)

    # ------------------------------------------------------------------ θ
    @property
    def problem(self) -> ConfigurableEnv:
        """The unwrapped configurable MDP."""
        return self.env.unwrapped  # type: ignore[return-value]

    @property
    def config_space(self) -> gym.spaces.Box:
        """The ``Box`` of the leader's parameter θ (the problem's ``config_space``)."""
        return self.problem.config_space

    @property
    def config(self) -> np.ndarray:
        """The leader's current parameter θ (a copy)."""
        return self.problem.config

    def set_config(self, theta: Any) -> None:
        """Set θ and re-solve the follower (warm-started from the previous solution).

        ``follower.solve(problem)``: an exact solver re-solves, a k-step follower takes its k
        steps, a learning follower trains (e.g. ``steps_per_leader_update`` transitions).
        """
        self.problem.set_config(theta)
        self.follower.solve(self.problem)

    def state_dict(self) -> dict[str, Any]:
        """θ, the follower's state (its warm start) and the wrapper's generator: everything
        that affects later solves and samples. Plain arrays, numbers and dicts."""
        follower = self.follower.state_dict() if hasattr(self.follower, "state_dict") else None
        return {"config": self.config, "follower": follower,
                "rng": self._rng.bit_generator.state, "sampler": SAMPLER_REVISION}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`. A follower that snapshots its state is restored as it
        was, with no solve; any other follower is re-solved at the stored θ.

        Raises:
            ValueError: the state was saved under another :data:`SAMPLER_REVISION` (a state
                without a revision is taken as the current one).
        """
        revision = state.get("sampler", SAMPLER_REVISION)
        if revision != SAMPLER_REVISION:
            raise ValueError(f"the state was saved with sampler revision {revision!r} and this "
                             f"version samples with revision {SAMPLER_REVISION}, so a resumed "
                             "run would not continue its draws; finish it with the version "
                             "that started it, or start it in another folder")
        self.problem.set_config(state["config"])
        if state.get("follower") is not None and hasattr(self.follower, "load_state_dict"):
            self.follower.load_state_dict(state["follower"])
        else:
            self.follower.solve(self.problem)
        if state.get("rng") is not None:
            self._rng.bit_generator.state = state["rng"]

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Reset the wrapped env (Gymnasium API); ``options={"config": θ}`` also re-solves.

        Args:
            seed: seeds the simulator and the wrapper's own stream for the follower's actions.
            options: passed to the env (``{"config": θ}`` sets θ, then the follower answers it).
        """
        if seed is not None:
            # A stream independent of the simulator's: env.reset(seed) seeds np_random with
            # SeedSequence(seed) too, so default_rng(seed) would replay the simulator's own
            # draws (the follower's first action and the first slip used the same uniform).
            self._rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(1)[0])
        had_config = bool(options) and "config" in options
        out = self.env.reset(seed=seed, options=options)
        if had_config:
            self.follower.solve(self.problem)
        return out

    # ------------------------------------------------------------------ follower
    @property
    def policy(self) -> Any:
        """``g^{θ†}(b|s)``: ``(S, B)`` array (tabular) or a callable.

        Raises:
            NotPublishedError: (an ``AttributeError``) the follower does not publish its policy.
        """
        return require_published(self.follower, "policy")

    @property
    def soft_q(self) -> Any:
        """``Q_F^{θ†}(s, b)``: ``(S, B)`` array (tabular) or a callable on batches.

        A k-step or learning follower publishes its own estimate.

        Raises:
            NotPublishedError: the follower does not publish soft values (black box, SB3).
        """
        return require_published(self.follower, "soft_q")

    @property
    def soft_v(self) -> Any:
        """``V_F^{θ†}(s) = β log Σ_b exp(Q_F/β)``: ``(S,)`` array or a callable.

        Raises:
            NotPublishedError: the follower does not publish soft values (black box, SB3).
        """
        return require_published(self.follower, "soft_v")

    def observe(self, batch: Batch) -> None:
        """Hand a batch the leader collected to a follower that learns from it (``observe``).

        A no-op for followers without ``observe`` (exact, k-step, SB3). The wrapper never calls
        it by itself: rollouts have no side effect on the follower.
        """
        fn = getattr(self.follower, "observe", None)
        if callable(fn):
            fn(batch)

    def follower_gap(self):
        """The follower's sub-optimality at the current θ (tabular problems).

        :func:`~bilevel_envs.followers.soft_value_iteration.follower_optimality_gap` of the
        published policy: the soft-value gap ``V_F^* − V^g`` at the start distribution, its
        maximum over states and the relative gap (the authors' ``kl_optimality_gap``).

        Raises:
            ValueError: not a tabular problem.
            NotPublishedError: the follower does not publish its policy.
        """
        from bilevel_envs.followers.soft_value_iteration import follower_optimality_gap

        if not isinstance(self.problem, TabularConfigurableEnv):
            raise ValueError(f"follower_gap needs a tabular problem, got "
                             f"{type(self.problem).__name__}")
        return follower_optimality_gap(self.problem.tabular_model(), self.policy, self.beta,
                                       self.problem.gamma_follower)

    def follower_action(self, obs: Any, rng: np.random.Generator | None = None) -> Any:
        """Sample ``b ~ g^{θ†}(·|obs)`` for one observation."""
        return self.follower.act(np.asarray([obs]), rng or self._rng)[0]

    # ------------------------------------------------------------------ batched rollouts
    def rollout(
        self,
        n_transitions: int,
        n_envs: int = 1,
        *,
        seed: int | None = None,
        rng: np.random.Generator | None = None,
        initial_states: np.ndarray | None = None,
    ) -> Batch:
        """Roll out the follower's best response: ``n_envs`` episode streams stepped together.

        Every stream starts a fresh episode, restarts after termination or the time limit, and
        stops after ``n_transitions // n_envs`` steps (the last episode is cut: ``batch_end``).

        Args:
            n_transitions: total transitions, a positive multiple of ``n_envs``.
            n_envs: parallel episode streams.
            seed: seed a fresh generator (reproducible batches); else ``rng`` or the wrapper's.
            initial_states: optional ``(n_envs,)`` start states for the first episodes
                (e.g. uniform starts for an oracle); later episodes use the problem's ``mu0``.
        """
        for name, val in (("n_transitions", n_transitions), ("n_envs", n_envs)):
            if isinstance(val, (bool, np.bool_)) or not isinstance(val, (int, np.integer)):
                raise ValueError(f"{name} must be an integer, got {val!r}")
        n_transitions, n_envs = int(n_transitions), int(n_envs)
        if n_envs < 1:
            raise ValueError(f"n_envs must be >= 1, got {n_envs}")
        if n_transitions < n_envs or n_transitions % n_envs:
            raise ValueError(
                f"n_transitions must be a positive multiple of n_envs={n_envs}, got {n_transitions}"
            )
        if seed is not None:
            rng = np.random.default_rng(seed)
        rng = rng if rng is not None else self._rng
        if initial_states is not None:
            initial_states = _check_initial_states(self.problem, initial_states, n_envs)
        args = (n_transitions // n_envs, n_envs, rng, initial_states, self.max_episode_steps)
        # the fast walk needs the follower's (S, B) table; any other follower is sampled by act
        policy = published(self.follower, "policy") \
            if isinstance(self.problem, TabularConfigurableEnv) else None
        if isinstance(policy, np.ndarray):
            return _tabular_walk(self.problem, policy, *args)
        return _rollout(self.problem, self.follower, *args)

    @property
    def max_episode_steps(self) -> int:
        """Episode length of the rollouts: the wrapped ``TimeLimit`` (as ``gym.make`` sets it,
        e.g. ``max_episode_steps=50``), else the problem's own ``max_episode_steps``."""
        env = self.env
        while isinstance(env, gym.Wrapper):
            if isinstance(env, gym.wrappers.TimeLimit):
                return int(env._max_episode_steps)
            env = env.env
        return int(self.problem.max_episode_steps)


def _check_initial_states(problem, initial_states, n_envs) -> np.ndarray:
    states = np.asarray(initial_states)
    if states.ndim < 1 or states.shape[0] != n_envs:
        raise ValueError(f"initial_states must have {n_envs} rows, got shape {states.shape}")
    space = problem.observation_space
    if isinstance(space, gym.spaces.Discrete) and not (
            np.issubdtype(states.dtype, np.integer) and states.ndim == 1
            and np.all((states >= space.start) & (states < space.start + space.n))):
        raise ValueError(f"initial_states must be integer states in {space}, got {states!r}")
    return states


#: up to this many streams, the tabular walk runs as scalar code (no numpy per-step overhead);
#: wider batches step all streams together in numpy. The draws and the numbers are the same
#: either way: the choice is speed only.
WALK_MAX_ENVS = _WALK_MAX_ENVS = 16

#: the revision of the rule that turns a generator's draws into samples. A checkpoint records
#: it and a resume under another revision is refused: the generator state alone would continue
#: with other samples. Revision 1 drew the actions and slips of batches wider than
#: :data:`WALK_MAX_ENVS` streams step by step; revision 2 draws every walk by :func:`walk_draws`.
SAMPLER_REVISION = 2


def walk_tables(problem, policy: np.ndarray) -> dict[str, np.ndarray]:
    """The sampler's tables: per state, the outcomes ``(b, s')`` of the joint law
    ``g(b|s) p(s'|s, b)`` and their cumulative probabilities in one flat array (CSR order).

    ``policy`` is ``(S, B)`` or a stack ``(N, S, B)``; the probability tables (``cum``,
    ``base``, ``mass``) then get a leading run axis (each row is the single-policy table, bit
    for bit). Keys: ``cum``, ``base``, ``mass`` (probabilities), ``lo``, ``hi`` (each state's
    range of entries, ``hi`` inclusive), ``action``, ``next`` (the outcome of each entry).
    """
    S, B = policy.shape[-2:]
    P = problem.sampling_transitions()
    row_of_entry = np.repeat(np.arange(S * B), np.diff(P.indptr))
    flat = policy.reshape(policy.shape[:-2] + (S * B,))
    cum = np.cumsum(P.data * flat[..., row_of_entry], axis=-1)
    state_lo = P.indptr[np.arange(S) * B]
    state_hi = P.indptr[np.arange(S) * B + B]
    base = np.concatenate((np.zeros(cum.shape[:-1] + (1,)), cum), axis=-1)[..., state_lo]
    mass = cum[..., state_hi - 1] - base
    return {"cum": cum, "base": base, "mass": mass, "lo": state_lo, "hi": state_hi - 1,
            "action": row_of_entry % B, "next": P.indices}


def walk_batch(terminal: np.ndarray, r_follower: np.ndarray, r_leader: np.ndarray,
               s_arr: np.ndarray, b_arr: np.ndarray, s2_arr: np.ndarray, t_arr: np.ndarray,
               n_streams: int, steps: int, limit: int, env_id: np.ndarray) -> Batch:
    """A :class:`Batch` from sampled states, actions, next states and times (``n_streams``
    streams of ``steps`` each, stream-major): rewards, flags and bookkeeping, vectorised.
    ``r_follower``/``r_leader`` are indexed by ``(s, b)`` and ``terminal`` by ``s``."""
    term = terminal[s_arr]
    s2_arr = np.where(term, s_arr, s2_arr)
    trunc = ~term & (t_arr + 1 >= limit)
    return Batch(obs=s_arr, actions=b_arr, r_follower=r_follower[s_arr, b_arr],
                 r_leader=r_leader[s_arr, b_arr], next_obs=s2_arr, terminated=term,
                 truncated=trunc, batch_end=_batch_end(term, trunc, n_streams, steps),
                 time=t_arr, env_id=env_id)


def walk_draws(problem, rng: np.random.Generator, steps: int, n_envs: int,
               initial_states: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The random numbers of one tabular walk, in its order: one uniform per transition, then
    enough start states for every possible episode (at most one per step, plus the first of
    each stream; ``initial_states`` replace the first ``n_envs``)."""
    n = steps * n_envs
    u = rng.random(n)
    starts = np.array(problem.sample_initial_states(n + n_envs, rng), dtype=np.int64)
    if initial_states is not None:
        starts[:n_envs] = np.asarray(initial_states)
    return u, starts


def _tabular_walk(problem, policy, steps, n_envs, rng, initial_states, limit) -> Batch:
    """Sample tabular episodes from the exact joint law ``g(b|s) p(s'|s, b)``.

    Per state, the outcomes ``(b, s')`` and their cumulative probabilities lie in one flat
    array (CSR order, :func:`walk_tables`), so a step is one bisection on Python floats
    (~0.5 µs, versus ~20 µs of numpy call overhead per step for a one-stream numpy loop).
    Rewards, flags and bookkeeping are then filled in vectorised. Wider batches (more than
    :data:`WALK_MAX_ENVS` streams) step all streams together in numpy
    (:func:`stacked_tabular_walk` with one run): the same draws (:func:`walk_draws`) and the
    same comparisons, so the same batch. Same law as :meth:`ConfigurableEnv.transition`
    (tested).
    """
    u_arr, starts_arr = walk_draws(problem, rng, steps, n_envs, initial_states)
    model = problem.tabular_model()
    if n_envs > _WALK_MAX_ENVS:
        return stacked_tabular_walk(problem, policy[None], model.r_follower[None],
                                    model.r_leader[None], steps, n_envs, u_arr[None],
                                    starts_arr[None], limit)
    tab = walk_tables(problem, policy)
    cum_l, base_l, mass_l = tab["cum"].tolist(), tab["base"].tolist(), tab["mass"].tolist()
    lo_l, hi_l = tab["lo"].tolist(), tab["hi"].tolist()
    action_l, next_l = tab["action"].tolist(), tab["next"].tolist()
    terminal = model.terminal.tolist()
    n = steps * n_envs
    u, starts = u_arr.tolist(), starts_arr.tolist()
    s_out, b_out, s2_out, t_out = [0] * n, [0] * n, [0] * n, [0] * n
    k, n_starts = 0, n_envs
    for env in range(n_envs):
        s, t = starts[env], 0
        for _ in range(steps):
            j = bisect_left(cum_l, base_l[s] + u[k] * mass_l[s], lo_l[s], hi_l[s])
            s_out[k], b_out[k], s2_out[k], t_out[k] = s, action_l[j], next_l[j], t
            k += 1
            if terminal[s] or t + 1 >= limit:
                s, t = starts[n_starts], 0
                n_starts += 1
            else:
                s, t = next_l[j], t + 1
    return walk_batch(model.terminal, model.r_follower, model.r_leader, np.asarray(s_out),
                      np.asarray(b_out), np.asarray(s2_out), np.asarray(t_out), n_envs, steps,
                      limit, np.repeat(np.arange(n_envs), steps))


def stacked_tabular_walk(problem, policy: np.ndarray, r_follower: np.ndarray,
                         r_leader: np.ndarray, steps: int, n_envs: int, uniforms: np.ndarray,
                         starts: np.ndarray, limit: int) -> Batch:
    """:func:`_tabular_walk` for N runs at once, from each run's own draws.

    Args:
        problem: the tabular problem (its structure; θ enters through the tables).
        policy: ``(N, S, B)`` follower policies.
        r_follower, r_leader: ``(N, S, B)`` reward tables.
        steps, n_envs, limit: the layout of every run's batch (as in ``rollout``).
        uniforms: ``(N, steps·n_envs)``: each run's ``rng.random(n)``.
        starts: ``(N, steps·n_envs + n_envs)``: each run's start states, as the single walk
            uses them (the first ``n_envs`` for the first episodes, then restarts in order).
    Returns:
        The N batches one after the other (run-major, then stream-major), states numbered
        ``run·S + s`` (so that every-visit keys never mix runs); each run's part is, bit for
        bit, what the single walk draws from the same uniforms and starts: the bisection is
        vectorised across streams and runs (the same comparisons). When every restart of a run
        starts in the same state (one start state, the usual case) all streams step together;
        otherwise the streams of each run are walked one after the other (restarts consume
        the start list in the single walk's order).
    """
    n_runs, S = policy.shape[0], policy.shape[1]
    terminal = problem.tabular_model().terminal
    restarts = starts[:, n_envs:]
    if bool(np.all(restarts == restarts[:, :1])):
        return _stacked_walk_together(problem, policy, terminal, r_follower, r_leader, steps,
                                      n_envs, uniforms, starts, limit)
    tab = walk_tables(problem, policy)
    nnz = tab["cum"].shape[-1]
    cum = tab["cum"].ravel()
    base, mass = tab["base"].ravel(), tab["mass"].ravel()
    lo_s, hi_s, action, nxt = tab["lo"], tab["hi"], tab["action"], tab["next"]
    width = int((hi_s - lo_s).max())
    window = np.arange(max(width, 1))
    # restarts differ within a run: each stream in turn, restarts consumed in the single order
    out = np.zeros((4, n_runs, n_envs, steps), dtype=np.int64)  # s, b, s', t
    n_used = np.full(n_runs, n_envs)
    runs = np.arange(n_runs)
    for envs in (np.array([e]) for e in range(n_envs)):
        shape = (n_runs, envs.size)
        r = np.repeat(runs, envs.size)
        s = starts[:, envs].ravel().astype(np.int64)
        t = np.zeros(s.size, dtype=np.int64)
        u = uniforms.reshape(n_runs, n_envs, steps)[:, envs]
        for i in range(steps):
            rs = r * S + s
            x = base[rs] + u[:, :, i].ravel() * mass[rs]
            # bisect_left(cum, x, lo, hi) of every stream at once: cum is non-decreasing on
            # [lo, hi), so the first entry >= x is lo + the number of entries < x there
            lo, hi = lo_s[s], hi_s[s]
            idx = lo[:, None] + window
            below = (cum[(r * nnz)[:, None] + np.minimum(idx, nnz - 1)] < x[:, None]) \
                & (idx < hi[:, None])
            j = lo + below.sum(axis=1)
            for row, val in zip(out, (s, action[j], nxt[j], t)):
                row[:, envs, i] = val.reshape(shape)
            done = terminal[s] | (t + 1 >= limit)
            fresh = starts[runs, np.minimum(n_used, starts.shape[1] - 1)]
            n_used += done
            s = np.where(done, fresh, nxt[j])
            t = np.where(done, 0, t + 1)
    return _stacked_walk_batch(out[0], out[1], out[2], out[3], terminal, r_follower, r_leader,
                               steps, n_envs, limit)


def _stacked_walk_batch(s, b, s2, t, terminal, r_follower, r_leader, steps, n_envs, limit):
    """The stacked walk's :class:`Batch` from ``(N, n_envs, steps)`` states, actions, next
    states and times (states numbered ``run·S + s``)."""
    n_runs, S = r_follower.shape[0], r_follower.shape[1]
    offset = (np.arange(n_runs) * S)[:, None, None]
    s_arr, s2_arr = (s + offset).ravel(), (s2 + offset).ravel()
    return walk_batch(np.tile(terminal, n_runs), r_follower.reshape(n_runs * S, -1),
                      r_leader.reshape(n_runs * S, -1), s_arr, b.ravel(), s2_arr, t.ravel(),
                      n_runs * n_envs, steps, limit,
                      np.tile(np.repeat(np.arange(n_envs), steps), n_runs))


def _stacked_walk_together(problem, policy, terminal, r_follower, r_leader, steps, n_envs,
                           uniforms, starts, limit) -> Batch:
    """The stacked walk when every restart of a run is in one state: all streams step
    together, a handful of numpy calls per step.

    Per run and state, one row holds ``base``, ``mass`` and the cumulative probabilities of the
    state's outcomes but the last, then ``+inf``: the single walk's
    ``bisect_left(cum, base + u·mass, lo, hi)`` is ``lo`` plus the first position in the row
    whose value is ``>= x`` (the entries are non-decreasing: the same comparisons). A terminal
    state's outcomes lead to the run's restart; actions, next states and times are read off
    the outcomes afterwards.
    """
    n_runs, S, B = policy.shape
    # walk_tables' numbers (the same products and the same sequential cumulative sum per run)
    # in one array per run: 0, cum, +inf
    P = problem.sampling_transitions()
    nnz = P.nnz
    row_of_entry = np.repeat(np.arange(S * B), np.diff(P.indptr))
    ext = np.empty((n_runs, nnz + 2))
    ext[:, 0], ext[:, -1] = 0.0, np.inf
    cum = ext[:, 1:-1]
    np.multiply(policy.reshape(n_runs, S * B)[:, row_of_entry], P.data, out=cum)
    np.cumsum(cum, axis=1, out=cum)
    lo = P.indptr[np.arange(S) * B]
    hi = P.indptr[np.arange(S) * B + B] - 1
    width = int((hi - lo).max()) + 1
    w = np.arange(width)
    pad = np.where(w < (hi - lo)[:, None], lo[:, None] + w + 1, nnz + 1)  # positions in ext
    rows = np.empty((n_runs, S, width + 2))
    base = ext[:, lo]  # cum before the state's first entry (0 for the first state)
    rows[:, :, 0] = base
    np.subtract(ext[:, hi + 1], base, out=rows[:, :, 1])  # mass
    rows[:, :, 2:] = ext[:, pad]
    rows = rows.reshape(n_runs * S, width + 2)
    action, nxt = row_of_entry % B, P.indices
    run_s = (np.arange(n_runs) * S)[:, None]
    # per run·S + s: the first outcome of s; per outcome: the next state (the run's restart
    # after a terminal state), as run·S + s' once offset
    first = np.tile(lo, n_runs)
    state_of = np.repeat(np.arange(S), np.diff(np.append(lo, nnz)))
    restart = starts[:, n_envs].astype(np.int64)
    shared = bool(np.all(restart == restart[0]))  # one restart state: one table for all
    if shared:
        follow = np.where(terminal[state_of], restart[0], nxt).astype(np.int64)
        offset = np.repeat(np.arange(n_runs) * S, n_envs)  # added to the next state
    else:
        follow = (np.where(terminal[state_of], restart[:, None], nxt) + run_s).ravel()
        offset = np.repeat(np.arange(n_runs) * nnz, n_envs)  # added to the outcome
    n = n_runs * n_envs
    u = np.ascontiguousarray(uniforms.reshape(n, steps).T)  # (steps, n)
    rs = (starts[:, :n_envs].astype(np.int64) + run_s).ravel()
    s_rec = np.empty((steps, n), dtype=np.int64)
    j_rec = np.empty((steps, n), dtype=np.int64)
    limited = steps > limit  # a stream can reach the time limit: track times in the loop
    if limited:
        terminal_rs = np.tile(terminal, n_runs)
        restart_rs = np.repeat(restart + run_s[:, 0], n_envs)
        t = np.zeros(n, dtype=np.int64)
        t_rec = np.empty((steps, n), dtype=np.int64)
    for i in range(steps):
        s_rec[i] = rs
        row = rows.take(rs, axis=0)
        x = row[:, 0] + u[i] * row[:, 1]
        j = first.take(rs) + (row[:, 2:] >= x[:, None]).argmax(axis=1)
        j_rec[i] = j
        if limited:  # as the single walk: a non-terminal state at time limit − 1 restarts
            t_rec[i] = t
            ended = terminal_rs.take(rs)
            cut = (t >= limit - 1) & ~ended
            t = np.where(ended | cut, 0, t + 1)
        rs = follow.take(j) + offset if shared else follow.take(j + offset)
        if limited:
            rs = np.where(cut, restart_rs, rs)
    s_loc = s_rec.T.reshape(n_runs, n_envs, steps) - run_s[:, :, None]
    j_loc = j_rec.T.reshape(n_runs, n_envs, steps)
    if limited:
        t = t_rec.T.reshape(n_runs, n_envs, steps)
    else:  # within-episode times: 0 at the stream's start and after each terminal state
        reset = np.ones(s_loc.shape, dtype=bool)
        reset[..., 1:] = terminal[s_loc[..., :-1]]
        idx = np.broadcast_to(np.arange(steps), s_loc.shape)
        t = idx - np.maximum.accumulate(np.where(reset, idx, 0), axis=-1)
    return _stacked_walk_batch(s_loc, action[j_loc].astype(np.int64),
                               nxt[j_loc].astype(np.int64), t, terminal, r_follower, r_leader,
                               steps, n_envs, limit)


def _batch_end(term: np.ndarray, trunc: np.ndarray, n_envs: int, steps: int) -> np.ndarray:
    """The last transition of each stream, unless the episode ended there anyway."""
    last = np.zeros((n_envs, steps), dtype=bool)
    last[:, -1] = True
    return last.reshape(-1) & ~(term | trunc)


def _rollout(problem, follower, steps, n_envs, rng, initial_states, limit) -> Batch:
    """Time-major loop, vectorised across the ``n_envs`` streams (the only loop is over time)."""
    states = (problem.sample_initial_states(n_envs, rng) if initial_states is None
              else initial_states)
    t = np.zeros(n_envs, dtype=np.int64)
    cols: dict[str, list] = {k: [] for k in ("s", "b", "rf", "rl", "s2", "term", "trunc", "t")}
    for _ in range(steps):
        actions = follower.act(states, rng)
        nxt, r_f, r_l, term = problem.transition(states, actions, rng)
        trunc = ~term & (t + 1 >= limit)
        for key, val in zip(cols, (states, actions, r_f, r_l, nxt, term, trunc, t)):
            cols[key].append(val)
        done = term | trunc
        if done.any():
            fresh = problem.sample_initial_states(n_envs, rng)
            states = np.where(done.reshape((-1,) + (1,) * (nxt.ndim - 1)), fresh, nxt)
            t = np.where(done, 0, t + 1)
        else:
            states, t = nxt, t + 1
    # (steps, n_envs, ...) -> env-major (n_envs*steps, ...)
    arr = {k: np.swapaxes(np.stack(v), 0, 1).reshape((n_envs * steps,) + np.shape(v[0])[1:])
           for k, v in cols.items()}
    batch_end = _batch_end(arr["term"], arr["trunc"], n_envs, steps)
    return Batch(
        obs=arr["s"], actions=arr["b"], r_follower=arr["rf"].astype(np.float64),
        r_leader=arr["rl"].astype(np.float64), next_obs=arr["s2"], terminated=arr["term"],
        truncated=arr["trunc"], batch_end=batch_end, time=arr["t"],
        env_id=np.repeat(np.arange(n_envs), steps),
    )
