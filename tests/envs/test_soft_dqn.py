"""HPGD's factorised soft DQN follower: targets, factorised policy, learning, resume, specs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from scipy.special import logsumexp

import bilevel_envs  # noqa: F401
from bilevel_agents.checkpoint import load_checkpoint, save_checkpoint
from bilevel_envs.envs.tax_design import encode_actions
from bilevel_envs.followers import (
    SoftDQN,
    follower_optimality_gap,
    make_follower,
    parse_follower_spec,
)
from bilevel_envs.followers.soft_dqn import soft_dqn_targets
from bilevel_envs.wrappers import BestResponse

SMALL = dict(learning_starts=50, batch_size=32, target_update=100, n_envs=5)


def test_targets_are_each_heads_soft_bellman_backup():
    rng = np.random.default_rng(0)
    r = rng.normal(size=6)
    term = np.array([0, 1, 0, 0, 1, 0], bool)
    q = [rng.normal(size=(6, 3)), rng.normal(size=(6, 5))]
    got = soft_dqn_targets(torch.as_tensor(r), torch.as_tensor(term),
                           [torch.as_tensor(x) for x in q], 0.9, 0.2)
    for g, qi in zip(got, q):
        want = r + np.where(term, 0.0, 0.9 * 0.2 * logsumexp(qi / 0.2, axis=1))
        np.testing.assert_allclose(g.numpy(), want, rtol=1e-12)


def test_the_factorised_policy_is_the_product_of_the_heads_and_acts_by_it():
    env = gym.make("BiLevel/TaxDesignTabular-v0")
    fol = SoftDQN(0.2, 60, seed=1, **SMALL)
    BestResponse(env, beta=0.2, follower=fol)
    assert fol._heads == (10, 5, 5, 5)
    pi = fol.policy
    assert pi.shape == (env.unwrapped.n_states, 1250)
    np.testing.assert_allclose(pi.sum(axis=1), 1.0, rtol=1e-12)
    s = 7
    marginals = fol._probs(fol._features(np.array([s])))
    outer = np.einsum("a,b,c,d->abcd", *(m[0] for m in marginals))
    # float32 network: a batch of one row and of all rows round differently
    np.testing.assert_allclose(pi[s].reshape(10, 5, 5, 5), outer, rtol=1e-5)
    # act samples the joint index in encode_actions' order, from the caller's generator
    draws = fol.act(np.full(40_000, s), np.random.default_rng(2))
    idx = np.stack(np.unravel_index(draws, (10, 5, 5, 5)), axis=1)
    np.testing.assert_array_equal(encode_actions(idx), draws)
    freq = np.bincount(idx[:, 0], minlength=10) / len(draws)
    assert np.abs(freq - marginals[0][0]).max() < 0.015
    np.testing.assert_array_equal(draws, fol.act(np.full(40_000, s), np.random.default_rng(2)))


def test_it_learns_the_soft_best_response_on_four_rooms():
    """One head on a Discrete problem is soft Q-learning with a network: its policy's soft
    value comes within 1 % of the optimum (the uniform policy is 7 % away)."""
    env = gym.make("BiLevel/FourRooms-v0")
    beta = 0.1
    fol = SoftDQN(beta, 40_000, learning_starts=1000, batch_size=128, lr=1e-3,
                  target_update=500, epsilon_steps=20_000, seed=0)
    br = BestResponse(env, beta=beta, follower=fol)
    model, gamma = br.problem.tabular_model(), br.problem.gamma_follower
    gap = follower_optimality_gap(model, fol.policy, beta, gamma).relative_start
    uniform = np.full_like(fol.policy, 0.25)
    assert gap < 0.01 < follower_optimality_gap(model, uniform, beta, gamma).relative_start


def test_snapshots_resume_exactly_through_a_checkpoint(tmp_path):
    env = gym.make("BiLevel/TaxDesign-v0")
    fol = SoftDQN(0.1, 100, seed=3, **SMALL)
    br = BestResponse(env, beta=0.1, follower=fol)
    save_checkpoint(tmp_path / "f.npz", fol.state_dict())
    theta = br.problem.config + 0.1
    br.set_config(theta)
    states = br.problem.sample_initial_states(50, np.random.default_rng(0))
    first = fol.act(states, np.random.default_rng(4))
    loss, updates = fol.last_loss, fol.n_updates

    other = SoftDQN(0.1, 100, seed=99, **SMALL)
    br2 = BestResponse(gym.make("BiLevel/TaxDesign-v0"), beta=0.1, follower=other)
    other.load_state_dict(load_checkpoint(tmp_path / "f.npz"))
    br2.set_config(theta)
    np.testing.assert_array_equal(other.act(states, np.random.default_rng(4)), first)
    assert (other.last_loss, other.n_updates) == (loss, updates)
    for a, b in zip(fol.net.parameters(), other.net.parameters()):
        assert torch.equal(a, b)


def test_a_seed_fixes_every_layer_and_leaves_the_callers_torch_stream_alone():
    nets = []
    for _ in range(2):
        torch.manual_seed(123)
        before = torch.random.get_rng_state()
        fol = SoftDQN(0.1, 20, seed=5, **SMALL)
        BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.1, follower=fol)
        assert torch.equal(torch.random.get_rng_state(), before)
        nets.append([p.detach().clone() for p in fol.net.parameters()])
    assert len(nets[0]) == 2 * (SoftDQN(0.1).layers + 1)
    assert all(torch.equal(a, b) for a, b in zip(*nets))


def test_a_fresh_follower_restores_a_trained_snapshot(tmp_path):
    env = gym.make("BiLevel/TaxDesignTabular-v0")
    fol = SoftDQN(0.2, 60, seed=1, **SMALL)
    BestResponse(env, beta=0.2, follower=fol)
    save_checkpoint(tmp_path / "f.npz", fol.state_dict())
    fresh = SoftDQN(0.2, 60, seed=8, **SMALL)  # never solved: the snapshot builds its network
    fresh.load_state_dict(load_checkpoint(tmp_path / "f.npz"))
    np.testing.assert_array_equal(fresh.policy, fol.policy)
    states = np.arange(20)
    np.testing.assert_array_equal(fresh.act(states, np.random.default_rng(0)),
                                  fol.act(states, np.random.default_rng(0)))
    fresh.solve(env.unwrapped)
    fol.solve(env.unwrapped)
    np.testing.assert_array_equal(fresh.policy, fol.policy)


def test_continuous_economy_actions_and_black_box():
    env = gym.make("BiLevel/TaxDesign-v0")
    fol = make_follower("soft-dqn:steps=60,learning_starts=20,batch_size=16,publish=false",
                        env, 0.1, seed=0)
    br = BestResponse(env, beta=0.1, follower=fol)
    assert fol.policy is None and fol.policy_readout() is None and fol.soft_v is None
    b = fol.act(br.problem.sample_initial_states(8, np.random.default_rng(0)),
                np.random.default_rng(1))
    assert b.shape == (8, 4) and env.action_space.contains(b[0])
    assert fol.total_steps == 60 and fol.n_updates > 0
    assert str(parse_follower_spec("soft-dqn:steps=5")) == "soft-dqn:steps=5"


@pytest.mark.parametrize("kwargs, match", [
    (dict(lr=0.0), "lr must be"), (dict(n_envs=0), "n_envs must be"),
    (dict(epsilon_end=1.5), "epsilon_end must be"), (dict(publish="yes"), "publish must be"),
])
def test_bad_arguments_are_one_line_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SoftDQN(0.1, **kwargs)


def test_heads_must_factorise_the_action_space():
    env = gym.make("BiLevel/FourRooms-v0")
    with pytest.raises(ValueError, match="must multiply to the 4 actions"):
        BestResponse(env, beta=0.1, follower=SoftDQN(0.1, 10, heads=(3,), seed=0))
    with pytest.raises(ValueError, match="unknown soft-dqn option"):
        make_follower("soft-dqn:depth=3", env, 0.1)


def test_the_tax_example_measures_against_the_exact_best_response():
    """examples/tax_design/dqn_follower.py: the best-response column is the exact J (29.440 at
    the rates 0.3, docs/known_optima.md) and the DQN's is the exact J of its own policy."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples/tax_design/dqn_follower.py"
    spec = importlib.util.spec_from_file_location("dqn_follower", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    start = mod.config_from_rates([0.3] * 3, 0.3)
    (row,) = mod.measure([200], start, "factorised", 0)
    assert row["J_best_response"] == pytest.approx(29.440, abs=1e-3)
    assert row["transitions"] == 200 and row["follower_gap"] > 0
    assert row["J_dqn"] != pytest.approx(row["J_best_response"], abs=1.0)
