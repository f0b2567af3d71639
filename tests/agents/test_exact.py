"""Exact leader objective and hypergradient (the ground truth for every estimator)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents.exact import hypergradient, leader_objective, leader_values
from bilevel_envs.core import TabularConfigurableEnv
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/FourRooms-v0"

# docs/known_optima.md: (β, slip, J at init θ ~ N(0, 0.01²), J with no incentive)
KNOWN = [
    (0.001, 1 / 3, -0.804, 0.0001),
    (0.003, 1 / 3, -0.796, 0.0001),
    (0.005, 1 / 3, -0.761, 0.0017),
    (0.001, 0.44, -0.741, 0.0008),
    (0.003, 0.44, -0.726, 0.0015),
    (0.005, 0.44, -0.667, 0.0178),
]

NO_INCENTIVE = np.r_[np.full(104, -1e3), 1e3]  # all softmax mass on the unused slot 105


def make_br(beta, slip=1 / 3, **kwargs):
    return BestResponse(gym.make(ENV_ID, slip_prob=slip), beta=beta, **kwargs)


def init_theta(seed=0):
    return np.random.default_rng(seed).normal(0.0, 0.01, 105)


def diverting_theta(br, logit=6.0):
    """Near-uniform θ with extra mass on (3, 5), in front of the top corridor."""
    theta = init_theta()
    theta[br.problem.cell_index[3, 5]] = logit
    return theta


@pytest.mark.parametrize("beta, slip, j_init, j_none", KNOWN)
def test_leader_objective_matches_known_values(beta, slip, j_init, j_none):
    br = make_br(beta, slip)
    for seed in (0, 1):
        assert leader_objective(br, init_theta(seed)) == pytest.approx(j_init, abs=1e-3)
    # the table rounds to 4 decimals
    assert leader_objective(br, NO_INCENTIVE) == pytest.approx(j_none, abs=5.1e-5)


def test_leader_objective_against_dense_policy_evaluation():
    br = make_br(0.005, 0.44)
    theta = np.random.default_rng(3).normal(0, 1, 105)
    br.set_config(theta)
    model = br.problem.tabular_model()
    g, P = br.policy, model.P
    keep = (~model.terminal)[:, None, None]
    P_g = np.einsum("sb,sbt->st", g, P * keep)
    r_g = (g * model.r_leader).sum(axis=1)
    v = np.linalg.solve(np.eye(104) - 0.99 * P_g, r_g)
    assert leader_objective(br) == pytest.approx(v[br.problem.start_state], abs=1e-12)
    q_l, v_l = leader_values(model, g, 0.99)
    np.testing.assert_allclose(v_l, v, atol=1e-12)
    np.testing.assert_allclose(q_l, model.r_leader + 0.99 * (P * keep) @ v, atol=1e-12)


def _first_episode_returns(br, n_envs, steps, seed):
    """Discounted leader return of the first episode of each stream (no selection bias)."""
    batch = br.rollout(n_envs * steps, n_envs, seed=seed)
    end = batch.episode_end.reshape(n_envs, steps)
    first = (np.cumsum(end, axis=1) - end) == 0
    disc = br.problem.gamma_leader ** batch.time.reshape(n_envs, steps)
    returns = (batch.r_leader.reshape(n_envs, steps) * disc * first).sum(axis=1)
    n_trunc = int((batch.truncated.reshape(n_envs, steps) & first).sum())
    return returns, n_trunc


@pytest.mark.parametrize("beta, slip, logit", [
    (0.005, 1 / 3, None), (0.005, 1 / 3, 6.0), (0.001, 0.44, 6.0),
])
def test_leader_objective_equals_monte_carlo(beta, slip, logit):
    br = make_br(beta, slip)
    theta = init_theta() if logit is None else diverting_theta(br, logit)
    br.set_config(theta)
    exact = leader_objective(br)
    # 200 steps per stream: every first episode ends (goal or the 200-step limit)
    n = 2000
    returns, n_trunc = _first_episode_returns(br, n, 200, seed=0)
    se = returns.std(ddof=1) / np.sqrt(n)
    # a truncated episode misses at most γ^200 max|V_L| of the infinite-horizon value
    _, v_l = leader_values(br.problem.tabular_model(), br.policy, 0.99)
    bias = n_trunc / n * 0.99 ** 200 * np.abs(v_l).max()
    assert abs(returns.mean() - exact) < 4 * se + bias, (returns.mean(), exact, se, bias)
    assert se < 0.03


def _fd(br, theta, direction, h=1e-4):
    return (leader_objective(br, theta + h * direction)
            - leader_objective(br, theta - h * direction)) / (2 * h)


@pytest.mark.parametrize("beta", [1e-3, 5e-3])
@pytest.mark.parametrize("slip", [1 / 3, 0.44])
def test_hypergradient_matches_central_differences(beta, slip):
    br = make_br(beta, slip, tol=1e-12)
    rng = np.random.default_rng(int(beta * 1e4) + int(slip * 100))
    theta = rng.normal(0.0, 1.0, 105)
    grad = hypergradient(br, theta)
    norm = np.linalg.norm(grad)
    assert grad.shape == (105,) and np.all(np.isfinite(grad)) and norm > 1e-3
    # random directions and the gradient direction
    for _ in range(2):
        d = rng.normal(size=105)
        d /= np.linalg.norm(d)
        assert abs(_fd(br, theta, d) - grad @ d) < 1e-4 * norm
    assert _fd(br, theta, grad / norm) == pytest.approx(norm, rel=1e-4)
    # a few coordinates: the largest, the unused slot and the goal cell's slot
    for i in [*np.argsort(-np.abs(grad))[:3], 104, br.problem.goal_state]:
        e = np.zeros(105)
        e[i] = 1.0
        assert abs(_fd(br, theta, e) - grad[i]) < 1e-4 * max(abs(grad[i]), 1e-2 * norm), i
    # softmax is shift-invariant: the gradient sums to zero
    assert abs(grad.sum()) < 1e-10 * norm + 1e-14


def test_hypergradient_at_diverting_theta_and_larger_map():
    """Also where the follower passes T, and on a 15×15 map (another problem instance)."""
    br = make_br(0.005, tol=1e-12)
    theta = diverting_theta(br, 5.0)
    grad = hypergradient(br, theta)
    d = np.random.default_rng(0).normal(size=105)
    d /= np.linalg.norm(d)
    assert abs(_fd(br, theta, d) - grad @ d) < 1e-4 * np.linalg.norm(grad)
    big = BestResponse(gym.make(ENV_ID, size=15), beta=0.005, tol=1e-12)
    n = big.config_space.shape[0]
    theta = np.random.default_rng(1).normal(0, 1, n)
    grad = hypergradient(big, theta)
    assert grad.shape == (n,)
    d = np.random.default_rng(2).normal(size=n)
    d /= np.linalg.norm(d)
    assert abs(_fd(big, theta, d) - grad @ d) < 1e-4 * np.linalg.norm(grad)


def test_config_is_restored_after_calls():
    br = make_br(0.003)
    current = np.random.default_rng(4).normal(0, 1, 105)
    br.set_config(current)
    policy, q = br.policy.copy(), br.soft_q.copy()
    j_current = leader_objective(br)
    other = np.random.default_rng(5).normal(0, 1, 105)
    j_other = leader_objective(br, other)
    g_other = hypergradient(br, other)
    np.testing.assert_array_equal(br.config, current)
    np.testing.assert_array_equal(br.problem.config, current)
    np.testing.assert_array_equal(br.policy, policy)  # the follower is put back as it was
    np.testing.assert_array_equal(br.soft_q, q)
    assert leader_objective(br) == pytest.approx(j_current, abs=1e-12)
    assert j_other != pytest.approx(j_current, abs=1e-3)
    # θ = None means the current θ
    np.testing.assert_allclose(hypergradient(br), hypergradient(br, current), atol=1e-12)
    br.set_config(other)
    assert leader_objective(br) == pytest.approx(j_other, abs=1e-12)
    np.testing.assert_allclose(hypergradient(br), g_other, atol=1e-12)
    # a bad θ raises and leaves everything as it was
    with pytest.raises(ValueError, match="theta"):
        leader_objective(br, np.full(105, np.nan))
    with pytest.raises(ValueError, match="theta"):
        hypergradient(br, np.zeros(3))
    np.testing.assert_array_equal(br.config, other)


@pytest.mark.parametrize("size", [13, 15])
def test_closed_form_reward_vjp_matches_autograd(size):
    env = gym.make(ENV_ID, size=size).unwrapped
    rng = np.random.default_rng(size)
    n = env.config_space.shape[0]
    for scale in (0.01, 2.0):
        theta = rng.normal(0, scale, n)
        c_f, c_l = rng.normal(size=(env.n_states, 4)), rng.normal(size=(env.n_states, 4))
        closed = env.tabular_rewards_vjp(theta, c_f, c_l)
        auto = TabularConfigurableEnv.tabular_rewards_vjp(env, theta, c_f, c_l)
        np.testing.assert_allclose(closed, auto, rtol=1e-10, atol=1e-14)
        assert np.abs(auto).max() > 1e-6


def test_k_step_follower_state_is_not_advanced_by_exact_calls():
    """A k-step follower carries Q across solves; evaluating J at some θ must not move it."""
    br = make_br(0.005, solver="value_iteration", max_iterations=5)
    theta = np.random.default_rng(6).normal(0, 1, 105)
    br.set_config(theta)
    q, j = br.soft_q.copy(), leader_objective(br)
    for th in (theta, theta + 0.5):
        leader_objective(br, th)
        hypergradient(br, th)
    np.testing.assert_array_equal(br.soft_q, q)
    np.testing.assert_array_equal(br.config, theta)
    assert leader_objective(br) == j
    # and the follower still samples from the restored policy
    np.testing.assert_allclose(br.follower._cum[:, -1], 1.0)
    assert br.follower_action(31) in range(4)


def test_hypergradient_with_other_discounts_budget_and_penalty():
    """γ_L ≠ γ_F, another budget and λ: the occupancy/adjoint bookkeeping must still hold."""
    env = gym.make(ENV_ID, gamma_leader=0.95, gamma_follower=0.98, incentive_budget=0.5,
                   penalty_weight=2.0, slip_prob=0.2)
    br = BestResponse(env, beta=0.004, tol=1e-12)
    rng = np.random.default_rng(11)
    theta = rng.normal(0, 1, 105)
    grad = hypergradient(br, theta)
    norm = np.linalg.norm(grad)
    assert norm > 1e-3
    for _ in range(2):
        d = rng.normal(size=105)
        d /= np.linalg.norm(d)
        assert abs(_fd(br, theta, d) - grad @ d) < 1e-4 * norm
    assert _fd(br, theta, grad / norm) == pytest.approx(norm, rel=1e-4)


def test_sparse_path_matches_dense_path(monkeypatch):
    """Maps above TabularModel.DENSE_LIMIT states use sparse solves: same numbers."""
    from bilevel_envs.core import TabularModel

    theta = np.random.default_rng(12).normal(0, 1, 105)
    dense = make_br(0.003, tol=1e-12)
    dense.set_config(theta)
    assert dense.problem.tabular_model().dense
    monkeypatch.setattr(TabularModel, "DENSE_LIMIT", 0)
    sparse = make_br(0.003, tol=1e-12)  # a fresh env: no cached dense tables
    sparse.set_config(theta)
    model = sparse.problem.tabular_model()
    assert not model.dense and model.cont3 is None
    np.testing.assert_allclose(sparse.soft_q, dense.soft_q, atol=1e-10)
    assert leader_objective(sparse) == pytest.approx(leader_objective(dense), abs=1e-12)
    np.testing.assert_allclose(hypergradient(sparse), hypergradient(dense), rtol=1e-8,
                               atol=1e-13)


def test_hypergradient_with_config_dependent_dynamics_matches_finite_differences():
    """Tax design (tabular): the income tax τ moves the transitions, so the exact hypergradient
    has the ∇p terms of Theorem 1 (γ_L V_L ∇p on the leader side, γ_F V_F ∇p inside ∇Q_F)."""
    br = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0"), beta=0.2)
    assert br.problem.config_dependent_dynamics
    theta = br.config + np.random.default_rng(0).normal(0.0, 0.3, 4)
    grad = hypergradient(br, theta)
    eps = 1e-5
    fd = np.array([(leader_objective(br, theta + eps * e) - leader_objective(br, theta - eps * e))
                   / (2 * eps) for e in np.eye(4)])
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    assert abs(grad[3]) > 1.0  # the τ coordinate acts through the dynamics


def test_hypergradient_of_one_context_matches_finite_differences():
    """``mu0`` restricts the objective to one context's start (what AMD steps on)."""
    from bilevel_agents.exact import leader_values, tabular_hypergradient

    br = BestResponse(gym.make("BiLevel/ContextualFourRooms-v0"), beta=0.003)
    problem = br.problem
    theta = np.random.default_rng(1).normal(0.0, 1.0, 105)
    mu = problem.context_mu0(1)

    def j(th):
        br.set_config(th)
        return float(mu @ leader_values(problem.tabular_model(), br.policy,
                                        problem.gamma_leader)[1])

    br.set_config(theta)
    grad = tabular_hypergradient(problem, theta, br.policy, br.beta, mu0=mu)
    eps = 1e-5
    for i in (0, 30, 66, 104):
        e = np.eye(105)[i]
        fd = (j(theta + eps * e) - j(theta - eps * e)) / (2 * eps)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-9)
