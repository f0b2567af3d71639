"""Critics: hand-computed SARSA updates, and convergence to the exact leader Q."""

import gymnasium as gym
import numpy as np
import pytest

from bilevel_agents.critics import ExactCritic, MonteCarloCritic, SarsaCritic
from bilevel_agents.exact import leader_values
from bilevel_envs.core import Batch
from bilevel_envs.wrappers import BestResponse


class _Follower:
    policy = np.array([[0.25, 0.75], [0.5, 0.5]])


def _two_step_batch():
    # episode: (s=0, b=1, r=1) -> (s=1, b=0, r=2) -> ends (terminated)
    f = np.array([False, False])
    return Batch(obs=np.array([0, 1]), actions=np.array([1, 0]), r_follower=np.zeros(2),
                 r_leader=np.array([1.0, 2.0]), next_obs=np.array([1, 1]), terminated=np.array([False, True]),
                 truncated=f, batch_end=f, time=np.array([0, 1]), env_id=np.zeros(2, int))


@pytest.mark.parametrize("expected", [False, True])
def test_sarsa_one_pass_matches_hand_computation(expected):
    critic = SarsaCritic(2, 2, alpha=0.5, gamma=0.9, init_std=0.0,
                         rng=np.random.default_rng(0), expected=expected)
    critic.table = np.array([[0.0, 1.0], [4.0, 8.0]])
    order = np.random.default_rng(0).permutation(2)  # the critic's own pass order
    q = critic.table.copy()
    for k in order:
        if k == 0:
            boot = (_Follower.policy[1] @ q[1]) if expected else q[1, 0]
            q[0, 1] += 0.5 * (1.0 + 0.9 * boot - q[0, 1])
        else:
            q[1, 0] += 0.5 * (2.0 - q[1, 0])  # terminal: no bootstrap
    critic.update(_two_step_batch(), _Follower())
    np.testing.assert_allclose(critic.table, q)


def test_bad_sarsa_arguments():
    with pytest.raises(ValueError, match="alpha"):
        SarsaCritic(2, 2, alpha=0.0)
    with pytest.raises(ValueError, match="gamma"):
        SarsaCritic(2, 2, gamma=1.0)


def test_monte_carlo_critic_and_exact_critic_agree_in_expectation():
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    exact = ExactCritic(gamma=0.99)
    exact.update(None, br)
    q_exact, v_exact = leader_values(br.problem.tabular_model(), br.policy, 0.99)
    np.testing.assert_allclose(exact.table, q_exact)
    mc = MonteCarloCritic(104, 4, gamma=0.99)
    mc.update(br.rollout(40_000, n_envs=8, seed=0), br)
    s0 = br.problem.start_state
    # V̂(S) from complete-ish episodes is close to V_L(S)
    assert mc.v(np.array([s0]), br)[0] == pytest.approx(v_exact[s0], abs=0.05)


def test_expected_sarsa_converges_to_exact_q_on_visited_states():
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    rng = np.random.default_rng(0)
    critic = SarsaCritic(104, 4, alpha=0.3, gamma=0.99, init_std=0.0, rng=rng, expected=True)
    for _ in range(40):
        critic.update(br.rollout(2000, n_envs=4, rng=rng), br)
    q_exact, v_exact = leader_values(br.problem.tabular_model(), br.policy, 0.99)
    s0 = br.problem.start_state
    assert critic.v(np.array([s0]), br)[0] == pytest.approx(v_exact[s0], abs=0.1)


def test_state_value_model_critic_is_the_one_step_model_backup_of_complete_segments():
    """``Q̂ = r_L + γ C V̂`` exactly, ``V̂`` from segments that end by termination or have at
    least ``horizon`` steps, and close to the exact ``V_L`` on well-visited states."""
    import gymnasium as gym

    from bilevel_agents import BCHG
    from bilevel_agents.critics import StateValueModelCritic
    from bilevel_agents.estimators.returns import discounted_reverse_sum
    from bilevel_agents.exact import leader_values
    from bilevel_envs.wrappers import BestResponse

    br = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0", n_grid=11, max_episode_steps=100),
                      beta=0.2)
    leader = BCHG(br, seed=0, batch_size=20000, n_envs=200, critic="model")
    critic = leader.critic
    assert isinstance(critic, StateValueModelCritic) and critic.horizon == 66  # 0.9^66 < 1e-3
    batch = leader.family.collect(leader)
    critic.update(batch, br)
    model = br.problem.tabular_model()
    np.testing.assert_allclose(critic.table, model.r_leader
                               + 0.9 * model.continuation_values(critic.state_values))
    ret = discounted_reverse_sum(batch.r_leader, 0.9, batch.episode_end)
    early = batch.time <= 100 - 66  # no terminals here: a kept visit has >= 66 steps left
    s0 = np.bincount(batch.obs[early]).argmax()
    assert critic.state_values[s0] == pytest.approx(ret[early & (batch.obs == s0)].mean())
    _, v_exact = leader_values(model, br.policy, 0.9)
    counts = np.bincount(batch.obs[early], minlength=len(v_exact))
    busy = counts > 500
    assert busy.sum() >= 3  # within 5 % (Monte Carlo noise; a return cut 20 steps short is 12 % low)
    np.testing.assert_allclose(critic.state_values[busy], v_exact[busy], rtol=0.05)
    # no complete segment: the states take the fill value, 0
    short = StateValueModelCritic(*critic.table.shape, gamma=0.9, horizon=1000)
    assert short.update(batch, br)["critic_states_seen"] == 0.0
    assert not np.any(short.state_values)
    with pytest.raises(ValueError, match="horizon"):
        StateValueModelCritic(4, 2, gamma=0.9, horizon=-1)
