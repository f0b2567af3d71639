"""Renders (the building's ``rgb_array``, the games' ``ansi`` and ``human``) and the games'
parallel form: one parallel step is one full round (``check_game`` runs PettingZoo's
``render_test`` and ``max_cycles_test`` on both games, ``test_conformance.py``)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.wrappers import GameBestResponse

BUILDING = "BiLevel/BuildingThermal-v0"


def test_building_renders_the_episode_so_far():
    env = gym.make(BUILDING, render_mode="rgb_array")
    meta = env.unwrapped.metadata
    assert meta["render_modes"] == ["rgb_array"] and meta["render_fps"] > 0
    env.reset(seed=0)
    first = env.render()
    assert first.shape == (480, 640, 3) and first.dtype == np.uint8
    env.action_space.seed(0)
    for _ in range(10):
        env.step(env.action_space.sample())
    later = env.render()
    assert later.shape == first.shape and not np.array_equal(first, later)
    trace = env.unwrapped
    assert len(trace._trace_states) == 11 and len(trace._trace_actions) == 10
    env.reset(seed=1)  # a new episode starts a new trace
    assert len(trace._trace_states) == 1 and not trace._trace_actions
    quiet = gym.make(BUILDING)
    quiet.reset(seed=0)
    assert quiet.render() is None
    with pytest.raises(ValueError, match="render_mode"):
        BuildingThermalEnv(render_mode="ansi")


def test_building_passes_check_env_with_its_render():
    env = gym.make(BUILDING, render_mode="rgb_array", disable_env_checker=True).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.filterwarnings("ignore", message=".*recommend using a symmetric and normalized")
        check_env(env)  # the render check included


def test_game_frames(capsys):
    game = toy_game_v0.env(reward=2, render_mode="ansi")
    game.reset(seed=0)
    frame = game.render()
    assert "round 0 of 150" in frame and "leader to move" in frame and "[S]" in frame
    game.step(0)
    frame = game.render()
    assert "follower to move" in frame and "the leader played a = +0" in frame
    game.step(1)  # the follower plays "a" in S: the state moves to A, both are paid
    frame = game.render()
    assert "round 1 of 150" in frame and "[A]" in frame
    assert "leader played 0, follower played a (r_L = +1, r_F = +1)" in frame

    lqr = lqr_game_v0.env(render_mode="ansi")
    lqr.reset(seed=0)
    text = lqr.render()
    assert "state s = (+1.0000, +0.0000)" in text and "target s* = (-0.8000, +0.0000)" in text
    assert "@" in text and "T" in text

    human = lqr_game_v0.env(render_mode="human")
    human.reset(seed=0)
    capsys.readouterr()
    assert human.render() is None
    assert "lqr_game_v0 — round 0 of 100" in capsys.readouterr().out
    quiet = lqr_game_v0.env()
    quiet.reset(seed=0)
    assert quiet.render() is None


@pytest.mark.parametrize("module", [toy_game_v0, lqr_game_v0], ids=lambda m: m.__name__)
def test_one_parallel_step_is_one_round(module):
    par = module.parallel_env(max_cycles=5)
    aec = module.env(max_cycles=5)
    obs, _ = par.reset(seed=3)
    aec.reset(seed=3)
    rng = np.random.default_rng(0)
    spaces = {ag: par.action_space(ag) for ag in par.possible_agents}
    steps = 0
    while par.agents:
        acts = {}
        for ag in par.possible_agents:
            spaces[ag].seed(int(rng.integers(1 << 30)))
            acts[ag] = spaces[ag].sample()
        obs, rewards, _, truncations, _ = par.step(acts)
        for ag in ("leader", "follower"):  # the same round, played in the AEC game
            aec.step(acts[ag])
        steps += 1
        assert rewards == {ag: aec.rewards[ag] for ag in ("leader", "follower")}
        for ag in obs:  # (s', a of the round just played) for the follower, as in the AEC game
            np.testing.assert_array_equal(obs[ag], aec.observe(ag))
        assert par.unwrapped._cycle == steps
    assert steps == 5 and all(truncations.values())
    assert par.step({}) == ({}, {}, {}, {}, {})
    with pytest.raises(ValueError, match="needs the actions"):
        par.reset(seed=0)
        par.step({"leader": spaces["leader"].sample()})


def test_best_response_over_the_parallel_form():
    br = GameBestResponse(toy_game_v0.parallel_env(reward=2), beta=0.05)
    ref = GameBestResponse(toy_game_v0.env(reward=2), beta=0.05)
    np.testing.assert_allclose(br.policy, ref.policy)
