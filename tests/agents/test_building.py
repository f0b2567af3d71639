"""Building thermal control (paper App. C.5): env, MaxEnt-LQR follower, exact objective/gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_agents.exact.building import (
    building_objective,
    building_objective_torch,
    exact_leader_critic,
    partial_gradient,
)
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.wrappers import BestResponse
from tests.envs.test_building_thermal import (  # noqa: F401  (shared fixtures)
    BETA,
    J_BEST,
    J_START,
    _rand_theta,
    br,
    env,
)


# ---------------------------------------------------------------------- exact objective
def test_exact_objective_reference_values(br, env):
    assert leader_objective(br, np.zeros(8)) == pytest.approx(J_START, abs=0.01)
    ins = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    air = torch.tensor([0.0, 0.778, 1.0, 1.0], dtype=torch.float64)
    assert float(building_objective_torch(env, ins, air, BETA)) == pytest.approx(J_BEST, abs=0.01)
    # θ = ±20 approximates the 0/1 corners
    theta = np.array([20, -20, 20, 20, -20, np.log(0.778 / 0.222), 20, 20.0])
    assert leader_objective(br, theta) == pytest.approx(J_BEST, abs=0.01)
    # γ^100 ≈ 3e-5: the 100-step value and the infinite-horizon value nearly coincide
    assert building_objective(env, BETA, np.zeros(8), horizon=None) == pytest.approx(
        J_START, abs=0.01)
    assert np.allclose(br.config, 0.0)  # the exact functions do not move the wrapper's θ


def test_exact_objective_matches_monte_carlo(br):
    theta = _rand_theta(4)
    br.set_config(theta)
    n_ep = 8000
    batch = br.rollout(100 * n_ep, n_envs=n_ep, seed=0)
    ret = (batch.r_leader * 0.9**batch.time).reshape(n_ep, 100).sum(1)
    se = ret.std() / np.sqrt(n_ep)
    assert abs(ret.mean() - leader_objective(br)) < 4 * se


def test_objective_under_a_k_step_follower_matches_monte_carlo():
    """A 1-step reset follower (far from the best response): ``objective_actual`` is the exact
    J under the policy it plays (Monte Carlo of its own rollouts), ``follower_gap`` its exact
    soft-value shortfall, and both vanish for a follower that has converged."""
    import gymnasium as gym

    from bilevel_agents.exact import follower_metrics
    from bilevel_envs.followers import make_follower
    from bilevel_envs.followers.maxent_lqr import lqr_policy_evaluation, solve_maxent_lqr

    env = gym.make("BiLevel/BuildingThermal-v0")
    far = BestResponse(env, BETA, follower=make_follower("kstep:1:reset", env, BETA))
    far.set_config(_rand_theta(4))
    m = follower_metrics(far)
    n_ep = 8000
    batch = far.rollout(100 * n_ep, n_envs=n_ep, seed=0)
    ret = (batch.r_leader * 0.9**batch.time).reshape(n_ep, 100).sum(1)
    assert abs(ret.mean() - m["objective_actual"]) < 4 * ret.std() / np.sqrt(n_ep)
    assert abs(m["objective_actual"] - leader_objective(far)) > 3 * ret.std() / np.sqrt(n_ep)
    # the gap: E V*(s0) − E V^g(s0) > 0, and the evaluation of the best response is (P, v)
    model = far.problem.lqr_model()
    best = solve_maxent_lqr(model.A, model.B, model.Q, model.R, model.W, model.gamma, BETA)
    X, c = lqr_policy_evaluation(model, best.K, best.cov, BETA)
    np.testing.assert_allclose(X, best.P, rtol=1e-10, atol=1e-12)
    assert c == pytest.approx(best.v, rel=1e-10)
    assert m["follower_gap"] > 1.0
    near = BestResponse(env, BETA, follower=make_follower("kstep:300:reset", env, BETA))
    near.set_config(_rand_theta(4))
    m = follower_metrics(near)
    assert abs(m["objective_actual"] - leader_objective(near)) < 1e-8
    assert abs(m["follower_gap"]) < 1e-8
    assert follower_metrics(BestResponse(env, BETA)) == {}  # the exact follower: nothing to add


@pytest.mark.parametrize("seed", [None, 5])
def test_hypergradient_matches_central_differences(br, seed):
    theta = np.zeros(8) if seed is None else _rand_theta(seed)
    g = hypergradient(br, theta)
    h = 1e-5
    fd = np.array([(leader_objective(br, theta + h * e) - leader_objective(br, theta - h * e))
                   / (2 * h) for e in np.eye(8)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)


def _objective_fixed_follower(env, theta, K, cov, T=100):
    """Independent numpy J(θ; g) with the follower's (K, Σ_b) held fixed."""
    al, ai = env.split_config(theta)
    A = env.dynamics_matrix(al, ai)
    F = A - env.B @ K
    n = 4
    Mc = (np.eye(n) - 1 / n) / n + 0.5 * K.T @ K
    c = 0.5 * np.trace(cov) + 0.1 * (al @ al + ai @ ai)
    sig, J = 25 * np.eye(n), 0.0
    for t in range(T):
        J -= 0.9**t * (np.trace(Mc @ sig) + c)
        sig = F @ sig @ F.T + env.B @ cov @ env.B.T + env.W
    return J


def test_partial_gradient_holds_follower_fixed(br):
    theta = _rand_theta(6)
    br.set_config(theta)
    K, cov = br.follower.solution.K, br.follower.solution.cov
    assert _objective_fixed_follower(br.problem, theta, K, cov) == pytest.approx(
        leader_objective(br), rel=1e-12)
    g = partial_gradient(br)
    h = 1e-5
    fd = np.array([(_objective_fixed_follower(br.problem, theta + h * e, K, cov)
                    - _objective_fixed_follower(br.problem, theta - h * e, K, cov)) / (2 * h)
                   for e in np.eye(8)])
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-6)
    assert not np.allclose(g, hypergradient(br), rtol=1e-2)  # the response term matters here


def test_exact_leader_critic(br):
    br.set_config(_rand_theta(7))
    crit = exact_leader_critic(br)
    rng = np.random.default_rng(0)
    s = rng.normal(0, 4, (5, 4))
    # V_L = E_{b~g} Q_L (Alg. 1 line 10), by many follower samples
    bs = br.follower.act(np.repeat(s, 20_000, axis=0), rng)
    q = crit.q(np.repeat(s, 20_000, axis=0), bs).reshape(5, -1)
    np.testing.assert_allclose(q.mean(1), crit.v(s), rtol=2e-3)
    # J from V_L: E_{s0} V_L(s0) = −tr(X Σ0) − c equals the infinite-horizon objective
    j_inf = building_objective(br.problem, BETA, horizon=None)
    assert -(25 * np.trace(crit.X) + crit.c) == pytest.approx(j_inf, rel=1e-10)


# ---------------------------------------------------------------------- leaders (phase 2)
from bilevel_agents import BCHG, HPGD, NaivePGD  # noqa: E402
from bilevel_agents.critics import (
    ExactBuildingCritic,  # noqa: E402
    MLPCritic,  # noqa: E402
)
from bilevel_agents.estimators.theorem1 import (  # noqa: E402
    crossfit_residual,
    quadratic_features,
)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_mlp_critic_bad_input():
    for kw in ({"gamma": 1.0}, {"gamma": 0.9, "lr": -1}, {"gamma": 0.9, "v_method": "x"},
               {"gamma": 0.9, "minibatch": 0}, {"gamma": 0.9, "dtype": "int8"}):
        with pytest.raises(ValueError, match=next(iter(kw)) if len(kw) == 1 else list(kw)[-1]):
            MLPCritic(4, 2, **kw)
    with pytest.raises(RuntimeError):
        MLPCritic(4, 2, gamma=0.9).q(np.zeros((1, 4)), np.zeros((1, 2)))


def test_sigma_point_v_is_exact_for_quadratic_q(br):
    """V_L = E_{b~g} Q_L by 2m sigma points is exact when Q_L is quadratic in b."""
    br.set_config(_rand_theta(8))
    exact = exact_leader_critic(br)

    class QuadQ(MLPCritic):
        def q(self, states, actions):
            return exact.q(states, actions)

    crit = QuadQ(4, 2, gamma=0.9)
    s = np.random.default_rng(0).normal(0, 4, (6, 4))
    np.testing.assert_allclose(crit.v(s, br), exact.v(s), rtol=1e-10)


def test_mlp_critic_learns_leader_q(br):
    exact = exact_leader_critic(br)
    crit = MLPCritic(4, 2, gamma=0.9, first_steps=800, minibatch=256, lr=3e-3, seed=0)
    batch = br.rollout(5000, 50, seed=0)
    info = crit.update(batch, br)
    assert info["critic_steps"] == 800
    test = br.rollout(2000, 20, seed=1)
    q_true = exact.q(test.obs, test.actions)
    err = crit.q(test.obs, test.actions) - q_true
    assert np.sqrt(np.mean(err**2)) < 0.3 * q_true.std()
    benefit = q_true - exact.v(test.obs)
    benefit_hat = crit.q(test.obs, test.actions) - crit.v(test.obs, br)
    assert np.corrcoef(benefit, benefit_hat)[0, 1] > 0.5
    # warm start: the next update runs `steps`, and state_dict round-trips
    assert crit.update(batch, br)["critic_steps"] == crit.steps
    clone = MLPCritic(4, 2, gamma=0.9, seed=1)
    clone.load_state_dict(crit.state_dict())
    np.testing.assert_allclose(clone.q(test.obs, test.actions), crit.q(test.obs, test.actions))
    # the authors' 256-sample V_L agrees with the sigma-point V_L
    sampler = MLPCritic(4, 2, gamma=0.9, v_method="samples", seed=2)
    sampler.load_state_dict(crit.state_dict())
    s = test.obs[:50]
    np.testing.assert_allclose(sampler.v(s, br), crit.v(s, br), atol=0.05 * q_true.std())


def test_crossfit_residual_cancels_baselines_in_the_feature_span():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(400, 4))
    phi = quadratic_features(s)
    assert phi.shape == (400, 15)
    w = rng.normal(size=400)
    folds = rng.random(400) < 0.5
    u = crossfit_residual(w, phi, folds)
    M = phi @ rng.normal(size=(15, 3))  # a "∇Q_F" that is a function of the state only
    np.testing.assert_allclose(u @ M, 0.0, atol=1e-8 * np.abs(w @ M).max())
    # and it leaves weights alone when the features carry no information
    noise = rng.normal(size=(400, 3))
    assert np.linalg.norm(u @ noise - w @ noise) < 0.5 * np.linalg.norm(w @ noise)


def test_naive_pgd_with_exact_critic_estimates_partial_gradient(br):
    leader = NaivePGD(br, batch_size=10_000, n_envs=100, critic=ExactBuildingCritic(),
                                theta0=np.zeros(8), seed=0)
    est = leader.estimate_gradient()
    assert _cos(est, partial_gradient(br)) > 0.98


def test_bchg_with_exact_critic_is_unbiased(br):
    """Mean of the variance-reduced BC-HG estimate ≈ exact hypergradient (Theorem 1)."""
    leader = BCHG(br, batch_size=10_000, n_envs=100, critic=ExactBuildingCritic(),
                            theta0=np.zeros(8), seed=0)
    est = np.mean([leader.estimate_gradient() for _ in range(12)], axis=0)
    g = hypergradient(br)
    assert _cos(est, g) > 0.9
    assert _cos(est, partial_gradient(br)) < _cos(est, g)  # it sees the follower's response


def test_continuous_leader_options(br):
    with pytest.raises(ValueError, match="clip_groups"):
        BCHG(br, batch_size=100, clip_groups=(4, 3))
    leader = BCHG(br, batch_size=1000, n_envs=10, critic=ExactBuildingCritic(),
                            theta0=np.full(8, 19.99), lr=10.0, clip_groups=(4, 4), seed=0)
    leader.update()
    assert np.all(leader.theta <= 20.0) and np.all(leader.theta >= -20.0)
    assert leader.iteration == 1


def test_hpgd_continuous_options_and_estimate(br):
    with pytest.raises(ValueError, match="leader_value"):
        HPGD(br, batch_size=100, leader_value="x")
    with pytest.raises(ValueError, match="oracle_batch_size needs a tabular"):
        HPGD(br, batch_size=100, oracle_batch_size=1000)
    for value in ("q", "return"):
        leader = HPGD(br, batch_size=2000, n_envs=20, critic=ExactBuildingCritic(),
                                leader_value=value, theta0=np.zeros(8), seed=0)
        est = leader.estimate_gradient()
        assert est.shape == (8,) and np.all(np.isfinite(est))


@pytest.mark.slow
def test_bchg_learns_past_the_no_response_optimum():
    """150 BC-HG iterations (10^4 transitions each, MLP critic) from θ ≈ 0 (J = −262) pass the
    −197.25 that ascent ignoring the follower's response stops at (known_optima.md)."""
    br = BestResponse(BuildingThermalEnv(), beta=BETA)
    leader = BCHG(br, batch_size=10_000, n_envs=100, lr=0.1, seed=3, clip_groups=(4, 4))
    history = leader.learn(150, progress=False, eval_every=10)
    assert history[0]["objective"] < -255
    assert leader_objective(br) > -195


def test_adam_is_applied_on_continuous_problems(br):
    """optimizer="adam" takes Adam steps: the first is lr·sign(g) in every coordinate (|Δθ_i| ≈
    lr), where SGD on the clipped gradient moves θ by at most lr in norm."""
    leader = BCHG(br, batch_size=1000, n_envs=10, critic=ExactBuildingCritic(),
                  optimizer="adam", lr=0.01, theta0=np.zeros(8), seed=0)
    leader.update()
    np.testing.assert_allclose(np.abs(leader.theta), 0.01, rtol=1e-4)


class _BlackBox:
    """The exact MaxEnt-LQR follower with its values hidden: it only acts."""

    def __init__(self, beta):
        from bilevel_envs.followers.maxent_lqr import MaxEntLQRFollower

        self._inner = MaxEntLQRFollower(beta)
        self.beta = beta

    def solve(self, problem):
        self._inner.solve(problem)

    def act(self, obs, rng):
        return self._inner.act(obs, rng)


def test_a_follower_that_publishes_nothing_is_served_by_the_leaders_own_critics(br):
    """With V_F learned by LSTD from the follower's rewards (and V_L from its sampled actions),
    BC-HG's estimate equals the one with the published values to within its own noise."""
    from bilevel_agents.critics.follower import QuadraticFollowerValue

    blind = BestResponse(BuildingThermalEnv(), beta=BETA, follower=_BlackBox(BETA))
    leader = BCHG(blind, critic=ExactBuildingCritic(), theta0=np.zeros(8), seed=0)
    assert isinstance(leader.family.follower_value, QuadraticFollowerValue)
    seeing = BCHG(br, critic=ExactBuildingCritic(), theta0=np.zeros(8), seed=0)
    assert seeing.family.follower_value is None
    for seed in range(2):
        batch = br.rollout(10_000, 100, seed=seed)
        a, b = leader.gradient_from_batch(batch), seeing.gradient_from_batch(batch)
        assert _cos(a, b) > 0.999
