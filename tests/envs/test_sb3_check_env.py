"""Stable-Baselines3's ``check_env`` passes on every best-response env: ``BestResponse`` over
each registered problem (the follower-facing env) and ``GameBestResponse`` over both games (the
leader-facing env; the LQR game's leader action Box is bounded for it)."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.testing import registered_ids
from bilevel_envs.wrappers import BestResponse, GameBestResponse

env_checker = pytest.importorskip("stable_baselines3.common.env_checker")

#: SB3's advice we do not follow: physical units for continuous actions, float64 spaces
ALLOWED = (".*symmetric and normalized Box action space", ".*dtype float64, we recommend")


class _ZeroFollower:
    """A follower of the protocol for a problem without an exact one (TaxDesign-v0)."""

    beta = 0.1

    def __init__(self, shape: tuple[int, ...]):
        self.shape = shape

    def solve(self, problem):
        pass

    def act(self, obs, rng):
        return np.zeros((len(obs),) + self.shape)


def _check(env) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for pattern in ALLOWED:
            warnings.filterwarnings("ignore", message=pattern)
        env_checker.check_env(env, warn=True)


@pytest.mark.parametrize("env_id", registered_ids())
def test_sb3_check_env_on_every_best_response(env_id):
    env = gym.make(env_id)
    problem = env.unwrapped
    if env_id == "BiLevel/TaxDesign-v0":  # no exact follower: the wrapper takes any follower
        br = BestResponse(env, beta=0.1, follower=_ZeroFollower(problem.action_space.shape))
    else:
        br = BestResponse(env, beta=problem.default_beta or 0.1)
    _check(br)


@pytest.mark.parametrize("module", [toy_game_v0, lqr_game_v0], ids=lambda m: m.__name__)
def test_sb3_check_env_on_both_games(module):
    br = GameBestResponse(module.env(), beta=module.raw_env().default_beta)
    _check(br)
    space = br.action_space
    if isinstance(space, gym.spaces.Box):
        assert np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))


def test_the_lqr_leader_box_is_declared_not_clipping():
    game = lqr_game_v0.raw_env()
    box = game.action_space("leader")
    assert np.all(box.low == -100.0) and np.all(box.high == 100.0)
    game.reset(seed=0)
    game.step(np.array([250.0]))  # outside the declared box: played as given
    assert game.observe("follower")[-1] == 250.0
    br = GameBestResponse(lqr_game_v0.env(leader_action_bound=5.0), beta=0.1)
    assert br.action_space.high[0] == 5.0
    br.reset(seed=0)
    br.step(np.array([7.5]))  # the wrapper does not clip either
    with pytest.raises(ValueError, match="leader_action_bound"):
        lqr_game_v0.raw_env(leader_action_bound=float("inf"))
