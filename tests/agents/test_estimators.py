"""Estimators (paper Theorem 1, Alg. 4, 6, 8): each against an exact value.

The surrogate-coefficient form is compared with the explicit per-transition vector form, and
the averages of the sample estimates with exact gradients from the tabular model.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, NaivePGD
from bilevel_agents.estimators import (
    Coefficients,
    benefit,
    discounted_forward_sum,
    discounted_reverse_sum,
    every_visit_mean,
    every_visit_spread,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_mc,
    surrogate_gradient,
)
from bilevel_agents.exact import hypergradient, leader_values
from bilevel_envs.wrappers import BestResponse


def _reference_reverse(x, gamma, end):
    y, carry = np.zeros_like(x), 0.0
    for k in range(len(x) - 1, -1, -1):
        carry = x[k] + (0.0 if end[k] else gamma * carry)
        y[k] = carry
    return y


@pytest.fixture(scope="module")
def br():
    return BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)


@pytest.mark.parametrize("length", [50, 2000])
def test_discounted_sums_match_reference_and_are_adjoint(length):
    rng = np.random.default_rng(0)
    end = rng.random(length) < (0.05 if length < 100 else 0.0005)
    end[-1] = True
    x, u = rng.normal(size=length), rng.normal(size=length)
    for gamma in (0.0, 0.9, 0.99):
        rev = discounted_reverse_sum(x, gamma, end)
        np.testing.assert_allclose(rev, _reference_reverse(x, gamma, end), rtol=1e-9, atol=1e-9)
        # Σ_k u_k Σ_{m≥k} γ^{m−k} x_m = Σ_m fwd(u)_m x_m
        np.testing.assert_allclose(u @ rev, discounted_forward_sum(u, gamma, end) @ x, rtol=1e-9)


@pytest.mark.parametrize("width", [(), (3,)])
def test_many_episode_sums_equal_lfilter_bit_for_bit(width, monkeypatch):
    """Batches of many episodes are summed one position at a time: the numbers of ``lfilter``."""
    from bilevel_agents.estimators import returns

    rng = np.random.default_rng(4)
    n = 20_000
    end = rng.random(n) < 0.03
    end[99::100] = True  # streams of 100 steps, as an oracle batch
    x = rng.normal(size=(n,) + width)
    assert returns.episode_positions(end)[0][-1] + 1 >= returns._MANY_EPISODES
    for gamma in (0.0, 0.5, 0.99, 1.0):
        fast = discounted_reverse_sum(x, gamma, end), discounted_forward_sum(x, gamma, end)
        with monkeypatch.context() as m:
            m.setattr(returns, "_MANY_EPISODES", n + 1)  # lfilter
            slow = discounted_reverse_sum(x, gamma, end), discounted_forward_sum(x, gamma, end)
        for a, b in zip(fast, slow):
            assert np.array_equal(a, b)
        np.testing.assert_allclose(fast[0][..., 0] if width else fast[0],
                                   _reference_reverse(x[..., 0] if width else x, gamma, end),
                                   rtol=1e-9, atol=1e-9)


def test_every_visit_spread_is_adjoint_of_mean():
    rng = np.random.default_rng(1)
    keys, x, w = rng.integers(0, 7, 60), rng.normal(size=60), rng.normal(size=60)
    assert w @ every_visit_mean(x, keys, 7) == pytest.approx(every_visit_spread(w, keys, 7) @ x)
    # averages computed on another batch (an oracle's)
    stat_keys, xs = rng.integers(0, 7, 90), rng.normal(size=90)
    sums = np.bincount(stat_keys, weights=xs, minlength=7)
    means = sums / np.maximum(np.bincount(stat_keys, minlength=7), 1)
    assert w @ means[keys] == pytest.approx(every_visit_spread(w, keys, 7, stat_keys) @ xs)


def test_benefit_has_zero_mean_under_the_follower(br):
    """B_L = Q_L − V_L with the exact leader values: E_{b~g} B_L(s, b) = 0 in every state."""
    model = br.problem.tabular_model()
    q_l, v_l = leader_values(model, br.policy, br.problem.gamma_leader)
    ben = benefit(q_l, v_l[:, None])
    np.testing.assert_allclose((br.policy * ben).sum(1), 0.0, atol=1e-12)
    assert np.abs(ben).max() > 1e-3  # not trivially zero


def test_coefficients_equal_explicit_per_transition_vectors(br):
    """Σ_j w_j ∇̂Q_F(s_j, b_j) built from per-transition gradient vectors (Alg. 6 literally)
    equals the one-pass surrogate."""
    problem = br.problem
    batch = br.rollout(300, n_envs=3, seed=3)
    theta = br.config
    th = torch.tensor(theta, requires_grad=True)
    jac = torch.autograd.functional.jacobian(lambda t: problem.tabular_rewards_torch(t)[0], th)
    grad_rf = jac.numpy()[batch.obs, batch.actions]  # (N, |θ|)
    w = np.random.default_rng(4).normal(size=len(batch))
    gf = problem.gamma_follower
    # explicit: G_F(k) = Σ_{m≥k} γ^{m−k} ∇r_F(m) within the episode; pool by (s, b)
    G = np.zeros_like(grad_rf)
    carry = np.zeros(grad_rf.shape[1])
    for k in range(len(batch) - 1, -1, -1):
        carry = grad_rf[k] + (0.0 if batch.episode_end[k] else gf * carry)
        G[k] = carry
    key = batch.obs * 4 + batch.actions
    explicit = np.zeros_like(theta)
    for j in range(len(batch)):
        explicit += w[j] * G[key == key[j]].mean(axis=0)
    coef = follower_q_grad_coefficients(batch, w, key, problem.n_states * 4, gf,
                                        np.zeros(len(batch)))
    np.testing.assert_allclose(surrogate_gradient(problem, theta, batch, coef), explicit,
                               rtol=1e-8, atol=1e-12)


def _exact_grad_q_follower(br):
    """∇θ Q_F(s, b) for all (s, b): (I − γ C Π_g)^{-1} ∂r_F/∂θ (implicit differentiation)."""
    problem = br.problem
    model = problem.tabular_model()
    S, B = br.policy.shape
    th = torch.tensor(br.config)
    jac = torch.autograd.functional.jacobian(lambda t: problem.tabular_rewards_torch(t)[0], th)
    J = jac.numpy().reshape(S * B, -1)
    C = model.cont.toarray()
    Pi = np.zeros((S, S * B))
    Pi[np.repeat(np.arange(S), B), np.arange(S * B)] = br.policy.ravel()
    return np.linalg.solve(np.eye(S * B) - problem.gamma_follower * C @ Pi, J).reshape(S, B, -1)


def test_follower_q_grad_estimate_is_unbiased(br):
    """The every-visit ∇̂Q_F at the start, weighted by episode starts, estimates ∇V_F(S)."""
    exact = _exact_grad_q_follower(br)
    s0 = br.problem.start_state
    target = br.policy[s0] @ exact[s0]
    ests = []
    for seed in range(10):
        batch = br.rollout(20_000, n_envs=8, seed=seed)
        starts = (batch.time == 0).astype(float)
        w = starts / starts.sum()
        key = batch.obs * 4 + batch.actions
        coef = follower_q_grad_coefficients(batch, w, key, 416, br.problem.gamma_follower,
                                            br.soft_v[batch.next_obs])
        ests.append(surrogate_gradient(br.problem, br.config, batch, coef))
    mean = np.mean(ests, axis=0)
    assert np.linalg.norm(mean - target) < 0.05 * np.linalg.norm(target)


def test_partial_derivative_mc_is_unbiased(br):
    """Alg. 8 l. 12–16 averages to Σ_{s,b} d_L(s) g(b|s) ∇r_L(s, b) (θ-independent dynamics)."""
    problem = br.problem
    model = problem.tabular_model()
    P_g = model.policy_transition(br.policy)
    d = model.solve_discounted(P_g, model.mu0, problem.gamma_leader, transpose=True)
    exact = problem.tabular_rewards_vjp(br.config, np.zeros((104, 4)), d[:, None] * br.policy)
    ests = [surrogate_gradient(problem, br.config, b,
                               partial_derivative_mc(b, b.obs, 104, problem.gamma_leader))
            for b in (br.rollout(20_000, n_envs=8, seed=s) for s in range(8))]
    assert np.linalg.norm(np.mean(ests, 0) - exact) < 0.05 * np.linalg.norm(exact)


def test_guiding_weights_discount_by_episode_time():
    from bilevel_envs.core import Batch

    t = np.array([0, 1, 2, 0, 1])
    z = np.zeros(5)
    batch = Batch(z, z, z, z, z, z.astype(bool), z.astype(bool), z.astype(bool), t, z)
    w = guiding_weights(batch, np.ones(5), beta=0.5, gamma_leader=0.9, normaliser=2.0)
    np.testing.assert_allclose(w, 0.9 ** t / (0.5 * 2.0))


@pytest.mark.parametrize("beta", [0.001, 0.005])
def test_theorem1_bchg_with_exact_critic_averages_to_exact_hypergradient(beta):
    """Proof of Theorem 1 in code: complete episodes + exact Q_L ⇒ E[BC-HG] = ∇J exactly."""
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=beta)
    theta0 = np.random.default_rng(1).normal(0.0, 1.0, 105)
    leader = BCHG(br, batch_size=20_000, n_envs=8, critic="exact", seed=0, theta0=theta0)
    exact = hypergradient(br)
    mean = np.mean([leader.estimate_gradient() for _ in range(12)], axis=0)
    cosine = mean @ exact / np.linalg.norm(mean) / np.linalg.norm(exact)
    assert cosine > 0.99
    assert np.linalg.norm(mean - exact) < 0.05 * np.linalg.norm(exact)


def test_naive_pgd_estimates_only_the_partial_derivative(br):
    leader = NaivePGD(br, batch_size=100, seed=0)
    batch = br.rollout(100, seed=5)
    direct = surrogate_gradient(br.problem, br.config, batch,
                                partial_derivative_mc(batch, batch.obs, 104, 0.99))
    np.testing.assert_allclose(leader.gradient_from_batch(batch), direct)


def test_coefficients_add():
    a = Coefficients(np.ones(2), np.zeros(2), np.ones(2))
    total = a + Coefficients.zeros(2) + a
    np.testing.assert_array_equal(total.follower_reward, [2, 2])
