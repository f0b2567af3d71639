"""Conformance checks for the problems of the suite (and for yours): the rules users rely on.

Gymnasium ships :func:`~gymnasium.utils.env_checker.check_env` and PettingZoo ships
``api_test``; a bi-level problem has a few more rules (θ through ``reset(options)``, a leader
reward in ``info``, an exact best response, pickling with its follower). These functions run
all of them, so a new problem gets the same tests as Four-Rooms with one line::

    from bilevel_envs.testing import check_configurable_env, check_game

    check_configurable_env("BiLevel/MyProblem-v0")        # a registered Gymnasium id
    check_game(my_game_v0)                                 # a PettingZoo module (env, parallel_env)

Each check raises ``AssertionError`` naming the rule that failed. :func:`registered_ids` lists
every Gymnasium id registered by ``bilevel_envs`` (the suite's own tests run over it).
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import warnings
from types import ModuleType, SimpleNamespace
from typing import Any, Callable

import gymnasium as gym
import numpy as np
from gymnasium.utils.env_checker import check_env

__all__ = ["check_configurable_env", "check_game", "registered_ids"]

#: check_env's one recommendation we do not follow: continuous problems keep physical units
#: (as Gymnasium's Pendulum does) instead of actions normalised to [-1, 1].
_ALLOWED_WARNINGS = (".*recommend using a symmetric and normalized",)


def registered_ids(prefix: str = "bilevel_envs.") -> list[str]:
    """Every Gymnasium id whose entry point lives in ``prefix`` (default: this package)."""
    return sorted(spec.id for spec in gym.registry.values()
                  if isinstance(spec.entry_point, str) and spec.entry_point.startswith(prefix))


def _trajectory(env: gym.Env, seed: int, n: int) -> list[tuple]:
    env.action_space.seed(seed)
    obs, _ = env.reset(seed=seed)
    out: list[tuple] = [(obs, None, None, None)]
    for _ in range(n):
        obs, r, term, trunc, info = env.step(env.action_space.sample())
        out.append((obs, r, term or trunc, info.get("leader_reward")))
        if term or trunc:
            obs, _ = env.reset()
            out.append((obs, None, None, None))
    return out


def _same(a: list[tuple], b: list[tuple]) -> bool:
    if len(a) != len(b):
        return False
    return all(np.array_equal(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
               if x is not None else y is None
               for sa, sb in zip(a, b) for x, y in zip(sa, sb))


def check_configurable_env(env_id: str, *, beta: float | None = None, steps: int = 200,
                           **kwargs: Any) -> None:
    """Run every conformance rule of a configurable MDP registered as ``env_id``.

    Rules: Gymnasium's ``check_env`` with no warning (but the allowed one); the spec
    round-trips through JSON; seeded rollouts repeat and differ across seeds; rewards are
    Python floats and ``info["leader_reward"]`` is a float; θ set through
    ``reset(options={"config": θ})`` is the env's config; a pickled env continues identically;
    every declared render mode renders; ``gym.make_vec`` works in both modes; with ``beta``,
    the follower's best response (``BestResponse``) solves, pickles, and rolls out.

    Args:
        env_id: a registered Gymnasium id.
        beta: a follower temperature to test the best response at (``None`` = skip).
        steps: length of the determinism rollouts.
        **kwargs: env kwargs passed to ``gym.make``.
    """
    base = gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pattern in _ALLOWED_WARNINGS:
            warnings.filterwarnings("ignore", message=pattern)
        check_env(base, skip_render_check=True)

    env = gym.make(env_id, **kwargs)
    text = env.spec.to_json()
    assert gym.envs.registration.EnvSpec.from_json(text) == env.spec, "spec JSON round trip"
    assert json.loads(text)["id"] == env_id

    a = _trajectory(gym.make(env_id, **kwargs), 3, steps)
    b = _trajectory(gym.make(env_id, **kwargs), 3, steps)
    c = _trajectory(gym.make(env_id, **kwargs), 4, steps)
    assert _same(a, b), "the same seed must give the same rollout"
    assert not _same(a, c), "different seeds must give different rollouts"
    for _, r, _, r_leader in a[1:]:
        if r is not None:
            assert type(r) is float and type(r_leader) is float, "rewards must be Python floats"

    problem = env.unwrapped
    theta = np.clip(np.random.default_rng(0).normal(0.0, 0.5, problem.config_space.shape),
                    problem.config_space.low, problem.config_space.high)
    env.reset(seed=0, options={"config": theta})
    np.testing.assert_array_equal(problem.config, theta, err_msg="reset(options) sets θ")

    env.action_space.seed(0)
    for _ in range(5):
        env.step(env.action_space.sample())
    clone = pickle.loads(pickle.dumps(env))
    for _ in range(20):
        action = env.action_space.sample()
        o1, r1, t1, u1, i1 = env.step(action)
        o2, r2, t2, u2, i2 = clone.step(action)
        assert np.array_equal(o1, o2) and r1 == r2 and (t1, u1) == (t2, u2) and i1 == i2, \
            "a pickled env continues identically"
        if t1 or u1:
            break

    for mode in problem.metadata.get("render_modes", []):
        if mode == "human":
            continue
        shown = gym.make(env_id, render_mode=mode, **kwargs)
        shown.reset(seed=0)
        shown.step(shown.action_space.sample())
        frame = shown.render()
        assert frame is not None, f"render_mode={mode!r} renders"
        if mode == "rgb_array":
            assert np.asarray(frame).ndim == 3 and np.asarray(frame).shape[2] == 3

    for mode in ("sync", "async"):
        envs = gym.make_vec(env_id, num_envs=2, vectorization_mode=mode, **kwargs)
        envs.reset(seed=0)
        _, rewards, *_ = envs.step(envs.action_space.sample())
        assert np.shape(rewards) == (2,)
        envs.close()

    if beta is not None:
        from bilevel_envs.wrappers import BestResponse

        br = BestResponse(gym.make(env_id, **kwargs), beta=beta)
        br.set_config(theta)
        batch = br.rollout(2 * steps, n_envs=2, seed=0)
        assert len(batch) == 2 * steps and np.all(np.isfinite(batch.r_leader))
        clone_br = pickle.loads(pickle.dumps(br))
        again = clone_br.rollout(2 * steps, n_envs=2, seed=0)
        for x, y in zip(batch, again):
            np.testing.assert_array_equal(x, y, err_msg="a pickled best response rolls out "
                                                        "identically")


def check_game(module: ModuleType | Any, *, beta: float | None = None, cycles: int = 200,
               **kwargs: Any) -> None:
    """Run PettingZoo's conformance tests and the suite's own on a leader-follower game.

    Rules: ``api_test`` (AEC, and AEC converted back from the parallel form),
    ``parallel_api_test``, ``seed_test``, ``render_test`` (every declared render mode, "human"
    included; what it prints is swallowed), ``max_cycles_test`` (``max_cycles`` rounds in both
    forms: one parallel step is one round), a many-step determinism check (PettingZoo's own
    parallel seed test looks at one step only), and, with ``beta``, the leader-facing
    ``GameBestResponse`` passes Gymnasium's ``check_env`` and pickles.

    Args:
        module: a game module with ``env(**kwargs)`` and ``parallel_env(**kwargs)``.
        beta: a follower temperature to test the leader-facing env at (``None`` = skip).
        cycles: steps of the API tests.
        **kwargs: game kwargs.
    """
    from pettingzoo.test import (
        api_test,
        max_cycles_test,
        parallel_api_test,
        render_test,
        seed_test,
    )
    from pettingzoo.utils.conversions import parallel_to_aec

    make: Callable[..., Any] = module.env
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api_test(make(**kwargs), num_cycles=cycles)
        parallel_api_test(module.parallel_env(**kwargs), num_cycles=cycles)
        seed_test(lambda: make(**kwargs), num_cycles=cycles // 2)
        api_test(parallel_to_aec(module.parallel_env(**kwargs)), num_cycles=cycles // 2)
        with contextlib.redirect_stdout(io.StringIO()):  # "human" prints its frames
            render_test(lambda render_mode=None: make(**{**kwargs, "render_mode": render_mode}))
        max_cycles_test(SimpleNamespace(  # the module with the game kwargs bound
            env=lambda **kw: module.env(**{**kwargs, **kw}),
            parallel_env=lambda **kw: module.parallel_env(**{**kwargs, **kw})))

    def run() -> list:
        env = make(**kwargs)
        env.reset(seed=3)
        for agent in env.possible_agents:
            env.action_space(agent).seed(7)
        out = []
        for agent in env.agent_iter(max_iter=cycles):
            obs, rew, term, trunc, _ = env.last()
            out.append((agent, np.asarray(obs, dtype=float).tolist(), rew, term, trunc))
            env.step(None if term or trunc else env.action_space(agent).sample())
        return out

    assert run() == run(), "the same seed must give the same game"

    if beta is not None:
        from bilevel_envs.wrappers import GameBestResponse

        br = GameBestResponse(make(**kwargs), beta=beta)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            for pattern in _ALLOWED_WARNINGS + (".*Box.*infinity.*", ".*infinity.*Box.*"):
                warnings.filterwarnings("ignore", message=pattern)
            check_env(br, skip_render_check=True)
        batch = br.rollout(2, seed=0)
        again = pickle.loads(pickle.dumps(br)).rollout(2, seed=0)
        for x, y in zip(batch, again):
            np.testing.assert_array_equal(x, y, err_msg="a pickled game wrapper rolls out "
                                                        "identically")
