"""The stacked walk of N runs (the batched engine's sampler) against the single walk: each run's
part of the batch, bit for bit, from the same draws, within and beyond the time limit."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.wrappers.best_response import _tabular_walk, stacked_tabular_walk

RUNS = 3


@pytest.mark.parametrize("steps, n_envs, limit", [
    (60, 2, 200),   # within the limit: every stream steps together
    (400, 1, 200),  # beyond the limit (a batch of 400 on Four-Rooms)
    (45, 3, 7),     # many truncations
    (200, 1, 200),  # exactly the limit
])
@pytest.mark.parametrize("env_kwargs", [{}, {"slip_prob": 0.44, "simulator_slip_prob": 1 / 3}])
def test_stacked_walk_is_the_single_walk_run_by_run(steps, n_envs, limit, env_kwargs):
    problem = gym.make("BiLevel/FourRooms-v0", **env_kwargs).unwrapped
    model = problem.tabular_model()
    S, B = model.n_states, model.n_actions
    rng = np.random.default_rng(0)
    policies = rng.dirichlet(np.full(B, 0.5), size=(RUNS, S))
    n = steps * n_envs
    uniforms, starts, single = [], [], []
    for run in range(RUNS):
        draws = np.random.default_rng(run)  # the single walk's order: uniforms, then starts
        uniforms.append(draws.random(n))
        starts.append(problem.sample_initial_states(n + n_envs, draws))
        single.append(_tabular_walk(problem, policies[run], steps, n_envs,
                                    np.random.default_rng(run), None, limit))
    rewards = [np.broadcast_to(r, (RUNS, S, B)) for r in (model.r_follower, model.r_leader)]
    stacked = stacked_tabular_walk(problem, policies, *rewards, steps, n_envs,
                                   np.stack(uniforms), np.stack(starts), limit)
    assert int(stacked.truncated.sum()) > 0 or steps < limit
    for run, ref in enumerate(single):
        part = slice(run * n, (run + 1) * n)
        for field in ref._fields:
            got = getattr(stacked, field)[part]
            want = getattr(ref, field)
            if field in ("obs", "next_obs"):
                want = want + run * S
            assert np.array_equal(got, want), field


@pytest.mark.parametrize("env_kwargs", [{}, {"slip_prob": 0.44, "simulator_slip_prob": 1 / 3}])
def test_wide_rollouts_are_the_scalar_walk(env_kwargs, monkeypatch):
    """Beyond WALK_MAX_ENVS streams the walk steps in numpy: the same draws and the same batch
    as the scalar walk (the threshold is speed only)."""
    import importlib

    from bilevel_envs.wrappers.best_response import WALK_MAX_ENVS, BestResponse

    best_response = importlib.import_module("bilevel_envs.wrappers.best_response")

    br = BestResponse(gym.make("BiLevel/FourRooms-v0", **env_kwargs), beta=0.003)
    br.set_config(np.random.default_rng(1).uniform(0, 1, br.config_space.shape))
    n_envs = WALK_MAX_ENVS + 4
    starts = np.random.default_rng(2).integers(0, br.problem.tabular_model().n_states, n_envs)
    wide = br.rollout(n_envs * 30, n_envs=n_envs, seed=5, initial_states=starts)
    monkeypatch.setattr(best_response, "_WALK_MAX_ENVS", n_envs)  # the scalar walk
    scalar = br.rollout(n_envs * 30, n_envs=n_envs, seed=5, initial_states=starts)
    assert int(scalar.terminated.sum()) > 0
    for field in scalar._fields:
        assert np.array_equal(getattr(wide, field), getattr(scalar, field)), field
