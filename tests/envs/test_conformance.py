"""Every registered problem and every game passes the conformance checks users rely on
(:mod:`bilevel_envs.testing`: check_env, spec round trip, seeding, pickling, renders, vector
envs, PettingZoo's api/parallel/seed tests, the leader-facing wrappers)."""

from __future__ import annotations

import gymnasium as gym
import pytest

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.testing import check_configurable_env, check_game, registered_ids

IDS = registered_ids()


def test_every_problem_is_registered():
    assert {"BiLevel/FourRooms-v0", "BiLevel/ContextualFourRooms-v0",
            "BiLevel/BuildingThermal-v0", "BiLevel/TaxDesign-v0",
            "BiLevel/TaxDesignTabular-v0"} <= set(IDS)


@pytest.mark.parametrize("env_id", IDS)
def test_configurable_env_conformance(env_id):
    problem = gym.make(env_id, disable_env_checker=True).unwrapped
    # problems without an exact follower (tax design) are checked without a best response
    has_follower = type(problem).make_follower is not bilevel_envs.ConfigurableEnv.make_follower
    beta = problem.default_beta if has_follower and env_id != "BiLevel/TaxDesign-v0" else None
    check_configurable_env(env_id, beta=beta, steps=100)


@pytest.mark.parametrize("module", [toy_game_v0, lqr_game_v0], ids=lambda m: m.__name__)
def test_game_conformance(module):
    check_game(module, beta=module.raw_env().default_beta)
