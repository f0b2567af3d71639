"""Building thermal control (paper App. C.5): env, MaxEnt-LQR follower, exact objective/gradient."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from scipy.stats import multivariate_normal

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.followers.maxent_lqr import (
    LQRModel,
    MaxEntLQRFollower,
    riccati_iteration,
    riccati_torch,
    solve_discounted_dare,
    solve_maxent_lqr,
)
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/BuildingThermal-v0"

BETA = 0.1
J_START = -261.963  # known_optima.md, θ = 0
J_BEST = -162.50  # known_optima.md, α = (1,0,1,1), airflow = (0,0.778,1,1)


@pytest.fixture
def env():
    return BuildingThermalEnv()


@pytest.fixture
def br():
    return BestResponse(BuildingThermalEnv(), beta=BETA)


def _rand_theta(seed):
    return np.random.default_rng(seed).normal(0.0, 1.5, 8)


# ---------------------------------------------------------------------- env
@pytest.mark.filterwarnings("ignore:.*(Box|infinity).*:UserWarning")
def test_check_env_and_make():
    check_env(gym.make(ENV_ID).unwrapped, skip_render_check=True)
    env = gym.make(ENV_ID)
    obs, info = env.reset(seed=3)
    assert obs.dtype == np.float32 and obs.shape == (4,) and info == {}
    assert env.unwrapped.config_space.shape == (8,)
    truncated, n = False, 0
    while not truncated:
        obs, r, term, truncated, info = env.step(np.zeros(2))
        n += 1
        assert isinstance(r, float) and isinstance(info["leader_reward"], float)
        assert not term
    assert n == 100


def test_dynamics_matrix_matches_paper_eq_100(env):
    a, b = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.5, 0.6, 0.7, 0.8])
    A = env.dynamics_matrix(a, b)
    k = [0.04, 0.03, 0.06, 0.05]
    h12, h41, h21, h23, h32, h34, h43 = 0.05, 0.05, 0.03, 0.04, 0.04, 0.06, 0.03
    d = [k[i] * (1 - a[i]) for i in range(4)]
    expected = np.array([
        [1 + d[0] - h12 * b[0] - h41 * b[3], h12 * b[0], 0, h41 * b[3]],
        [h21 * b[0], 1 + d[1] - h23 * b[1] - h21 * b[0], h23 * b[1], 0],
        [0, h32 * b[1], 1 + d[2] - h34 * b[2] - h32 * b[1], h34 * b[2]],
        [h41 * b[3], 0, h43 * b[2], 1 + d[3] - h41 * b[3] - h43 * b[2]],
    ])
    np.testing.assert_allclose(A, expected, atol=1e-15)
    At = env.dynamics_matrix_torch(torch.tensor(a), torch.tensor(b)).numpy()
    np.testing.assert_allclose(At, expected, atol=1e-15)


def test_transition_batched_rewards_and_noise(env):
    env.set_config(_rand_theta(0))
    rng = np.random.default_rng(0)
    s = rng.normal(0, 5, (20_000, 4))
    b = rng.normal(0, 2, (20_000, 2))
    nxt, r_f, r_l, term = env.transition(s, b, rng)
    resid = nxt - (s @ env.A.T + b @ env.B.T)
    assert abs(resid.std() - 0.02) < 0.001 and abs(resid.mean()) < 0.001
    np.testing.assert_allclose(r_f, -(s**2 @ np.array([8, 1, 5, 6.])) - 0.01 * (b**2).sum(1))
    var = ((s - s.mean(1, keepdims=True)) ** 2).mean(1)
    np.testing.assert_allclose(r_l, -var - 0.5 * (b**2).sum(1) - env.config_cost)
    assert not term.any()
    al, ai = env.split_config(env.config)
    assert env.config_cost == pytest.approx(0.1 * (al @ al + ai @ ai))


def test_step_matches_transition_and_seeding(env):
    o1, _ = env.reset(seed=5)
    s1 = env.step([0.3, -0.2])
    o2, _ = env.reset(seed=5)
    s2 = env.step(np.array([0.3, -0.2], dtype=np.float32))
    np.testing.assert_allclose(o1, o2)
    np.testing.assert_allclose(s1[0], s2[0], rtol=1e-6)
    assert s1[4] is not s2[4]


def test_bad_input(env):
    with pytest.raises(ValueError, match="theta"):
        env.set_config(np.zeros(7))
    with pytest.raises(ValueError, match="theta"):
        env.set_config(np.full(8, 25.0))
    with pytest.raises(ValueError, match="theta"):
        env.set_config(np.array([np.nan] + [0.0] * 7))
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(np.zeros(3))
    with pytest.raises(ValueError, match="action"):
        env.step(np.array([np.inf, 0.0]))
    with pytest.raises(ValueError, match="beta"):
        BestResponse(env, beta=0.0)
    with pytest.raises(ValueError, match="states"):
        env.transition(np.zeros((3, 5)), np.zeros((3, 2)), np.random.default_rng())
    with pytest.raises(ValueError, match="noise_std"):
        BuildingThermalEnv(noise_std=-1.0)
    with pytest.raises(ValueError, match="reset options"):
        env.reset(options={"confg": np.zeros(8)})


def test_torch_terms_match_numpy_and_densities(env):
    theta = _rand_theta(1)
    env.set_config(theta)
    rng = np.random.default_rng(1)
    s, b = rng.normal(0, 3, (50, 4)), rng.normal(0, 1, (50, 2))
    s2, _, r_l, _ = env.transition(s, b, rng)
    th = torch.tensor(theta, requires_grad=True)
    np.testing.assert_allclose(env.leader_reward_torch(th, s, b).detach().numpy(), r_l)
    np.testing.assert_allclose(env.follower_reward_torch(th, s, b).numpy(),
                               env.follower_reward(s, b))
    logp = env.log_transition_torch(th, s, b, s2)
    mean = s @ env.A.T + b @ env.B.T
    ref = np.array([multivariate_normal(mean[i], env.W).logpdf(s2[i]) for i in range(3)])
    np.testing.assert_allclose(logp.detach().numpy()[:3], ref, rtol=1e-10)
    # ∇θ log p by autograd vs central differences
    (g,) = torch.autograd.grad(logp.sum(), th)
    h, fd = 1e-6, []
    for e in np.eye(8):
        lp = [env.log_transition_torch(torch.tensor(theta + sg * h * e), s, b, s2).sum().item()
              for sg in (1, -1)]
        fd.append((lp[0] - lp[1]) / (2 * h))
    np.testing.assert_allclose(g.numpy(), fd, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------------- follower
def _random_system(seed, n=4, m=2):
    rng = np.random.default_rng(seed)
    A = np.eye(n) + 0.2 * rng.normal(size=(n, n))
    B = rng.normal(size=(n, m))
    L = rng.normal(size=(n, n))
    return A, B, L @ L.T + 0.1 * np.eye(n), np.diag(rng.uniform(0.1, 1, m)), 1e-3 * np.eye(n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dare_matches_riccati_iteration(seed):
    A, B, Q, R, _ = _random_system(seed)
    P = solve_discounted_dare(A, B, Q, R, 0.9)
    P_it, k = riccati_iteration(A, B, Q, R, 0.9, tol=1e-14)
    np.testing.assert_allclose(P, P_it, rtol=1e-9)
    assert k > 1


def test_building_dare_matches_riccati_iteration(br):
    m = br.problem.lqr_model()
    P_it, _ = riccati_iteration(m.A, m.B, m.Q, m.R, m.gamma, tol=1e-14)
    np.testing.assert_allclose(br.follower.solution.P, P_it, rtol=1e-9)


def test_soft_value_identities(br):
    """V_F = E_g[Q_F] + β H(g) (eq. 70) and g ∝ exp(Q_F/β) (Boltzmann, eq. 69)."""
    br.set_config(_rand_theta(2))
    fol = br.follower
    rng = np.random.default_rng(0)
    s = rng.normal(0, 4, (7, 4))
    # E_g[Q_F] exactly: Q_F is quadratic in b, E over N(μ, Σ) = Q_F(μ) + tr(∂²Q/2 Σ)
    mu, cov = fol.policy(s)
    sol, mdl = fol.solution, fol.model
    curvature = -(mdl.R + mdl.gamma * mdl.B.T @ sol.P @ mdl.B)
    e_q = fol.soft_q(s, mu) + np.trace(curvature @ cov)
    np.testing.assert_allclose(fol.soft_v(s), e_q + BETA * fol.policy.entropy(), rtol=1e-12)
    # Boltzmann: log g(b|s) − Q_F(s,b)/β is constant in b, and equals −V_F/β
    b = rng.normal(0, 3, (7, 2))
    np.testing.assert_allclose(fol.policy.log_prob(s, b) - fol.soft_q(s, b) / BETA,
                               -fol.soft_v(s) / BETA, rtol=1e-10)


def test_soft_value_monte_carlo(br):
    """V_F(s0) = E Σ_t γ^t (r_F − β log g(b_t|s_t)) by Monte Carlo (eq. 56)."""
    fol, problem = br.follower, br.problem
    rng = np.random.default_rng(1)
    s0 = np.array([2.0, -1.0, 3.0, 0.5])
    n, T = 4000, 200
    s = np.tile(s0, (n, 1))
    ret, disc = np.zeros(n), 1.0
    for _ in range(T):
        b = fol.act(s, rng)
        ret += disc * (problem.follower_reward(s, b) - BETA * fol.policy.log_prob(s, b))
        s, *_ = problem.transition(s, b, rng)
        disc *= problem.gamma_follower
    se = ret.std() / np.sqrt(n)
    assert abs(ret.mean() - fol.soft_v(s0[None])[0]) < 4 * se + 1e-6


def test_follower_protocol_and_non_stabilisable():
    from bilevel_envs.followers import Follower

    A = np.diag([2.0, 0.5])
    B = np.array([[0.0], [1.0]])  # the unstable mode is not actuated
    with pytest.raises(ValueError, match="stabilisable"):
        solve_discounted_dare(A, B, np.eye(2), np.eye(1), 0.9)
    with pytest.raises(ValueError, match="stabilisable"):
        MaxEntLQRFollower(0.1, LQRModel(A, B, np.eye(2), np.eye(1), np.zeros((2, 2)), 0.9))
    # |√γ·2| ≥ 1 but with γ small enough the mode no longer matters
    solve_discounted_dare(A, B, np.eye(2), np.eye(1), 0.2)
    with pytest.raises(ValueError, match="R"):
        solve_maxent_lqr(A, B, np.eye(2), np.zeros((1, 1)), np.zeros((2, 2)), 0.9, 0.1)
    with pytest.raises(ValueError, match="beta"):
        solve_maxent_lqr(A, B, np.eye(2), np.eye(1), np.zeros((2, 2)), 0.2, -1.0)
    with pytest.raises(ValueError, match="gamma"):
        solve_discounted_dare(A, B, np.eye(2), np.eye(1), 1.0)
    fol = BuildingThermalEnv().make_follower(0.1)
    with pytest.raises(RuntimeError):
        fol.act(np.zeros((1, 4)), np.random.default_rng())
    fol.solve(BuildingThermalEnv())
    assert isinstance(fol, Follower)
    acts = fol.act(np.zeros((10_000, 4)), np.random.default_rng(0))
    cov = fol.policy.cov
    np.testing.assert_allclose(np.cov(acts.T), cov, atol=0.05 * np.abs(cov).max())


def test_riccati_torch_gradient_matches_finite_differences():
    A, B, Q, R, _ = _random_system(3)
    rng = np.random.default_rng(0)
    C = rng.normal(size=(4, 4))  # a linear functional of P
    At = torch.tensor(A, requires_grad=True)
    Bt = torch.tensor(B, requires_grad=True)
    P = riccati_torch(At, Bt, torch.tensor(Q), torch.tensor(R), 0.9)
    gA, gB = torch.autograd.grad((torch.tensor(C) * P).sum(), (At, Bt))
    h = 1e-6
    for grad, X, make in ((gA, A, lambda d: (A + d, B)), (gB, B, lambda d: (A, B + d))):
        fd = np.zeros_like(X)
        for idx in np.ndindex(X.shape):
            d = np.zeros_like(X)
            d[idx] = h
            fd[idx] = (np.sum(C * solve_discounted_dare(*make(d), Q, R, 0.9))
                       - np.sum(C * solve_discounted_dare(*make(-d), Q, R, 0.9))) / (2 * h)
        np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-5, atol=1e-6)


