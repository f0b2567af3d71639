"""AMD and the zero-order leader (HPGD's baselines): fixed point, estimates, short runs, resume."""

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents import AMD, LEADERS, ZeroOrder, get_leader, train
from bilevel_agents.exact import (
    at_config,
    hypergradient,
    leader_objective,
    leader_values,
    tabular_hypergradient,
)
from bilevel_envs.wrappers import BestResponse


def contextual_br(beta=0.003, lam=3.0, **kw):
    return BestResponse(gym.make("BiLevel/ContextualFourRooms-v0", penalty_weight=lam),
                        beta=beta, **kw)


def context_value(br, k):
    p = br.problem
    _, v_l = leader_values(p.tabular_model(), br.policy, p.gamma_leader)
    return float(p.context_mu0(k) @ v_l)


def test_registered_and_exported():
    assert LEADERS["amd"] is AMD and LEADERS["zero_order"] is ZeroOrder
    assert get_leader("zero-order") is ZeroOrder and get_leader("amd") is AMD


# ---------------------------------------------------------------------- AMD
def test_amd_fixed_point_is_the_exact_hypergradient_of_the_drawn_context():
    br = contextual_br(tol=1e-13)
    rng = np.random.default_rng(5)
    br.set_config(rng.normal(0.0, 0.5, size=105))  # not the symmetric start
    leader = AMD(br, seed=1, backups=3000, theta0=br.config)
    p = br.problem
    seen = set()
    for _ in range(4):
        grad = leader.estimate_gradient()
        leader.backups = 1  # the tables are carried: they stay at the fixed point
        k = int(leader.last_metrics["context"])
        seen.add(k)
        exact = tabular_hypergradient(p, p.config, br.policy, br.beta, mu0=p.context_mu0(k))
        np.testing.assert_allclose(grad, exact, rtol=0, atol=1e-8)
        assert leader.last_metrics["amd_policy_error"] < 1e-9
    assert seen == {0, 1}  # both contexts drawn from the leader's generator
    leader.contexts = "per_episode"  # the mixture form is the gradient of J
    np.testing.assert_allclose(leader.estimate_gradient(), hypergradient(br), atol=1e-8)


def test_amd_short_run_improves_the_exact_objective():
    leader = AMD(contextual_br(), lr=0.5, seed=0)
    hist = leader.learn(25, progress=False)
    assert hist[-1]["objective"] > hist[0]["objective"] + 0.02
    assert {"context", "amd_policy_error", "grad_norm"} <= set(hist[0])


def test_amd_refuses_theta_dependent_dynamics_and_games():
    tax = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0", n_grid=5), beta=0.2)
    with pytest.raises(ValueError, match="dynamics"):
        AMD(tax, seed=0)
    with pytest.raises(ValueError, match="amd is defined on"):
        AMD(BestResponse(gym.make("BiLevel/BuildingThermal-v0"), beta=0.1), seed=0)
    with pytest.raises(ValueError, match="backups"):
        AMD(contextual_br(), backups=0)
    with pytest.raises(ValueError, match="unknown option"):
        AMD(contextual_br(), batch_size=100)  # model-based: no sampling options


def test_amd_resumes_exactly(tmp_path):
    def make():
        return AMD(contextual_br(beta=0.005, lam=1.0), lr=0.5, seed=3, backups=20)

    full = make()
    full.learn(12, progress=False)
    stopped = make()
    train(stopped, 12, run_dir=tmp_path, progress=False, checkpoint_every=5,
          callback=lambda it, row: it < 7)
    resumed = make()
    train(resumed, 12, run_dir=tmp_path, progress=False, checkpoint_every=5)
    np.testing.assert_array_equal(resumed.theta, full.theta)
    for key in full.tables:
        np.testing.assert_array_equal(resumed.tables[key], full.tables[key])


# ---------------------------------------------------------------------- zero-order
def test_zero_order_estimate_is_the_two_point_formula_of_the_drawn_context():
    br = contextual_br()
    leader = ZeroOrder(br, c=0.5, seed=4)
    leader.iteration = 4  # t = 5, u = 0.1
    state = leader.rng.bit_generator.state
    theta, policy = br.config, br.policy.copy()
    grad = leader.estimate_gradient()
    np.testing.assert_array_equal(br.config, theta)  # θ and the follower restored exactly
    np.testing.assert_array_equal(br.policy, policy)
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    k = int(rng.integers(2))
    z = rng.standard_normal(105)
    assert leader.last_metrics["context"] == k and leader.last_metrics["radius"] == 0.1
    j0 = context_value(br, k)
    with at_config(br, br.config + 0.1 * z):
        j1 = context_value(br, k)
    np.testing.assert_allclose(grad, (j1 - j0) * z / 0.1, rtol=1e-12)


def test_zero_order_average_points_along_the_exact_gradient():
    """Smooth case (building control, d = 8): the mean of many two-point estimates at a
    small radius approaches ∇J (E ĝ = ∇J + O(u); cos ≈ (1 + (d + 1)/n)^(-1/2))."""
    br = BestResponse(gym.make("BiLevel/BuildingThermal-v0"), beta=0.1)
    leader = ZeroOrder(br, c=1e-3, seed=0, theta0=np.zeros(8))
    exact = hypergradient(br)
    estimates = np.array([leader.estimate_gradient() for _ in range(150)])
    mean = estimates.mean(axis=0)
    cos = mean @ exact / (np.linalg.norm(mean) * np.linalg.norm(exact))
    assert cos > 0.94
    assert np.linalg.norm(mean) == pytest.approx(np.linalg.norm(exact), rel=0.3)


def test_zero_order_short_run_improves_the_exact_objective():
    leader = ZeroOrder(contextual_br(), c=0.1, lr=0.5, seed=0)
    hist = leader.learn(80, progress=False)
    assert np.mean([h["objective"] for h in hist[-10:]]) > hist[0]["objective"] + 0.02


def test_zero_order_needs_an_exact_objective_and_validates():
    with pytest.raises(ValueError, match="c must"):
        ZeroOrder(contextual_br(), c=0.0)
    with pytest.raises(ValueError, match="contexts"):
        ZeroOrder(contextual_br(), contexts="sometimes")
    # problems without contexts: J itself (nothing drawn for the context)
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
    leader = ZeroOrder(br, c=0.5, seed=2)
    state = leader.rng.bit_generator.state
    grad = leader.estimate_gradient()
    rng = np.random.default_rng()
    rng.bit_generator.state = state
    z = rng.standard_normal(105)
    with at_config(br, br.config + 0.5 * z):
        j1 = leader_objective(br)
    np.testing.assert_allclose(grad, (j1 - leader_objective(br)) * z / 0.5, rtol=1e-12)
    assert "context" not in leader.last_metrics


def test_hpgd_zero_order_pipeline_in_float64_is_the_exact_objective():
    """The HPGD pipeline of examples/contextual_four_rooms/zero_order_precision.py (truncated
    solver, 500 evaluation backups) in float64 reads the exact J_ξ to 1e-8 at a random θ,
    and in float32 to float32's error."""
    import importlib.util
    from pathlib import Path

    path = (Path(__file__).resolve().parents[2] / "examples" / "contextual_four_rooms"
            / "zero_order_precision.py")
    spec = importlib.util.spec_from_file_location("zero_order_precision", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    br = contextual_br(beta=0.003, lam=1.0)
    theta = np.random.default_rng(2).normal(0.0, 0.5, size=105)
    br.set_config(theta)
    for k in range(2):
        exact = context_value(br, k)
        assert abs(example.hpgd_value(br.problem, theta, k, 0.003, np.float64) - exact) < 1e-8
        assert abs(example.hpgd_value(br.problem, theta, k, 0.003, np.float32) - exact) < 2e-5
