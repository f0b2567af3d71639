"""The tabular family's ``contexts`` option: HPGD's one context per outer iteration."""

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, HPGD, NaivePGD, SoBiRL
from bilevel_envs.wrappers import BestResponse


def contextual_br(beta=0.003):
    return BestResponse(gym.make("BiLevel/ContextualFourRooms-v0"), beta=beta)


@pytest.mark.parametrize("cls", [BCHG, HPGD, NaivePGD, SoBiRL])
def test_every_episode_of_an_iteration_is_in_the_drawn_context(cls):
    br = contextual_br()
    leader = cls(br, seed=0, batch_size=1000, n_envs=5, contexts="per_iteration")
    problem = br.problem
    drawn = []
    for _ in range(6):
        state = leader.rng.bit_generator.state
        batch = leader.family.collect(leader)
        rng = np.random.default_rng()
        rng.bit_generator.state = state
        k = int(rng.integers(2))  # the first draw of the iteration, from the leader's generator
        assert leader.family.last_context == k
        np.testing.assert_array_equal(np.unique(problem.state_context(batch.obs)), [k])
        assert batch.n_finished_episodes > 5  # restarts stay in the context too
        assert problem.context is None  # the mixture is restored
        drawn.append(k)
    assert set(drawn) == {0, 1}
    leader.update()
    assert leader.update()["context"] in (0.0, 1.0)
    assert leader.hparams()["contexts"] == "per_iteration"


def test_default_samples_the_mixture_and_keeps_its_identity():
    br = contextual_br()
    leader = BCHG(br, seed=0, batch_size=2000, n_envs=10)
    batch = leader.family.collect(leader)
    assert set(np.unique(br.problem.state_context(batch.obs))) == {0, 1}
    assert "context" not in leader.update()
    assert "contexts" not in leader.hparams()  # run folders of earlier releases keep their id
    assert leader.hparams()["partial"] == "mc"


def test_per_iteration_needs_several_contexts_and_a_valid_choice():
    single = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    with pytest.raises(ValueError, match="contextual problem"):
        BCHG(single, contexts="per_iteration")
    with pytest.raises(ValueError, match="contexts"):
        BCHG(contextual_br(), contexts="per_step")


def test_a_failing_rollout_restores_the_mixture(monkeypatch):
    br = contextual_br()
    leader = BCHG(br, seed=0, contexts="per_iteration")

    def boom(*args, **kwargs):
        raise RuntimeError("rollout failed")

    monkeypatch.setattr(br, "rollout", boom)
    with pytest.raises(RuntimeError, match="rollout failed"):
        leader.family.collect(leader)
    assert br.problem.context is None
