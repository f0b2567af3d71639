"""Baselines of the Four-Rooms comparison: HPGD (MC / SA / oracle) and SoBiRL (paper App. C.1).

Exactness (coefficient form vs the literal per-transition vectors of Alg. 8), the target
(HPGD's estimate averages to the exact hypergradient of Theorem 1, eq. 7, which is also
Thoma et al.'s eq. 37), SoBiRL ≡ NAIVE-PGD on Four-Rooms, bad input, a short learning run.
"""

import gymnasium as gym
import numpy as np
import pytest
import torch

import bilevel_envs  # noqa: F401
from bilevel_agents import (
    HPGD,
    LEADERS,
    MonteCarloCritic,
    NaivePGD,
    SarsaCritic,
    SoBiRL,
)
from bilevel_agents.estimators import surrogate_gradient
from bilevel_agents.estimators.theorem1 import (
    follower_advantage_grad_coefficients as advantage_grad_coefficients,
)
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_agents.leaders.hpgd import HPGDMonteCarlo, HPGDOracle, HPGDSarsa
from bilevel_agents.leaders.sobirl import sobirl_coefficients
from bilevel_envs.wrappers import BestResponse


def make_br(beta=0.005, **kw):
    return BestResponse(gym.make("BiLevel/FourRooms-v0", **kw), beta=beta)


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _rel(a, b):
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def br():
    return make_br()


def _reward_jacobian(problem, theta):
    """``∂r_F(s, b)/∂θ`` for every table entry: (S, B, |θ|)."""
    th = torch.tensor(theta)
    return torch.autograd.functional.jacobian(
        lambda t: problem.tabular_rewards_torch(t)[0], th).numpy()


# ---------------------------------------------------------------------- registry and API
def test_leaders_are_registered_under_their_cli_names():
    assert LEADERS["hpgd_mc"] is HPGDMonteCarlo and LEADERS["hpgd_sa"] is HPGDSarsa
    assert LEADERS["hpgd_oracle"] is HPGDOracle and LEADERS["sobirl"] is SoBiRL
    br = make_br()
    assert isinstance(HPGDMonteCarlo(br, seed=0).critic, MonteCarloCritic)
    assert isinstance(HPGDSarsa(br, seed=0).critic, SarsaCritic)
    oracle = HPGDOracle(br, seed=0)
    assert oracle.oracle_batch_size == 10_000 and oracle.oracle_n_envs == 100
    assert isinstance(oracle.critic, MonteCarloCritic)
    assert HPGD(br, seed=0).oracle_batch_size is None
    assert oracle.hparams()["oracle_batch_size"] == 10_000


def test_estimates_are_reproducible_under_a_seed():
    for cls in (HPGDMonteCarlo, HPGDSarsa, SoBiRL):
        g1 = cls(make_br(), seed=5).estimate_gradient()
        g2 = cls(make_br(), seed=5).estimate_gradient()
        np.testing.assert_array_equal(g1, g2)
        assert g1.shape == (105,) and np.all(np.isfinite(g1))
    o1 = HPGD(make_br(), oracle_batch_size=2000, seed=2).estimate_gradient()
    o2 = HPGD(make_br(), oracle_batch_size=2000, seed=2).estimate_gradient()
    np.testing.assert_array_equal(o1, o2)


# ---------------------------------------------------------------------- exactness
def test_advantage_coefficients_equal_literal_alg8_with_oracle_stats(br):
    """Σ_j w_j [∇̂Q_F(s_j,b_j) − ∇̂V_F(s_j)] with the averages taken over *another* batch,
    computed literally (per-transition gradient vectors, suffix sums, per-key means) equals the
    one-pass surrogate."""
    problem, theta = br.problem, br.config
    batch = br.rollout(200, n_envs=2, seed=1)
    stats = br.rollout(600, n_envs=6, seed=2,
                       initial_states=np.random.default_rng(3).integers(0, 104, 6))
    jac = _reward_jacobian(problem, theta)
    grad_rf = jac[stats.obs, stats.actions]
    gf = problem.gamma_follower
    G, carry = np.zeros_like(grad_rf), np.zeros(grad_rf.shape[1])
    for k in range(len(stats) - 1, -1, -1):
        carry = grad_rf[k] + (0.0 if stats.episode_end[k] else gf * carry)
        G[k] = carry
    sb, s = batch.obs * 4 + batch.actions, batch.obs
    st_sb, st_s = stats.obs * 4 + stats.actions, stats.obs
    w = np.random.default_rng(4).normal(size=len(batch))
    explicit = np.zeros_like(theta)
    for j in range(len(batch)):
        q = G[st_sb == sb[j]].mean(axis=0) if np.any(st_sb == sb[j]) else 0.0
        v = G[st_s == s[j]].mean(axis=0) if np.any(st_s == s[j]) else 0.0
        explicit += w[j] * (q - v)
    coef = advantage_grad_coefficients(batch, w, sb, 416, s, 104, gf,
                                       np.zeros(len(stats)), stats, st_sb, st_s)
    np.testing.assert_allclose(surrogate_gradient(problem, theta, stats, coef), explicit,
                               rtol=1e-8, atol=1e-12)
    assert np.linalg.norm(explicit) > 1e-6


def test_unvisited_zero_adds_the_empty_average_term(br):
    """unvisited="zero" (empty oracle averages read as 0) = "drop" plus, for every on-policy
    (s_j, b_j) the oracle batch missed, the term γ^t (0 − V̂_L(s_j)) (0 − ∇̂V_F(s_j)) / (βN)."""
    leaders = {m: HPGD(br, batch_size=200, n_envs=2, oracle_batch_size=300, oracle_n_envs=3,
                       unvisited=m, seed=0) for m in ("drop", "zero")}
    batch = br.rollout(200, n_envs=2, seed=1)
    stats = br.rollout(300, n_envs=3, seed=2,
                       initial_states=np.random.default_rng(3).integers(0, 104, 3))
    coefs = {}
    for m, leader in leaders.items():
        leader.critic.update(stats, br)
        (part_batch, coef), = leader.guiding_term(batch, stats).parts
        assert part_batch is stats
        coefs[m] = coef.follower_reward
    sb, s = batch.obs * 4 + batch.actions, batch.obs
    st_sb, st_s = stats.obs * 4 + stats.actions, stats.obs
    missed = np.bincount(st_sb, minlength=416)[sb] == 0
    assert missed.any() and not missed.all()
    v_hat = leaders["zero"].critic.v(batch.obs, br)
    w = np.where(missed, 0.99 ** batch.time * (0.0 - v_hat)
                 / (br.beta * leaders["zero"].family.normaliser(batch)), 0.0)
    extra = advantage_grad_coefficients(batch, w, sb, 416, s, 104, 0.99,
                                        br.soft_v[stats.next_obs], stats, st_sb, st_s)
    np.testing.assert_allclose(coefs["zero"] - coefs["drop"], extra.follower_reward,
                               rtol=1e-9, atol=1e-12)
    assert np.abs(extra.follower_reward).max() > 1e-3
    # on-policy statistics visit every key they use: the two modes agree
    same = [HPGD(br, batch_size=200, n_envs=2, unvisited=m, seed=4).estimate_gradient()
            for m in ("drop", "zero")]
    np.testing.assert_array_equal(*same)


def test_hpgd_guiding_term_vanishes_when_no_state_has_two_actions(br):
    """∇̂Q_F(s, b) − ∇̂V_F(s) = 0 if every visited state was taken with one action only:
    HPGD's need for several actions per state (paper §5.1), in code."""
    batch = br.rollout(300, n_envs=3, seed=7)
    fields = batch._asdict()
    fields["actions"] = np.zeros_like(batch.actions)
    one = type(batch)(**fields)
    w = np.random.default_rng(0).normal(size=len(one))
    coef = advantage_grad_coefficients(one, w, one.obs * 4, 416, one.obs, 104, 0.99,
                                       br.soft_v[one.next_obs])
    np.testing.assert_allclose(coef.follower_reward, 0.0, atol=1e-12)
    # the same weights with the real actions (several per state): not zero
    coef = advantage_grad_coefficients(batch, w, batch.obs * 4 + batch.actions, 416,
                                       batch.obs, 104, 0.99, br.soft_v[batch.next_obs])
    assert np.abs(coef.follower_reward).max() > 1e-3


# ---------------------------------------------------------------------- the target
@pytest.mark.parametrize("beta", [0.001, 0.005])
def test_hpgd_oracle_averages_to_the_exact_hypergradient(beta):
    """Huge oracle batches (MC statistics) + complete on-policy episodes: HPGD's estimate
    averages to the exact ∇J (Theorem 1 eq. 7 = Thoma et al. eq. 37, same target)."""
    br = make_br(beta)
    theta0 = np.random.default_rng(1).normal(0.0, 1.0, 105)
    leader = HPGD(br, batch_size=20_000, n_envs=8, oracle_batch_size=160_000, oracle_n_envs=8,
                  seed=0, theta0=theta0)
    exact = hypergradient(br)
    mean = np.mean([leader.estimate_gradient() for _ in range(6)], axis=0)
    assert _cos(mean, exact) > 0.99
    assert _rel(mean, exact) < 0.1


def test_hpgd_with_exact_leader_values_is_unbiased():
    """With the exact Q_L/V_L, the sampled factor ∇̂Q_F − ∇̂V_F is the only estimate: the mean
    matches the exact hypergradient within 5% (on-policy and oracle statistics)."""
    br = make_br(0.005)
    theta0 = np.random.default_rng(1).normal(0.0, 1.0, 105)
    exact = hypergradient(br, theta0)
    for kw in ({}, {"oracle_batch_size": 80_000, "oracle_n_envs": 8}):
        leader = HPGD(br, batch_size=20_000, n_envs=8, critic="exact", seed=1, theta0=theta0,
                      **kw)
        mean = np.mean([leader.estimate_gradient() for _ in range(8)], axis=0)
        assert _cos(mean, exact) > 0.995 and _rel(mean, exact) < 0.05, kw


def test_hpgd_mc_is_consistent_and_its_small_batch_bias_is_visible():
    """HPGD (MC) pairs Q̂_L and ∇̂Q_F computed from the *same* returns: the product has an
    O(1/visits) bias. Large batches: the mean is close to exact; 5000-transition batches: the
    error of the mean is several standard errors (bias, not noise)."""
    br = make_br(0.005)
    theta0 = np.random.default_rng(1).normal(0.0, 1.0, 105)
    exact = hypergradient(br, theta0)
    big = HPGDMonteCarlo(br, batch_size=80_000, n_envs=8, seed=0, theta0=theta0)
    mean = np.mean([big.estimate_gradient() for _ in range(6)], axis=0)
    assert _cos(mean, exact) > 0.99 and _rel(mean, exact) < 0.15
    small = HPGDMonteCarlo(br, batch_size=5_000, n_envs=8, seed=0, theta0=theta0)
    ests = np.array([small.estimate_gradient() for _ in range(96)])
    err = np.linalg.norm(ests.mean(0) - exact)
    se = np.linalg.norm(ests.std(0, ddof=1)) / np.sqrt(len(ests))
    assert err > 2.0 * se


def test_every_oracle_episode_starts_uniformly(br):
    """oracle_starts="every" (the authors' layout): exactly oracle_batch_size transitions, every
    episode from a uniform start, all but possibly the last complete."""
    leader = HPGD(br, oracle_batch_size=5000, oracle_starts="every", seed=0)
    leader.estimate_gradient()
    stats = leader.last_stats_batch
    assert len(stats) == 5000
    starts = stats.obs[stats.time == 0]
    assert starts.size > 150 and np.unique(starts).size > 80  # ~250 uniform draws over 104
    assert np.count_nonzero(stats.terminated | stats.truncated) >= starts.size - 1
    assert stats.batch_end.sum() <= 1 and stats.episode_end[-1]
    # episodes are contiguous: time restarts exactly after each episode end
    np.testing.assert_array_equal(stats.time[1:] == 0, stats.episode_end[:-1])
    assert leader.hparams()["oracle_starts"] == "every"


def test_oracle_batch_starts_uniformly(br):
    leader = HPGD(br, oracle_batch_size=10_000, seed=0)
    leader.estimate_gradient()
    stats = leader.last_stats_batch
    assert len(stats) == 10_000
    firsts = stats.obs.reshape(100, 100)[:, 0]
    assert np.unique(firsts).size > 40  # 100 uniform draws over 104 states
    assert leader.last_metrics["oracle_episodes"] > 100


# ---------------------------------------------------------------------- SoBiRL
def test_sobirl_guiding_term_is_zero_on_four_rooms(br):
    """The incentive does not depend on b, so ∇r_F(s_t, b_t) = E_b ∇r_F(s_t, b): the sampled
    and expected parts cancel although each is large."""
    batch = br.rollout(100, seed=3)
    q = np.random.default_rng(0).normal(size=len(batch)) + 1.0
    coef, table = sobirl_coefficients(batch, q, br.policy, br.beta)
    sampled = surrogate_gradient(br.problem, br.config, batch, coef)
    total = surrogate_gradient(br.problem, br.config, batch, coef, extra_follower_table=table)
    assert np.linalg.norm(sampled) > 1.0
    assert np.linalg.norm(total) < 1e-12 * np.linalg.norm(sampled) + 1e-14
    s_leader, n_leader = SoBiRL(make_br(), seed=0), NaivePGD(make_br(), seed=0)
    np.testing.assert_allclose(s_leader.gradient_from_batch(batch),
                               n_leader.gradient_from_batch(batch), rtol=0, atol=1e-13)


def test_sobirl_equals_naive_pgd_step_for_step():
    a, b = SoBiRL(make_br(0.005), lr=0.5, seed=3), NaivePGD(make_br(0.005), lr=0.5, seed=3)
    start = a.theta
    for _ in range(150):
        a.update()
        b.update()
    np.testing.assert_allclose(a.theta, b.theta, rtol=0, atol=1e-12)
    assert np.linalg.norm(a.theta - start) > 0.3  # both moved (toward the no-incentive slot)


def test_sobirl_general_form_matches_alg8_line32_with_action_dependent_rewards(br):
    """The coefficient + table form equals the literal Alg. 8 line 32 for an arbitrary
    (action-dependent) reward Jacobian J(s, b) — the case where SoBiRL is not zero."""
    batch = br.rollout(300, n_envs=3, seed=4)
    rng = np.random.default_rng(5)
    J = rng.normal(size=(104, 4, 7))
    q = rng.normal(size=len(batch))
    policy, beta = br.policy, 0.01
    coef, table = sobirl_coefficients(batch, q, policy, beta)
    fast = coef.follower_reward @ J[batch.obs, batch.actions].reshape(len(batch), -1) \
        + np.einsum("sb,sbd->d", table, J)
    starts = np.flatnonzero(batch.time == 0)
    literal = np.zeros(7)
    for i, k0 in enumerate(starts):
        k1 = starts[i + 1] if i + 1 < len(starts) else len(batch)
        inner = sum(J[batch.obs[m], batch.actions[m]] - policy[batch.obs[m]] @ J[batch.obs[m]]
                    for m in range(k0, k1))
        literal += q[k0] * inner
    literal /= beta * len(starts)
    np.testing.assert_allclose(fast, literal, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(literal) > 1e-3


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"oracle_batch_size": 0}, "oracle_batch_size"),
    ({"oracle_batch_size": -5}, "oracle_batch_size"),
    ({"oracle_batch_size": 1.5}, "oracle_batch_size"),
    ({"oracle_batch_size": True}, "oracle_batch_size"),
    ({"oracle_batch_size": 1000, "oracle_n_envs": 3}, "oracle_n_envs"),
    ({"oracle_batch_size": 1000, "oracle_n_envs": 0}, "oracle_n_envs"),
    ({"oracle_n_envs": 10}, "oracle_n_envs"),
    ({"oracle_batch_size": 1000, "oracle_starts": "all"}, "oracle_starts"),
    ({"oracle_batch_size": 1000, "unvisited": "nan"}, "unvisited"),
    ({"critic": "bogus"}, "critic"),
    ({"batch_size": 0}, "batch_size"),
    ({"sarsa_alpha": 0.0, "critic": "sarsa"}, "alpha"),
])
def test_bad_hpgd_arguments_raise(br, kwargs, match):
    with pytest.raises(ValueError, match=match):
        HPGD(br, **kwargs)


def test_bad_sobirl_input_raises(br):
    batch = br.rollout(50, seed=0)
    q = np.zeros(len(batch))
    with pytest.raises(ValueError, match="beta"):
        sobirl_coefficients(batch, q, br.policy, 0.0)
    with pytest.raises(ValueError, match="beta"):
        sobirl_coefficients(batch, q, br.policy, float("nan"))
    with pytest.raises(ValueError, match="q_start"):
        sobirl_coefficients(batch, q[:-1], br.policy, 0.1)
    with pytest.raises(ValueError, match="policy"):
        sobirl_coefficients(batch, q, br.policy.ravel(), 0.1)
    with pytest.raises(ValueError, match="states"):
        sobirl_coefficients(batch, q, br.policy[:10], 0.1)
    with pytest.raises(ValueError, match="weights"):
        advantage_grad_coefficients(batch, q[:-1], batch.obs, 104, batch.obs, 104, 0.99, q)
    with pytest.raises(ValueError, match="stat_sb_keys"):
        advantage_grad_coefficients(batch, q, batch.obs, 104, batch.obs, 104, 0.99, q,
                                    stats=batch)


def test_methods_refuse_problems_they_are_not_defined_on():
    from bilevel_agents import BiAC
    from bilevel_envs.envs.building_thermal import BuildingThermalEnv
    from bilevel_envs.games import lqr_game_v0, toy_game_v0
    from bilevel_envs.wrappers import GameBestResponse

    building = BestResponse(BuildingThermalEnv(), beta=0.1)
    toy = GameBestResponse(toy_game_v0.env(), beta=0.05)
    lqr = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    with pytest.raises(ValueError, match="sobirl is defined on tabular configurable MDPs"):
        SoBiRL(building)
    with pytest.raises(ValueError, match="sobirl is defined on tabular configurable MDPs"):
        SoBiRL(toy)
    with pytest.raises(ValueError, match="hpgd is defined on .*configurable MDPs; got tabular "
                                         "Markov games"):
        HPGD(toy)
    with pytest.raises(ValueError, match="biac is defined on tabular Markov games"):
        BiAC(make_br())
    with pytest.raises(ValueError, match="biac is defined on tabular Markov games"):
        BiAC(lqr)
    with pytest.raises(ValueError, match="oracle_batch_size needs a tabular problem"):
        HPGD(building, oracle_batch_size=100)


# ---------------------------------------------------------------------- learning
def test_hpgd_mc_leaves_the_start_quickly():
    """β = 0.005, batch 100: HPGD (MC) improves far past the start value within 200 iterations
    (a short run of the whole loop; the oracle and longer runs are in the slow tests)."""
    br = make_br(0.005)
    leader = HPGDMonteCarlo(br, lr=0.1, seed=0)
    start = leader_objective(br)
    hist = leader.learn(200, progress=False)
    assert np.mean([h["objective"] for h in hist[-20:]]) > start + 0.6


@pytest.mark.slow
@pytest.mark.parametrize("cls, lr, beta, iterations, floor", [
    (HPGDOracle, 0.5, 0.005, 1500, 0.25), (HPGDMonteCarlo, 0.05, 0.005, 3000, 0.3),
])
def test_long_learning_runs(cls, lr, beta, iterations, floor):
    """β = 0.005, batch 100, the authors' best lr: both reach J ≈ 0.35–0.45 (start −0.76)."""
    leader = cls(make_br(beta), lr=lr, seed=0)
    hist = leader.learn(iterations, progress=False)
    assert np.mean([h["objective"] for h in hist[-200:]]) > floor


# ---------------------------------------------------------------------- reproduction
def test_reproduce_specs_cover_the_paper_grid():
    from bilevel_agents.experiments.reproduce import four_rooms_specs

    specs = four_rooms_specs(out="x", betas=[0.001, 0.003, 0.005], batches=[100, 200, 400, 1000],
                             slips=[1 / 3, 0.44], seeds=10, iterations=10_000)
    # per (β, batch, slip): BC-HG and HPGD (SA) 4 lr × 6 α, the others 4 lr; 10 seeds;
    # exact ascent once per (β, slip) with 3 seeds
    assert len(specs) == 3 * 4 * 2 * (24 + 24 + 4 * 4) * 10 + 3 * 2 * 3
    assert len({s.run_dir for s in specs}) == len(specs)
    quick = four_rooms_specs(out="x", betas=[0.001], batches=[100], slips=[1 / 3], seeds=3,
                             iterations=2000, full_grid=False)
    assert {s.leader for s in quick} == {"bchg", "hpgd_mc", "hpgd_sa", "hpgd_oracle", "sobirl",
                                         "naive_pgd", "exact"}
    assert next(s for s in quick if s.leader == "hpgd_oracle").leader_kwargs["lr"] == 0.05
    authors = four_rooms_specs(out="x", betas=[0.001], batches=[100], slips=[1 / 3], seeds=1,
                               iterations=10, full_grid=False, methods=["hpgd_oracle", "bchg"],
                               oracle_starts="every", oracle_unvisited="zero")
    kw = {s.leader: s.leader_kwargs for s in authors}
    assert kw["hpgd_oracle"] == {"batch_size": 100, "lr": 0.05, "oracle_starts": "every",
                                 "unvisited": "zero"}
    assert "unvisited" not in kw["bchg"]
    # the authors' dynamics: samples with slip 1/3 from a slip-0.44 model, a cell folder apart
    mism = four_rooms_specs(out="x", betas=[0.001], batches=[100], slips=[0.44], seeds=1,
                            iterations=10, full_grid=False, methods=["bchg"],
                            simulator_slip_prob=1 / 3)
    consistent = four_rooms_specs(out="x", betas=[0.001], batches=[100], slips=[0.44], seeds=1,
                                  iterations=10, full_grid=False, methods=["bchg"])
    assert mism[0].env_kwargs == {"slip_prob": 0.44, "simulator_slip_prob": 1 / 3}
    assert consistent[0].env_kwargs == {"slip_prob": 0.44}
    assert mism[0].run_dir != consistent[0].run_dir
    assert "_sim0.33" in str(mism[0].run_dir)
    for kwargs, match in (({"betas": [0.002]}, "betas"), ({"methods": ["x"]}, "methods"),
                          ({"seeds": 0}, "seeds"), ({"oracle_unvisited": "nan"}, "unvisited"),
                          ({"oracle_starts": "all"}, "oracle_starts")):
        args = {**dict(out="x", betas=[0.001], batches=[100], slips=[1 / 3], seeds=1,
                       iterations=10), **kwargs}
        with pytest.raises(ValueError, match=match):
            four_rooms_specs(**args)


def test_bilevel_reproduce_four_rooms_runs_and_reports(tmp_path):
    from bilevel_agents.cli import main

    report = tmp_path / "report.md"
    code = main(["reproduce", "four-rooms", "--quick", "--iterations", "3", "--seeds", "0-1",
                 "--betas", "0.005", "--methods", "naive_pgd,sobirl,hpgd_mc",
                 "--out", str(tmp_path / "runs"), "--report", str(report)])
    assert code == 0
    text = report.read_text()
    for label in ("NAIVE-PGD", "SoBiRL", "HPGD (MC)"):
        assert f"| {label} | 100 |" in text
    assert "1.195" in text  # the authors' HPGD (MC) number beside ours
    assert main(["reproduce", "four-rooms", "--methods", "bogus", "--no-run"]) == 2


def test_report_keeps_estimator_variants_apart():
    """An oracle with empty averages read as 0, or a refinement schedule, is its own row of the
    reproduction report, never a 'grid point' that could stand in for the published method."""
    from bilevel_agents.experiments.reproduce import _variant

    assert _variant({"lr": 0.1, "unvisited": "drop", "oracle_starts": "first"}) == ""
    assert _variant({"unvisited": "zero", "oracle_starts": "every"}) == \
        "unvisited=zero, oracle_starts=every"
    assert _variant({"refine_after": 9000, "sarsa_alpha": 0.3}) == "refine_after=9000"
    # the authors' stream layout of a batch is the published method; another layout is not
    assert _variant({"n_envs": 2, "batch_size": 400}) == ""
    assert _variant({"n_envs": 1, "batch_size": 400}) == "n_envs=1"
    assert _variant({"n_envs": 2, "batch_size": 100}) == "n_envs=2"


def test_report_compares_grid_points_with_as_many_seeds(tmp_path):
    """A grid point with fewer scored seeds (a study still running) never becomes the method's
    row, however high its mean; among equals the best mean wins."""
    from bilevel_agents.experiments.reproduce import cell_dir, four_rooms_report
    from tests.agents.test_reproduce_hpgd import _fake_run

    root = cell_dir(tmp_path, 0.005, 1 / 3, 100)
    ramp = np.linspace(0.0, 1.0, 10)
    for seed in range(3):
        _fake_run(root, "bchg_lr0.1", seed, "bchg", 0.40 * ramp, 10, batch_size=100, lr=0.1)
        _fake_run(root, "bchg_lr0.5", seed, "bchg", 0.30 * ramp, 10, batch_size=100, lr=0.5)
    # one seed: does not compete, however high its mean
    _fake_run(root, "bchg_lr0.05", 0, "bchg", 0.90 * ramp, 10, batch_size=100, lr=0.05)
    text = four_rooms_report(out=tmp_path, betas=[0.005], batches=[100], slips=[1 / 3], tail=5)
    rows = [line for line in text.splitlines() if line.startswith("| BC-HG |")]
    assert len(rows) == 1 and "`bchg_lr0.1`" in rows[0] and "| 3 |" in rows[0]


def test_reproduce_uses_the_authors_stream_layout():
    """Batches of 400 and 1000 are 2 and 5 streams of 200 steps, as in the authors' code."""
    from bilevel_agents.experiments.reproduce import four_rooms_specs, stream_layout

    specs = four_rooms_specs(out="x", betas=[0.005], batches=[100, 200, 400, 1000], slips=[0.44],
                             seeds=1, iterations=10, full_grid=False, methods=["bchg"])
    layout = {s.leader_kwargs["batch_size"]: s.leader_kwargs.get("n_envs", 1) for s in specs}
    assert layout == {100: 1, 200: 1, 400: 2, 1000: 5}
    assert [stream_layout(b) for b in (50, 300, 600, 2000)] == [1, 1, 3, 10]


def test_reproduce_seeds_mean_what_they_mean_in_train():
    """``--seeds`` is a list of seeds in every command (``0-9``, ``0,3,5``); the spec builders
    also take a count."""
    from bilevel_agents.cli_types import parse_seeds
    from bilevel_agents.experiments.reproduce import four_rooms_specs
    from bilevel_agents.experiments.reproduce_followers import followers_specs
    from bilevel_agents.experiments.reproduce_hpgd import hpgd_table1_specs

    chosen = parse_seeds("4,7")
    fr = four_rooms_specs(out="o", betas=[0.005], batches=[100], slips=[1 / 3], seeds=chosen,
                          iterations=5, methods=("bchg", "exact"), full_grid=False)
    assert {s.seed for s in fr} == {4, 7}
    fol = followers_specs(out="o", batches=[100], seeds=chosen, iterations=5,
                          methods=["BC-HG"], followers=["exact"])
    assert [s.seed for s in fol] == [4, 7]
    hp = hpgd_table1_specs(out="o", cells=[(0.003, 3)], methods=("amd",), seeds=3,
                           iterations=5, full_grid=False)
    assert [s.seed for s in hp] == [0, 1, 2]


@pytest.mark.parametrize("task", ["four-rooms", "followers", "hpgd-table1"])
def test_a_bad_seed_list_is_a_one_line_usage_error(task, capsys):
    from bilevel_agents.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", task, "--seeds", "5-2", "--no-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seeds" in err[0] and "5-2" in err[0]


def test_a_simulator_slip_out_of_range_is_a_one_line_usage_error(capsys):
    from bilevel_agents.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "four-rooms", "--simulator-slip-prob", "1.5", "--no-run"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--simulator-slip-prob" in err[0] and "1.5" in err[0]


def test_the_toy_followers_study_runs_and_reports(tmp_path, capsys):
    """``bilevel reproduce followers --problem toy``: the game's protocol, a report row per
    (method, follower) with the exact return under g* and under the follower faced."""
    from bilevel_agents.cli import main
    from bilevel_agents.experiments.reproduce_followers import STUDIES, followers_specs

    specs = followers_specs(out=tmp_path, seeds=2, problem="toy")
    toy = STUDIES["toy"]
    assert len(specs) == 2 * len(toy.methods) * len(toy.followers)
    assert {s.env for s in specs} == {"toy_game_v0"} and {s.iterations for s in specs} == {500}
    assert all("batch_size" not in s.leader_kwargs for s in specs)
    follower = "soft-q-learning:steps=450,epsilon=0.2"
    assert main(["reproduce", "followers", "--problem", "toy", "--seeds", "0", "--iterations",
                 "3", "--eval-every", "1", "--methods", "BC-HG", "--followers",
                 f"exact,{follower}", "--out", str(tmp_path)]) == 0
    report = (tmp_path / "followers_toy.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| BC-HG")]
    assert len(rows) == 2 and f"`{follower}`" in rows[1]
    exact_row = rows[0].split("|")
    assert exact_row[4] == exact_row[6]  # the exact follower: both returns are the same number
    assert (tmp_path / "followers_toy_gap.png").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["reproduce", "followers", "--problem", "toy", "--methods", "NAIVE-PGD",
              "--no-run", "--out", str(tmp_path)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "NAIVE-PGD" in err[0] and "BC-HG,Bi-AC" in err[0]
