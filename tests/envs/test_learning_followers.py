"""Followers that are not oracles: k-step, soft Q-learning, SB3; soft policy evaluation; specs."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_envs.envs.four_rooms import FourRoomsEnv
from bilevel_envs.followers import (
    KStepMaxEntLQRFollower,
    KStepSoftFollower,
    KStepSoftQIterationFollower,
    GameSoftQLearning,
    NotPublishedError,
    SoftQLearning,
    TabularSoftFollower,
    follower_optimality_gap,
    game_follower_optimality_gap,
    game_soft_policy_evaluation,
    make_follower,
    parse_follower_spec,
    soft_policy_evaluation,
    soft_policy_iteration,
    soft_value_iteration,
)
from bilevel_envs.followers.maxent_lqr import MaxEntLQRFollower
from bilevel_envs.followers.soft_q_iteration import SoftQIterationFollower
from bilevel_envs.followers.soft_value_iteration import soft_bellman_backup, soft_value
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.wrappers import BestResponse, GameBestResponse
from bilevel_envs.wrappers.best_response import _tabular_walk

BETA = 0.005


def four_rooms(seed: int = 0, **kwargs) -> FourRoomsEnv:
    env = FourRoomsEnv(**kwargs)
    env.set_config(np.random.default_rng(seed).normal(0, 1, env.config_space.shape))
    return env


# ---------------------------------------------------------------------- k-step: definition
def reference_authors_kstep(model, beta, gamma, q0, k, backups=5):
    """The authors' loop, written from its description with dense arrays."""
    P = model.P  # (S, B, S)
    keep = (~model.terminal).astype(float)[:, None]
    q = q0.copy()
    for _ in range(k):
        z = np.exp((q - q.max(axis=1, keepdims=True)) / beta)
        pi = z / z.sum(axis=1, keepdims=True)
        ent = -(pi * np.log(pi)).sum(axis=1)
        for _ in range(backups):
            v = (pi * q).sum(axis=1)
            q = model.r_follower + beta * ent[:, None] + gamma * keep * (P @ v)
    return q


def test_soft_policy_iteration_is_the_authors_loop():
    env = four_rooms(1)
    model = env.tabular_model()
    q0 = np.random.default_rng(2).normal(0, 1, (model.n_states, model.n_actions))
    for k in (1, 2, 5):
        ours = soft_policy_iteration(model, 0.05, 0.99, q0, k, form="official")
        np.testing.assert_allclose(ours, reference_authors_kstep(model, 0.05, 0.99, q0, k),
                                   atol=1e-12)
    # paper form: the first backup of an iteration is the soft Bellman optimality backup
    one = soft_policy_iteration(model, 0.05, 0.99, q0, 1, backups=1)
    np.testing.assert_allclose(
        one, soft_bellman_backup(q0, model, model.r_follower, 0.05, 0.99), atol=1e-13)
    with pytest.raises(ValueError, match="form"):
        soft_policy_iteration(model, 0.05, 0.99, q0, 1, form="magic")
    with pytest.raises(ValueError, match="iterations"):
        soft_policy_iteration(model, 0.05, 0.99, q0, 0)


@pytest.mark.parametrize("form", ["paper", "official"])
@pytest.mark.parametrize("start", ["carry", "reset"])
def test_kstep_large_k_equals_exact_four_rooms(form, start):
    env = four_rooms(3)
    exact = TabularSoftFollower(BETA)
    exact.solve(env)
    fol = KStepSoftFollower(BETA, 300, start, form=form, seed=0)
    fol.solve(env)
    np.testing.assert_allclose(fol.soft_q, exact.soft_q, atol=1e-8, rtol=0)
    np.testing.assert_allclose(fol.soft_v, exact.soft_v, atol=1e-8, rtol=0)
    np.testing.assert_allclose(fol.policy, exact.policy, atol=1e-8, rtol=0)
    assert fol.result.residual < 1e-8


def test_kstep_carry_vs_reset_four_rooms():
    env = four_rooms(4)
    model, k = env.tabular_model(), 2
    start = np.random.default_rng(11).standard_normal((model.n_states, model.n_actions))
    carry = KStepSoftFollower(BETA, k, "carry", seed=11)
    reset = KStepSoftFollower(BETA, k, "reset", seed=11)
    carry.solve(env)
    reset.solve(env)
    # the first solve of both starts from the seeded N(0, 1) draw
    first = soft_policy_iteration(model, BETA, 0.99, start, k)
    np.testing.assert_array_equal(carry.soft_q, first)
    np.testing.assert_array_equal(reset.soft_q, first)
    # carry: a second solve continues from Q_k (= 2k iterations from the same start) ...
    carry.solve(env)
    np.testing.assert_allclose(carry.soft_q, soft_policy_iteration(model, BETA, 0.99, start, 2 * k),
                               atol=1e-12)
    # ... reset: a second solve starts from a fresh draw of the follower's generator
    rng = np.random.default_rng(11)
    rng.standard_normal(start.shape)
    fresh = rng.standard_normal(start.shape)
    reset.solve(env)
    np.testing.assert_allclose(reset.soft_q, soft_policy_iteration(model, BETA, 0.99, fresh, k),
                               atol=1e-12)
    assert not np.allclose(reset.soft_q, first)
    # carry is closer to the best response than reset after the same number of solves
    gap_c = follower_optimality_gap(model, carry.policy, BETA, 0.99)
    gap_r = follower_optimality_gap(model, reset.policy, BETA, 0.99)
    assert 0 <= gap_c.max < gap_r.max


def test_kstep_gap_shrinks_with_k_via_wrapper():
    gaps = []
    for k in (1, 2, 5, 20, 50):
        br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.003,
                          follower=make_follower(f"kstep:{k}:reset", gym.make(
                              "BiLevel/FourRooms-v0"), 0.003, seed=0))
        gaps.append(br.follower_gap())
    starts = [g.start for g in gaps]
    assert all(a >= b - 1e-12 for a, b in itertools.pairwise(starts)), starts
    assert starts[0] > 1e-2 and starts[-1] < 1e-6
    exact = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.003).follower_gap()
    assert abs(exact.start) < 1e-9 and abs(exact.max) < 1e-9


def test_kstep_toy_game():
    game = toy_game_v0.raw_env(reward=2)
    f = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    exact = SoftQIterationFollower(0.05, 0.99)
    exact.solve(game, f)
    big = KStepSoftQIterationFollower(0.05, 5000, "reset", gamma=0.99, seed=0, tol=1e-14)
    big.solve(game, f)
    np.testing.assert_allclose(big.soft_q, exact.soft_q, atol=1e-8, rtol=0)
    np.testing.assert_allclose(big.policy, exact.policy, atol=1e-8, rtol=0)
    # carry: two solves of k = one solve of 2k from the same seeded start; reset: fresh draws
    from bilevel_envs.followers.soft_q_iteration import soft_q_backup

    start = np.random.default_rng(5).standard_normal(game.model.r_follower.shape)
    q = start.copy()
    for _ in range(6):
        q = soft_q_backup(q, f, game.model.r_follower, game.model.P, 0.99, 0.05)
    carry = KStepSoftQIterationFollower(0.05, 3, "carry", seed=5)
    carry.solve(game, f)
    carry.solve(game, f)
    np.testing.assert_allclose(carry.soft_q, q, atol=1e-12)
    reset = KStepSoftQIterationFollower(0.05, 3, "reset", seed=5)
    reset.solve(game, f)
    q1 = reset.soft_q.copy()
    reset.solve(game, f)
    assert not np.allclose(reset.soft_q, q1) and not np.allclose(reset.soft_q, q)
    # a rejected leader policy leaves the follower as it was
    with pytest.raises(ValueError, match="leader_policy"):
        reset.solve(game, np.ones((2, 2)))
    assert reset.soft_q is not None and reset.soft_q.shape == (3, 2, 3)
    gap = game_follower_optimality_gap(game, f, carry.policy, 0.05, 0.99)
    gap_big = game_follower_optimality_gap(game, f, big.policy, 0.05, 0.99)
    assert gap.start > 1e-3 and abs(gap_big.start) < 1e-8


def test_kstep_lqr_building():
    env = gym.make("BiLevel/BuildingThermal-v0").unwrapped
    exact = MaxEntLQRFollower(0.1)
    exact.solve(env)
    big = KStepMaxEntLQRFollower(0.1, 400)
    big.solve(env)
    P = exact.solution.P
    assert np.abs(big.solution.P - P).max() / np.abs(P).max() < 1e-10
    np.testing.assert_allclose(big.gain, exact.gain, atol=1e-8)
    assert abs(big.solution.v - exact.solution.v) < 1e-8
    # reset: every solve starts from Q̄ (deterministic); carry continues from the previous P
    reset, carry = KStepMaxEntLQRFollower(0.1, 3, "reset"), KStepMaxEntLQRFollower(0.1, 3)
    for fol in (reset, carry):
        fol.solve(env)
    np.testing.assert_array_equal(reset.solution.P, carry.solution.P)
    six = KStepMaxEntLQRFollower(0.1, 6)
    six.solve(env)
    reset.solve(env)
    carry.solve(env)
    np.testing.assert_allclose(carry.solution.P, six.solution.P, rtol=1e-13)
    assert not np.allclose(reset.solution.P, carry.solution.P)
    # its published soft values are the closed forms at its own P
    s = np.random.default_rng(0).normal(0, 5, (4, 4))
    sol = carry.solution
    np.testing.assert_allclose(carry.soft_v(s), -(np.einsum("ni,ij,nj->n", s, sol.P, s)
                                                  + sol.v))


# ---------------------------------------------------------------------- soft policy evaluation
def test_soft_policy_evaluation_and_gap():
    env = four_rooms(6)
    model = env.tabular_model()
    exact = soft_value_iteration(model, 0.05, 0.99)
    q, v = soft_policy_evaluation(model, exact.policy, 0.05, 0.99)
    np.testing.assert_allclose(v, exact.v, atol=1e-9)
    np.testing.assert_allclose(q, exact.q, atol=1e-9)
    # an arbitrary policy satisfies its own soft evaluation equation
    g = np.random.default_rng(0).dirichlet(np.ones(4), size=model.n_states)
    q, v = soft_policy_evaluation(model, g, 0.05, 0.99)
    np.testing.assert_allclose(v, (g * (q - 0.05 * np.log(g))).sum(axis=1), atol=1e-10)
    # a deterministic policy (0 log 0 = 0)
    det = np.eye(4)[np.zeros(model.n_states, dtype=int)]
    _, v_det = soft_policy_evaluation(model, det, 0.05, 0.99)
    assert np.all(np.isfinite(v_det))
    # gap >= 0, and equal to β (I − γ P_g)^{-1} KL(g ‖ g*) (soft performance difference)
    gap = follower_optimality_gap(model, g, 0.05, 0.99, v_opt=exact.v)
    kl = (g * (np.log(g) - np.log(exact.policy))).sum(axis=1)
    disc = model.solve_discounted(model.policy_transition(g), 0.05 * kl, 0.99)
    np.testing.assert_allclose(exact.v - gap.v_policy, disc, atol=1e-9)
    assert gap.max >= gap.start > 0 and gap.start == pytest.approx(disc[env.start_state])
    assert gap.relative_start == pytest.approx(gap.start / abs(exact.v[env.start_state]))
    with pytest.raises(ValueError, match="policy"):
        soft_policy_evaluation(model, g[:3], 0.05, 0.99)
    with pytest.raises(ValueError, match="probability"):
        soft_policy_evaluation(model, 2 * g, 0.05, 0.99)


def test_game_soft_policy_evaluation():
    game = toy_game_v0.raw_env(reward=2)
    f = np.array([[0.3, 0.7], [0.6, 0.4], [0.5, 0.5]])
    exact = SoftQIterationFollower(0.05, 0.99, tol=1e-13)
    exact.solve(game, f)
    q, v, _ = game_soft_policy_evaluation(game, f, exact.policy, 0.05, 0.99)
    np.testing.assert_allclose(q, exact.soft_q, atol=1e-8)
    np.testing.assert_allclose(v, exact.soft_v, atol=1e-8)
    uniform = np.full((3, 2, 3), 1 / 3)
    gap = game_follower_optimality_gap(game, f, uniform, 0.05, 0.99)
    assert np.all(gap.v_opt - gap.v_policy >= -1e-9) and gap.start > 0


# ---------------------------------------------------------------------- soft Q-learning
def test_soft_q_learning_converges_to_exact_soft_q():
    """Fixed θ, Four-Rooms (104 states) with γ_F = 0.9, β = 0.1, 3·10^5 own transitions.

    Measured over 5 seeds (θ ~ N(0, 1)): |V̂(S) − V_F(S)| ≤ 2.5e-4 (V_F(S) ≈ 1.2), the
    visit-weighted mean |Q̂ − Q_F| ≤ 9.1e-4 (3e-2 after 6·10^4 steps: ~1/n, the rescaled-linear
    rate), max |Q̂ − Q_F| over pairs visited ≥ 1000 times ≤ 1.9e-3; rarely visited pairs
    (22–41 visits) err up to 0.11, as a Monte-Carlo average of so few noisy targets must.
    The tolerances below are 3–4× those worst cases.
    """
    env = four_rooms(0, gamma_follower=0.9)
    exact = soft_value_iteration(env.tabular_model(), 0.1, 0.9)
    fol = SoftQLearning(0.1, steps_per_leader_update=60_000, seed=0)
    errors = []
    for _ in range(5):
        fol.solve(env)
        err = np.abs(fol.soft_q - exact.q)
        errors.append((err * fol.counts).sum() / fol.counts.sum())
    s = env.start_state
    assert fol.total_steps == 300_000 and np.all(fol.counts > 0)
    assert abs(fol.soft_v[s] - exact.v[s]) < 1e-3
    assert errors[-1] < 3e-3 and errors[-1] < errors[0] / 10
    assert err[fol.counts >= 1000].max() < 5e-3
    np.testing.assert_allclose(fol.policy, soft_value(fol.soft_q, 0.1)[1])


def test_soft_q_learning_needs_an_optimistic_start():
    env = four_rooms(1, gamma_follower=0.9)
    pessimistic = SoftQLearning(0.1, 50_000, init_value=0.0, seed=1)
    optimistic = SoftQLearning(0.1, 50_000, seed=1)
    pessimistic.solve(env)
    optimistic.solve(env)
    assert (pessimistic.counts == 0).mean() > 0.2
    assert (optimistic.counts == 0).mean() == 0


def test_soft_q_learning_two_timescales_and_observe():
    env = gym.make("BiLevel/FourRooms-v0")
    fol = SoftQLearning(0.05, steps_per_leader_update=500, warmup_steps=1000, seed=0)
    br = BestResponse(env, 0.05, follower=fol)
    assert fol.total_steps == 1500 and fol.counts.sum() == 1500
    br.set_config(np.random.default_rng(0).normal(0, 1, 105))  # set_config → solve → learns
    assert fol.total_steps == 2000
    batch = br.rollout(300, seed=0)
    q_before = fol.q.copy()
    br.observe(batch)  # the leader's batch, the same update
    assert fol.total_steps == 2300 and fol.counts.sum() == 2300
    assert not np.array_equal(q_before, fol.q)
    # exact followers ignore observe
    exact = BestResponse(gym.make("BiLevel/FourRooms-v0"), 0.05)
    q = exact.soft_q.copy()
    exact.observe(batch)
    np.testing.assert_array_equal(q, exact.soft_q)


def test_black_box_follower_through_the_wrapper():
    env = gym.make("BiLevel/FourRooms-v0")
    fol = SoftQLearning(0.05, 2000, publish=False, seed=0)
    br = BestResponse(env, 0.05, follower=fol)
    for name in ("policy", "soft_q", "soft_v"):
        with pytest.raises(NotPublishedError, match=f"soft-q-learning \\(black-box\\) does not "
                                                    f"publish {name}"):
            getattr(br, name)
        assert getattr(br, name, None) is None
    with pytest.raises(NotPublishedError):
        br.follower_gap()
    # rollouts go through act (no table): they follow the learner's Boltzmann policy
    batch = br.rollout(4000, 16, seed=1)
    table = soft_value(fol.q, 0.05)[1]
    s0 = env.unwrapped.start_state
    at_start = batch.actions[batch.obs == s0]
    freq = np.bincount(at_start, minlength=4) / len(at_start)
    np.testing.assert_allclose(freq, table[s0], atol=4 * np.sqrt(0.25 / len(at_start)))


def test_game_wrapper_with_a_black_box_follower():
    class BlackBox:
        """Only the required members: beta, solve, act."""

        def __init__(self):
            self._inner = SoftQIterationFollower(0.05, 0.99)
            self.beta = 0.05

        def solve(self, game, leader_policy=None):
            self._inner.solve(game, leader_policy)

        def act(self, obs, rng):
            return self._inner.act(obs, rng)

    br = GameBestResponse(toy_game_v0.env(reward=2), 0.05, follower=BlackBox())
    br.set_config(np.zeros(6))
    for name in ("policy", "soft_q", "soft_v"):
        assert getattr(br, name, None) is None
    with pytest.raises(NotPublishedError):
        br.follower_value(np.zeros(2, int), np.zeros(2, int))
    batch = br.rollout(3, seed=0)
    assert np.all(np.isnan(batch.follower_value)) and batch.r_leader.shape == (3, 150)
    br.reset(seed=0)
    _, _, _, _, info = br.step(0)
    assert np.isnan(info["follower_value"])
    np.testing.assert_allclose(br.leader_policy, 0.5)
    # no follower state: restoring re-solves at the stored leader policy
    snap = br.state_dict()
    br.set_config(np.arange(6.0))
    br.load_state_dict(snap)
    np.testing.assert_allclose(br.leader_policy, 0.5)
    # the LQR game as well
    lqr = GameBestResponse(lqr_game_v0.env(), 0.1)
    K = np.array([[-0.2, -0.1]])
    lqr.set_leader_policy(K)
    np.testing.assert_allclose(lqr.leader_gain, K)


# ---------------------------------------------------------------------- soft Q-learning, games
@pytest.mark.parametrize("seed", [1, 2])
def test_game_soft_q_learning_converges_to_the_exact_soft_q(seed):
    """Toy game (R = 2, β = 0.05, γ_F = 0.99), a fixed leader policy f ~ Dir(2, 2), 10^6 rounds
    with ε = 0.3 exploration: the table approaches the paper-form Q_F without reading f.

    Measured (seeds 1, 2): max |V̂ − V_F| 0.036 / 0.059 (V_F ≈ 60), max |Q̂ − Q_F| 0.13 / 0.095,
    every triple visited > 10^4 times; after 10^5 rounds 0.25 / 0.10. Without exploration
    (ε = 0) the Boltzmann behaviour at β = 0.05 all but stops visiting A (≈ 1,000 of 3·10^5
    rounds against a uniform leader), and V̂ stays ≈ 11 below V_F in every state.
    """
    game = toy_game_v0.raw_env(reward=2)
    f = np.random.default_rng(seed).dirichlet([2, 2], size=3)
    exact = SoftQIterationFollower(0.05, 0.99)
    exact.solve(game, f)
    fol = GameSoftQLearning(0.05, 1_000_000, epsilon=0.3, seed=0)
    fol.solve(game, f)
    assert fol.total_steps == 1_000_000 and fol.counts.min() > 10_000
    assert np.abs(fol.soft_v - exact.soft_v).max() < 0.2
    assert np.abs(fol.soft_q - exact.soft_q).max() < 0.4
    np.testing.assert_allclose(fol.policy.sum(axis=2), 1.0)
    with pytest.raises(ValueError, match="gamma= and max_episode_steps="):
        GameSoftQLearning(0.05, 10, seed=0).solve(game.model, f)  # a bare model: no γ_F, T
    bare = GameSoftQLearning(0.05, 10, gamma=0.99, max_episode_steps=150, seed=0)
    bare.solve(game.model, f)
    assert bare.total_steps == 10
    greedy = GameSoftQLearning(0.05, 300_000, seed=0)
    greedy.solve(game, np.full((3, 2), 0.5))
    exact.solve(game, np.full((3, 2), 0.5))
    assert np.abs(greedy.soft_v - exact.soft_v).max() > 1.0  # why the study explores


def test_game_soft_q_learning_in_the_wrapper_observes_and_can_be_a_black_box():
    br = GameBestResponse(toy_game_v0.env(reward=2), 0.05,
                          follower=GameSoftQLearning(0.05, 200, warmup_steps=100, seed=0))
    fol = br.follower
    assert fol.total_steps == 300  # construction solves once (warm-up included)
    br.set_config(np.zeros(6))  # a new leader policy → 200 more rounds
    assert fol.total_steps == 500 and fol.counts.sum() == 500
    np.testing.assert_allclose(fol.leader_policy, 0.5)
    batch = br.rollout(3, seed=0)
    q = fol.q.copy()
    br.observe(batch)  # rounds t < T − 1 of each episode: the last one has no next leader action
    assert fol.total_steps == 500 + 3 * 149 and not np.array_equal(q, fol.q)
    assert np.all(np.isfinite(batch.follower_value))  # published V̂
    hidden = GameBestResponse(toy_game_v0.env(reward=2), 0.05,
                              follower=GameSoftQLearning(0.05, 200, publish=False, seed=0))
    for name in ("policy", "soft_q", "soft_v"):
        assert getattr(hidden, name, None) is None
    assert np.all(np.isnan(hidden.rollout(2, seed=0).follower_value))
    readout = hidden.follower.policy_readout()  # for evaluation only, published or not
    assert readout.shape == (3, 2, 3)
    np.testing.assert_allclose(readout.sum(axis=2), 1.0)


def test_toy_follower_metrics_score_the_follower_the_leader_faces():
    """objective_actual equals the exact objective for an exact follower's policy, and the
    follower gap is that of game_follower_optimality_gap."""
    from bilevel_agents.exact import follower_metrics, leader_objective, report_metrics

    br = GameBestResponse(toy_game_v0.env(reward=2), 0.05,
                          follower=make_follower("kstep:200:carry", toy_game_v0.env(reward=2),
                                                 0.05, seed=0))
    br.set_config(np.array([0.3, -0.2, 1.0, 0.0, 0.0, 0.5]))
    m = follower_metrics(br)
    assert abs(m["objective_actual"] - leader_objective(br)) < 1e-6  # 200 backups: converged
    assert abs(m["return_150_actual"] - report_metrics(br)["return_150"]) < 1e-6
    assert 0 <= m["follower_gap"] < 1e-6
    far = GameBestResponse(toy_game_v0.env(reward=2), 0.05,
                           follower=make_follower("kstep:1:reset", toy_game_v0.env(reward=2),
                                                  0.05, seed=0))
    far.set_config(np.array([0.3, -0.2, 1.0, 0.0, 0.0, 0.5]))
    m = follower_metrics(far)
    g = far.follower.policy
    assert m["follower_gap"] > 1e-4  # one backup from N(0, 1): measured 9.8e-4
    assert abs(m["follower_gap"] - game_follower_optimality_gap(
        far.problem, far.leader_policy, g, 0.05, 0.99).start) < 1e-12
    assert follower_metrics(GameBestResponse(toy_game_v0.env(reward=2), 0.05)) == {}


# ---------------------------------------------------------------------- SB3
@pytest.fixture(scope="module")
def sb3():
    return pytest.importorskip("stable_baselines3")


@pytest.mark.parametrize("algo, spec", [
    ("DQN", "sb3:DQN:learning_starts=0,steps=300,buffer_size=2000,batch_size=32"),
    ("PPO", "sb3:PPO:n_steps=128,batch_size=64,n_epochs=2,steps=256"),
])
def test_sb3_follower_publishes_its_policy_table(sb3, algo, spec):
    import torch

    env = gym.make("BiLevel/FourRooms-v0")
    fol = make_follower(spec, env, 0.1, seed=0)
    br = BestResponse(env, 0.1, follower=fol)
    assert fol.model.num_timesteps == (300 if algo == "DQN" else 256)
    br.set_config(np.random.default_rng(0).normal(0, 1, 105))
    table = br.policy
    assert table.shape == (104, 4) and np.all(table >= 0)
    np.testing.assert_allclose(table.sum(axis=1), 1.0, atol=1e-12)
    # read independently through SB3's API
    obs_t, _ = fol.model.policy.obs_to_tensor(np.arange(104))
    with torch.no_grad():
        if algo == "PPO":
            ref = fol.model.policy.get_distribution(obs_t).distribution.probs.double().numpy()
        else:
            ref = torch.softmax(fol.model.q_net(obs_t).double() / 0.1, dim=1).numpy()
    np.testing.assert_allclose(table, ref, atol=1e-6)
    # the wrapper's rollouts sample this table (the fast tabular walk of the published policy)
    batch = br.rollout(200, seed=3)
    ref_batch = _tabular_walk(br.problem, table, 200, 1, np.random.default_rng(3), None, 200)
    np.testing.assert_array_equal(batch.actions, ref_batch.actions)
    # no soft values; the exact objective under the follower's actual policy is computable
    with pytest.raises(NotPublishedError, match=f"sb3:{algo} does not publish soft_v"):
        _ = br.soft_v
    assert br.follower_gap().start > 0
    # θ reaches the model's env: it shares the wrapper's problem instance
    inner = fol.model.get_env().envs[0].unwrapped
    assert inner.problem is br.problem


def test_sb3_theta_reaches_a_separate_env_through_env_method(sb3):
    """A model built on its own env instance gets θ by env_method, never the set_attr trap."""
    from bilevel_envs.followers import SB3Follower

    own_env = gym.make("BiLevel/FourRooms-v0")
    model = sb3.DQN("MlpPolicy", own_env, learning_starts=0, buffer_size=500, seed=0,
                    device="cpu")
    fol = SB3Follower(model, 0.1, steps_per_leader_update=50)
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), 0.1, follower=fol)
    theta = np.random.default_rng(1).normal(0, 1, 105)
    br.set_config(theta)
    np.testing.assert_array_equal(model.get_env().envs[0].unwrapped.config, theta)
    with pytest.warns(UserWarning, match="not a FollowerEnv"):
        fol.state_dict()


def test_sb3_sac_is_the_maxent_follower_on_building(sb3):
    env = gym.make("BiLevel/BuildingThermal-v0")
    fol = make_follower("sb3:SAC:learning_starts=100,steps=200,batch_size=32", env, 0.1,
                        seed=0)
    br = BestResponse(env, 0.1, follower=fol)
    model = fol.model
    # ent_coef = β fixed (not learned) and the follower's discount
    assert model.ent_coef_optimizer is None and float(model.ent_coef_tensor) == pytest.approx(0.1)
    assert model.gamma == pytest.approx(0.9)
    for name in ("policy", "soft_q", "soft_v"):
        assert getattr(br, name, None) is None
    batch = br.rollout(200, 2, seed=0)  # through act: SAC's squashed Gaussian on our rng
    assert batch.actions.shape == (200, 2)
    assert np.all(np.abs(batch.actions) <= 10.0)
    again = br.rollout(200, 2, seed=0)
    np.testing.assert_array_equal(batch.actions, again.actions)
    with pytest.warns(UserWarning, match="ent_coef"):
        make_follower("sb3:SAC:ent_coef=0.5,steps=10", env, 0.1, seed=0)


def test_sb3_learning_leaves_global_random_streams_alone(sb3):
    import random

    import torch

    env = gym.make("BiLevel/FourRooms-v0")
    fol = make_follower("sb3:PPO:n_steps=32,batch_size=32,n_epochs=1,steps=32", env, 0.1,
                        seed=0)
    states = (np.random.get_state()[1].copy(), torch.get_rng_state().clone(), random.getstate())
    br = BestResponse(env, 0.1, follower=fol)
    br.set_config(np.ones(105))
    assert np.array_equal(states[0], np.random.get_state()[1])
    assert torch.equal(states[1], torch.get_rng_state()) and states[2] == random.getstate()


# ---------------------------------------------------------------------- specs
@pytest.mark.parametrize("text, kind, k, mode, algo, options", [
    ("exact", "exact", None, None, None, {}),
    ("exact:bootstrap=official", "exact", None, None, None, {"bootstrap": "official"}),
    ("kstep:5", "kstep", 5, "carry", None, {}),
    ("kstep:10:reset", "kstep", 10, "reset", None, {}),
    ("kstep:2:carry:form=official,backups=3", "kstep", 2, "carry", None,
     {"form": "official", "backups": 3}),
    ("kstep:50:init_std=0", "kstep", 50, "carry", None, {"init_std": 0}),
    ("soft-q-learning", "soft-q-learning", None, None, None, {}),
    ("soft-q-learning:steps=5000,lr_min=0.01,publish=false", "soft-q-learning", None, None,
     None, {"steps": 5000, "lr_min": 0.01, "publish": False}),
    ("sb3:DQN:learning_starts=0", "sb3", None, None, "DQN", {"learning_starts": 0}),
    ("sb3:sac:ent_coef=0.1:batch_size=64", "sb3", None, None, "SAC",
     {"ent_coef": 0.1, "batch_size": 64}),
    ("sb3:SAC:ent_coef=auto", "sb3", None, None, "SAC", {"ent_coef": "auto"}),
])
def test_spec_parser_accepts(text, kind, k, mode, algo, options):
    spec = parse_follower_spec(text)
    assert (spec.kind, spec.k, spec.mode, spec.algo, spec.options) == (kind, k, mode, algo,
                                                                       options)
    again = parse_follower_spec(str(spec))  # the canonical form parses to the same spec
    assert (again.kind, again.k, again.mode, again.algo, again.options) == (kind, k, mode or (
        "carry" if kind == "kstep" else None), algo, options)


@pytest.mark.parametrize("text, match", [
    ("", "non-empty"),
    ("oracle", "unknown kind 'oracle'.*allowed: \\['exact', 'kstep', 'soft-q-learning', 'soft-dqn', 'sb3'\\]"),
    ("kstep", "kstep needs K"),
    ("kstep:x", "K must be an integer >= 1, got 'x'"),
    ("kstep:0", "K must be an integer >= 1, got '0'"),
    ("kstep:5:sometimes", "kstep mode must be 'carry' or 'reset', got 'sometimes'"),
    ("soft-q-learning:steps", "option 'steps' is not key=value"),
    ("soft-q-learning:lr=1,lr=2", "option 'lr' given twice"),
    ("sb3", "sb3 needs an algorithm.*'DQN'"),
    ("sb3:HER", ("unknown SB3 algorithm 'HER'; allowed: \\['A2C', 'DDPG', 'DQN', 'PPO', 'SAC', "
                 "'TD3'\\]")),
])
def test_spec_parser_rejects(text, match):
    with pytest.raises(ValueError, match=match) as err:
        parse_follower_spec(text)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, problem, match", [
    ("soft-q-learning", "building", ("soft-q-learning does not apply to BuildingThermalEnv "
                                     "\\(lqr\\); allowed here: \\['exact', 'kstep', 'sb3'\\]")),
    ("kstep:3", "lqr_game", ("kstep does not apply to LQRGameEnv \\(lqr-game\\); allowed here: "
                             "\\['exact'\\]")),
    ("sb3:DQN", "toy_game", "sb3 does not apply to ToyGameEnv"),
    ("kstep:3:form=magic", "four_rooms", "form must be one of \\('paper', 'official'\\)"),
    ("kstep:3:bootstrap=paper", "four_rooms", ("unknown kstep \\(tabular\\) option\\(s\\) "
                                               "\\['bootstrap'\\]; allowed: \\['backups'")),
    ("kstep:3:form=official", "building", "unknown kstep \\(lqr\\) option\\(s\\) \\['form'\\]"),
    ("soft-q-learning:speed=2", "four_rooms", ("unknown soft-q-learning option\\(s\\) "
                                               "\\['speed'\\]; allowed: \\[")),
    ("soft-q-learning:lr=2", "four_rooms", "lr must be a finite number in \\[0, 1\\]"),
    ("soft-q-learning:steps=1.5", "four_rooms", "steps_per_leader_update must be an integer"),
    ("exact:solver=magic", "four_rooms", "solver must be one of \\('newton', 'value_iteration'\\)"),
    ("exact:speed=2", "four_rooms", "unexpected keyword argument 'speed'"),
])
def test_make_follower_rejects(text, problem, match):
    factories = {"four_rooms": lambda: gym.make("BiLevel/FourRooms-v0"),
                 "building": lambda: gym.make("BiLevel/BuildingThermal-v0"),
                 "toy_game": lambda: toy_game_v0.env(), "lqr_game": lambda: lqr_game_v0.env()}
    prob = factories[problem]()
    with pytest.raises(ValueError, match=match) as err:
        make_follower(text, prob, 0.1)
    assert "\n" not in str(err.value) and str(err.value).startswith(f"follower spec {text!r}")


@pytest.mark.parametrize("text, match", [
    ("sb3:SAC",
     ("sb3:SAC does not support the Discrete action space of FourRoomsEnv; allowed here: "
      "\\['A2C', 'DQN', 'PPO'\\]")),
    ("sb3:DQN:lerning_starts=0",
     "sb3:DQN: unknown argument\\(s\\) \\['lerning_starts'\\]; allowed: follower options"),
])
def test_make_follower_rejects_sb3(sb3, text, match):
    with pytest.raises(ValueError, match=match) as err:
        make_follower(text, gym.make("BiLevel/FourRooms-v0"), 0.1)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="sb3:DQN does not support the Box action space"):
        make_follower("sb3:DQN", gym.make("BiLevel/BuildingThermal-v0"), 0.1)


def test_wrappers_reject_a_follower_of_another_temperature():
    env = gym.make("BiLevel/FourRooms-v0")
    with pytest.raises(ValueError, match="follower.beta=0.1 differs from beta=0.05"):
        BestResponse(env, 0.05, follower=make_follower("kstep:2", env, 0.1))
    with pytest.raises(ValueError, match="follower.beta=0.1 differs from beta=0.05"):
        GameBestResponse(toy_game_v0.env(), 0.05, follower=make_follower("exact",
                                                                         toy_game_v0.env(), 0.1))


def test_make_follower_builds_the_documented_classes():
    fr, bt = gym.make("BiLevel/FourRooms-v0"), gym.make("BiLevel/BuildingThermal-v0")
    assert type(make_follower("exact", fr, 0.1)) is TabularSoftFollower
    assert type(make_follower("exact", bt, 0.1)) is MaxEntLQRFollower
    f = make_follower("kstep:5:reset:form=official,backups=3", fr, 0.1, seed=1)
    assert (type(f), f.k, f.start, f.form, f.backups) == (KStepSoftFollower, 5, "reset",
                                                          "official", 3)
    assert type(make_follower("kstep:5", bt, 0.1)) is KStepMaxEntLQRFollower
    toy = make_follower("kstep:7:reset:bootstrap=official", toy_game_v0.env(), 0.05, seed=0)
    assert (type(toy), toy.k, toy.bootstrap) == (KStepSoftQIterationFollower, 7, "official")
    assert make_follower("exact:bootstrap=official", toy_game_v0.env(), 0.05).bootstrap == \
        "official"
    sql = make_follower("soft-q-learning:steps=123,publish=false,lr_decay=0.1", fr, 0.1)
    assert (sql.steps_per_leader_update, sql.publish, sql.lr_decay) == (123, False, 0.1)
    # a wrapper is accepted as the problem too
    br = BestResponse(fr, 0.1)
    assert type(make_follower("kstep:2", br, 0.1)) is KStepSoftFollower


def test_a_follower_list_keeps_the_commas_of_a_specs_options():
    from bilevel_envs.followers.specs import split_follower_list

    assert split_follower_list("exact,soft-q-learning:steps=450,epsilon=0.2,kstep:5:reset") == [
        "exact", "soft-q-learning:steps=450,epsilon=0.2", "kstep:5:reset"]
    assert split_follower_list("sb3:DQN:learning_starts=0,steps=48") == [
        "sb3:DQN:learning_starts=0,steps=48"]
