"""Markov games: PettingZoo conformance, dynamics, followers and the leader-facing wrapper."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from pettingzoo.test import api_test, parallel_api_test, seed_test
from pettingzoo.utils.conversions import parallel_to_aec

from bilevel_agents.exact.games import (
    toy_policy_from_p,
)
from bilevel_envs.followers.maxent_lqr_game import MaxEntLQRGameFollower, discounted_riccati
from bilevel_envs.followers.soft_q_iteration import SoftQIterationFollower, soft_q_backup
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.games.toy_logic import toy_model
from bilevel_envs.wrappers import GameBestResponse

GAMES = [toy_game_v0, lqr_game_v0]


# ============================================================================ PettingZoo
@pytest.mark.parametrize("mod", GAMES, ids=lambda m: m.__name__.split(".")[-1])
def test_pettingzoo_api(mod):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        api_test(mod.env(), num_cycles=300)
        parallel_api_test(mod.parallel_env(), num_cycles=300)
        seed_test(mod.env, num_cycles=100)
        api_test(parallel_to_aec(mod.parallel_env()), num_cycles=100)


@pytest.mark.parametrize("mod", GAMES, ids=lambda m: m.__name__.split(".")[-1])
def test_pettingzoo_determinism_many_steps(mod):
    def run():
        env = mod.env()
        env.reset(seed=3)
        for ag in env.possible_agents:
            env.action_space(ag).seed(7)
        out = []
        for agent in env.agent_iter(max_iter=2 * 60):
            obs, rew, term, trunc, _ = env.last()
            out.append((agent, np.array(obs, dtype=float).tolist(), rew, term, trunc))
            env.step(None if term or trunc else env.action_space(agent).sample())
        return out

    assert run() == run()


def test_toy_aec_round_and_rewards():
    env = toy_game_v0.env(reward=2)
    env.reset(seed=0)
    assert env.agent_selection == "leader" and int(env.observe("leader")) == 0
    env.step(0)  # leader in S
    assert env.observe("follower").tolist() == [0, 0]
    env.step(1)  # follower plays "a": leader +1, follower +1, S -> A
    assert env.rewards == {"leader": 1.0, "follower": 1.0}
    assert int(env.observe("leader")) == 1
    env.step(0)
    env.step(2)  # A, leader 0, follower "b": follower +R, -> B
    assert env.rewards == {"leader": 0.0, "follower": 2.0}
    assert int(env.observe("leader")) == 2
    assert isinstance(env.rewards["leader"], float)


def test_toy_model_tables():
    m = toy_model(2)
    assert m.P.shape == (3, 2, 3, 3) and np.allclose(m.P.sum(-1), 1)
    assert m.next_state[1, 1].tolist() == [0, 0, 0]  # A, leader 1: all to S
    assert m.next_state[1, 0].tolist() == [0, 1, 2]
    assert m.next_state[0, 0].tolist() == [0, 1, 2] and m.next_state[2, 1].tolist() == [0, 2, 2]
    assert m.r_follower[1, 0, 2] == 2 and toy_model(1).r_follower[1, 0, 2] == 1
    assert np.all(m.r_follower[1, 1] == -1) and m.r_leader.sum() == 2  # S·*·a only
    assert toy_game_v0.raw_env(reward=1).model.r_follower[1, 0, 2] == 1


@pytest.mark.parametrize("bad", [0, 3, 1.5, "2", True])
def test_toy_bad_reward(bad):
    with pytest.raises(ValueError, match="reward"):
        toy_game_v0.env(reward=bad)


def test_bad_actions():
    env = toy_game_v0.env()
    env.reset()
    for bad in (2, -1, 0.5, True):
        with pytest.raises(ValueError, match="leader"):
            env.step(bad)
    env = lqr_game_v0.env()
    env.reset()
    with pytest.raises(ValueError, match="leader"):
        env.step(np.array([np.nan]))
    with pytest.raises(ValueError, match="leader"):
        env.step(np.zeros(3))


def test_lqr_dynamics():
    g = lqr_game_v0.raw_env()
    p = g.params
    s, a, b = np.array([[1.0, -0.5]]), np.array([[0.3]]), np.array([[-0.2]])
    nxt, r_f, r_l = g.transition(s, a, b)
    assert np.allclose(nxt, s @ p.A.T + b @ p.B.T + a @ p.C.T)
    assert np.isclose(r_f[0], -(1.25 + 0.04))
    d = s[0] - np.array([-0.8, 0.0])
    assert np.isclose(r_l[0], np.exp(-0.5 * (25 * d[0] ** 2 + 1e4 * d[1] ** 2)))
    with pytest.raises(ValueError, match="gamma_follower"):
        lqr_game_v0.env(gamma_follower=1.0)


# ============================================================================ followers
@pytest.mark.parametrize("bootstrap", ["paper", "official"])
def test_soft_q_iteration_fixed_point(bootstrap):
    m = toy_model(2)
    f = toy_policy_from_p(0.45)
    pi = SoftQIterationFollower(0.05, 0.99, bootstrap=bootstrap, tol=1e-12)
    pi.solve(m, f)
    vi = SoftQIterationFollower(0.05, 0.99, bootstrap=bootstrap, method="value_iteration",
                                tol=1e-12)
    vi.solve(m, f)
    assert pi.converged and pi.iterations < 30
    assert np.abs(pi.soft_q - vi.soft_q).max() < 1e-8
    resid = soft_q_backup(pi.soft_q, f, m.r_follower, m.P, 0.99, 0.05, bootstrap) - pi.soft_q
    assert np.abs(resid).max() < 1e-8
    assert np.allclose(pi.policy.sum(-1), 1) and pi.soft_v.shape == (3, 2)


def test_official_form_reproduces_paper_follower():
    fol = SoftQIterationFollower(0.05, 0.99, bootstrap="official")
    fol.solve(toy_model(2), toy_policy_from_p(0.4))
    assert np.allclose(fol.policy[0, 0], [0.0, 0.473, 0.527], atol=2e-3)


def test_soft_q_iteration_warm_start_k_step_and_bad_input():
    m = toy_model(2)
    fol = SoftQIterationFollower(0.05, 0.99, method="value_iteration", tol=1e-10)
    fol.solve(m, toy_policy_from_p(0.5))
    cold = fol.iterations
    fol.solve(m, toy_policy_from_p(0.51))
    assert fol.iterations < cold
    one = SoftQIterationFollower(0.05, 0.99, method="value_iteration", max_iterations=1)
    one.solve(m, toy_policy_from_p(0.5))
    # one backup from Q = 0: r_F + γ β log 3 (the uniform policy's entropy bonus)
    assert np.allclose(one.soft_q, m.r_follower + 0.99 * 0.05 * np.log(3)) and not one.converged
    for kw, name in (({"beta": 0.0}, "beta"), ({"beta": -1}, "beta"),
                     ({"beta": 0.1, "bootstrap": "x"}, "bootstrap"),
                     ({"beta": 0.1, "method": "x"}, "method")):
        with pytest.raises(ValueError, match=name):
            SoftQIterationFollower(**kw)
    with pytest.raises(ValueError, match="leader_policy"):
        fol.solve(m, np.ones((3, 2)))


def test_sampled_follower_actions_follow_policy():
    fol = SoftQIterationFollower(0.5, 0.9)
    fol.solve(toy_model(2), toy_policy_from_p(0.5))
    obs = np.tile([[1, 0]], (40000, 1))
    freq = np.bincount(fol.act(obs, np.random.default_rng(0)), minlength=3) / 40000
    assert np.allclose(freq, fol.policy[1, 0], atol=0.01)


def test_maxent_lqr_game_follower_closed_form():
    g = lqr_game_v0.raw_env()
    p = g.params
    K = np.array([[-0.7, 0.4]])
    fol = MaxEntLQRGameFollower(beta=0.1, gamma=0.95)
    fol.solve(g, (K, 1e-3))
    # Riccati iteration (eq. 110) reaches the DARE solution
    A2 = p.A + p.C @ K
    P = p.Qbar.copy()
    for _ in range(2000):
        S = p.Rbar + 0.95 * p.B.T @ P @ p.B
        P = p.Qbar + 0.95 * A2.T @ P @ A2 - 0.95 ** 2 * A2.T @ P @ p.B @ np.linalg.solve(
            S, p.B.T @ P @ A2)
    assert np.allclose(P, fol.P, atol=1e-9)
    rng = np.random.default_rng(0)
    s, a = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    mu, cov = fol.policy(s, a)
    # eq. 77: mean −γ S⁻¹BᵀP(As + Ca)
    assert np.allclose(mu, -(0.95 * np.linalg.solve(fol.S, p.B.T @ fol.P) @ (
        s @ p.A.T + a @ p.C.T).T).T)
    # soft Bellman identity V = β log ∫ exp(Q/β) db for the Gaussian-quadratic Q (eq. 89)
    v_from_q = fol.soft_q(s, a, mu) + 0.05 * np.log(np.pi * 0.1) - 0.05 * np.log(
        np.linalg.det(fol.S))
    assert np.allclose(fol.soft_v(s, a), v_from_q)
    assert np.allclose(fol.soft_q(s, a, mu + 0.3) - fol.soft_q(s, a, mu), -fol.S[0, 0] * 0.09)
    # Q is r_F + γ E V(s', a') — check the expectation over a' by sampling
    b = mu + 0.1
    nxt = s @ p.A.T + b @ p.B.T + a @ p.C.T
    eps = rng.standard_normal(4000)
    ev = np.mean([fol.soft_v(nxt, nxt @ K.T + 1e-3 * e) for e in eps], axis=0)
    r_f = -((s ** 2).sum(1) + b[:, 0] ** 2)
    assert np.allclose(fol.soft_q(s, a, b), r_f + 0.95 * ev, atol=1e-5)


def test_lqr_not_stabilisable_and_bad_beta():
    g = lqr_game_v0.raw_env()
    with pytest.raises(ValueError, match="stabilisable"):
        MaxEntLQRGameFollower(0.1).solve(g, np.array([[-30.0, -10.0]]))
    with pytest.raises(ValueError, match="beta"):
        MaxEntLQRGameFollower(0.0)
    with pytest.raises(ValueError, match="stabilisable"):
        discounted_riccati(np.array([[2.0]]), np.array([[0.0]]), np.eye(1), np.eye(1), 0.99)


# ============================================================================ wrapper
@pytest.mark.parametrize("mod,beta", [(toy_game_v0, 0.05), (lqr_game_v0, 0.1)])
def test_game_best_response_env(mod, beta):
    br = GameBestResponse(mod.env(), beta=beta)
    assert isinstance(br, GameBestResponse)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(br, skip_render_check=True)
    obs, _ = br.reset(seed=0)
    _, r, term, trunc, info = br.step(br.action_space.sample())
    assert set(info) == {"follower_action", "follower_reward", "follower_value"}
    assert isinstance(r, float) and not term and not trunc
    b1 = br.rollout(3, seed=5)
    b2 = br.rollout(3, seed=5)
    assert all(np.array_equal(x, y) for x, y in zip(b1, b2))
    assert b1.r_leader.shape == (3, br.max_episode_steps)
    theta = np.random.default_rng(1).normal(size=br.config_space.shape) * 0.3
    br.set_config(theta)
    assert np.allclose(br.config, theta)
    with pytest.raises(ValueError):
        br.set_config(np.zeros(7))
    with pytest.raises(ValueError, match="beta"):
        GameBestResponse(mod.env(), beta=-1.0)


def test_game_best_response_truncates_and_values():
    br = GameBestResponse(toy_game_v0.parallel_env(reward=1), beta=0.05)
    obs, _ = br.reset(seed=0)
    for t in range(150):
        nxt, _, _, trunc, info = br.step(0)
        assert trunc == (t == 149)
        assert np.isclose(info["follower_value"], br.soft_v[int(obs), 0])
        obs = nxt
    b = br.rollout(2, seed=0)
    assert np.allclose(b.follower_value, br.soft_v[b.obs, b.leader_actions])


def test_leader_score_matches_finite_differences():
    for mod, beta in ((toy_game_v0, 0.05), (lqr_game_v0, 0.1)):
        br = GameBestResponse(mod.env(), beta=beta)
        br.set_config(np.random.default_rng(0).normal(size=br.config_space.shape) * 0.4)
        b = br.rollout(2, seed=0, horizon=4)
        sc = br.leader_score(b.obs, b.leader_actions)
        th = br.config

        def logf(t):
            if mod is toy_game_v0:
                f = br.theta_to_policy(t)
                return np.log(f[b.obs, b.leader_actions])
            K = t.reshape(1, 2)
            r = b.leader_actions[..., 0] - (b.obs @ K.T)[..., 0]
            return -0.5 * r ** 2 / 1e-6

        eps = 1e-6
        fd = np.stack([(logf(th + eps * e) - logf(th - eps * e)) / (2 * eps)
                       for e in np.eye(th.size)], -1)
        assert np.allclose(fd, sc, rtol=1e-5, atol=1e-4 * np.abs(sc).max())




def test_bad_leader_policies_and_temperatures_raise():
    with pytest.raises(ValueError, match="non-singular"):
        GameBestResponse(lqr_game_v0.env(), beta=0.1, leader_policy=(np.zeros((1, 2)), 0.0))
    with pytest.raises(ValueError, match="not finite at beta=1e-300"):
        GameBestResponse(toy_game_v0.env(), beta=1e-300)
    br = GameBestResponse(toy_game_v0.env(), beta=0.05)
    with pytest.raises(ValueError, match="must be real"):
        br.set_config(np.zeros(6) + 1j)
