"""Contextual Four-Rooms (HPGD, Thoma et al. 2024): conformance, the default env unchanged,
model vs simulator, goal masking, reference values, exact hypergradient, contexts."""

from __future__ import annotations

import hashlib
import pickle

import gymnasium as gym
import numpy as np
import pytest
import torch

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_agents.exact import hypergradient, leader_objective, leader_values
from bilevel_envs.envs.four_rooms import FourRoomsEnv
from bilevel_envs.testing import check_configurable_env
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/ContextualFourRooms-v0"
UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def make(**kwargs) -> FourRoomsEnv:
    return gym.make(ENV_ID, disable_env_checker=True, **kwargs).unwrapped


def softmax(x):
    z = np.exp(x - x.max())
    return z / z.sum()


def no_incentive():
    return np.r_[np.zeros(104), 1e3]


# ---------------------------------------------------------------------- conformance
def test_conformance():
    check_configurable_env(ENV_ID, beta=0.003)


def test_registered_defaults():
    env = gym.make(ENV_ID)
    assert env.spec.max_episode_steps == 200
    u = env.unwrapped
    assert u.goals == ((1, 9), (11, 11)) and u.n_contexts == 2
    assert u.n_cells == 104 and u.n_states == 208
    assert u.observation_space == gym.spaces.Discrete(208)
    assert u.config_space.shape == (105,)
    assert u.penalty_weight == 1.0 and u.incentive_budget == 0.2
    assert u.slip_prob == u.simulator_slip_prob == 0.44  # one consistent model: HPGD's matrix
    assert u.gamma_follower == u.gamma_leader == 0.99
    np.testing.assert_array_equal(u.goal_states, [7, 104 + 103])
    np.testing.assert_array_equal(u.start_states, [31, 104 + 31])
    np.testing.assert_array_equal(u.target_states, [66, 104 + 66])
    assert tuple(u.cells[u.start_cell]) == (4, 1) and tuple(u.cells[u.target_cell]) == (8, 4)
    assert u.context is None
    s = np.array([0, 31, 103, 104, 135, 207])
    np.testing.assert_array_equal(u.state_context(s), [0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(u.state_cell(s), [0, 31, 103, 0, 31, 103])


# ---------------------------------------------------------------------- the default is unchanged
#: recorded with the code before contexts existed (same seeds, same sampling)
OLD_DEFAULT_OBS = [31, 20, 10, 0, 0, 0, 0, 1, 11, 1, 1, 2, 3, 13, 23, 24, 25, 25, 25, 25, 25, 26,
                   27, 26, 36, 36, 37, 27, 37, 27, 37, 36, 46, 46, 47, 53, 54, 62, 70, 69, 68, 68,
                   68, 68, 78, 78, 79, 69, 70, 62, 70, 80, 79, 90, 79, 90, 89, 90, 89, 90, 91]
OLD_DEFAULT_MODEL_SHA256 = "860e1e92d1b89fd8a95716ec468b0385170808d3c5126b83a5bd5e0c1d226827"


def _model_digest(model) -> str:
    P = model.transitions
    parts = (P.indptr.astype(np.int64), P.indices.astype(np.int64), P.data, model.mu0,
             model.terminal)
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in parts)).hexdigest()


def test_default_four_rooms_unchanged():
    env = gym.make("BiLevel/FourRooms-v0")
    assert env.spec.kwargs == {}
    u = env.unwrapped
    assert u.n_contexts == 1 and u.goals == ((1, 9),) and u.n_states == 104
    assert u.observation_space == gym.spaces.Discrete(104) and u.config_space.shape == (105,)
    assert (u.start_state, u.goal_state, u.target_state) == (31, 7, 66)
    assert _model_digest(u.tabular_model()) == OLD_DEFAULT_MODEL_SHA256
    env.action_space.seed(3)
    obs = [int(env.reset(seed=3)[0])]
    for _ in range(60):
        o, _r, term, trunc, _info = env.step(env.action_space.sample())
        obs.append(int(o))
        if term or trunc:
            obs.append(int(env.reset()[0]))
    assert obs == OLD_DEFAULT_OBS


@pytest.mark.parametrize("kwargs", [{}, {"slip_prob": 0.44, "simulator_slip_prob": 1 / 3},
                                    {"size": 15}])
def test_explicit_single_goal_is_the_default(kwargs):
    """``goals=[G]`` with the layout's goal builds the very same env as the default."""
    default = FourRoomsEnv(**kwargs)
    cell = lambda s: tuple(int(x) for x in default.cells[s])  # noqa: E731
    explicit = FourRoomsEnv(goals=[cell(default.goal_state)], start=cell(default.start_state),
                            **kwargs)
    theta = np.random.default_rng(0).normal(0.0, 1.0, default.config_space.shape)
    a, b = default.tabular_model(theta), explicit.tabular_model(theta)
    for x, y in ((a.transitions, b.transitions), (default.sampling_transitions(),
                                                  explicit.sampling_transitions())):
        assert (x != y).nnz == 0
    for name in ("r_follower", "r_leader", "mu0", "terminal"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    np.testing.assert_array_equal(default.move_table, explicit.move_table)
    rng1, rng2 = np.random.default_rng(5), np.random.default_rng(5)
    np.testing.assert_array_equal(default.sample_initial_states(10, rng1),
                                  explicit.sample_initial_states(10, rng2))
    assert rng1.random() == rng2.random()  # one context: no draw consumed


# ---------------------------------------------------------------------- model
def test_contextual_model_is_two_single_goal_problems():
    """Block k of the contextual model is the single-goal problem with goal G_k (the other goal
    cell keeping its incentive), so per-context values and policies agree."""
    env = make(penalty_weight=3.0)
    theta = np.random.default_rng(1).normal(0.0, 1.0, 105)
    model = env.tabular_model(theta)
    P = model.P
    assert P[:104, :, 104:].sum() == 0 and P[104:, :, :104].sum() == 0  # context kept
    np.testing.assert_array_equal(model.terminal, np.isin(np.arange(208), [7, 207]))
    np.testing.assert_array_equal(np.flatnonzero(model.mu0), [31, 135])
    np.testing.assert_allclose(model.mu0[[31, 135]], 0.5)
    br = BestResponse(gym.make(ENV_ID, penalty_weight=3.0), beta=0.005)
    br.set_config(theta)
    _, v_l = leader_values(model, br.policy, 0.99)
    for k, goal in enumerate([(1, 9), (11, 11)]):
        single = BestResponse(gym.make("BiLevel/FourRooms-v0", goals=[goal], slip_prob=0.44,
                                       penalty_weight=3.0), beta=0.005)
        single.set_config(theta)
        m1 = single.problem.tabular_model()
        block = slice(104 * k, 104 * (k + 1))
        np.testing.assert_array_equal(P[block, :, block], m1.P)
        np.testing.assert_array_equal(model.r_follower[block], m1.r_follower)
        np.testing.assert_array_equal(model.r_leader[block], m1.r_leader)
        np.testing.assert_allclose(br.policy[block], single.policy, atol=1e-9)
        j_k = env.context_mu0(k) @ v_l
        assert j_k == pytest.approx(leader_objective(single), abs=1e-9)
    assert leader_objective(br) == pytest.approx(
        np.mean([env.context_mu0(k) @ v_l for k in range(2)]), abs=1e-12)


def test_masking_of_the_current_goal_only():
    env = make(penalty_weight=3.0)
    theta = np.zeros(105)
    g1, g2 = env.cell_index[1, 9], env.cell_index[11, 11]
    theta[[g1, g2]] = 2.0
    p = softmax(theta)
    model = env.tabular_model(theta)
    rf, rl = model.r_follower[:, 0], model.r_leader[:, 0]
    # context 0 (goal (1, 9)): its goal pays 1, the other goal cell keeps its incentive
    assert rf[g1] == 1.0 and rf[g2] == pytest.approx(-0.2 * p[g2])
    # context 1 (goal (11, 11))
    assert rf[104 + g2] == 1.0 and rf[104 + g1] == pytest.approx(-0.2 * p[g1])
    penalty = 3.0 * 0.2 * (1 - p[-1])  # the full 104-vector's mass, goal slot included
    assert rl[g1] == pytest.approx(-penalty) and rl[104 + g2] == pytest.approx(-penalty)
    assert rl[g2] == 0.0 and rl[104 + g1] == 0.0
    assert rl[66] == rl[104 + 66] == 1.0
    other = np.ones(208, dtype=bool)
    other[[g1, 104 + g2]] = False
    np.testing.assert_allclose(rf[other], -0.2 * p[env.state_cell(np.flatnonzero(other))])
    # torch tables and the closed-form VJP agree with autograd
    th = torch.tensor(theta, requires_grad=True)
    tf, tl = env.tabular_rewards_torch(th)
    np.testing.assert_allclose(tf.detach().numpy(), model.r_follower, atol=1e-15)
    np.testing.assert_allclose(tl.detach().numpy(), model.r_leader, atol=1e-15)
    rng = np.random.default_rng(0)
    cf, cl = rng.normal(size=(208, 4)), rng.normal(size=(208, 4))
    (auto,) = torch.autograd.grad((torch.tensor(cf) * tf).sum() + (torch.tensor(cl) * tl).sum(),
                                  th)
    np.testing.assert_allclose(env.tabular_rewards_vjp(theta, cf, cl), auto.numpy(), atol=1e-14)
    # the simulator pays the table rewards, and each context's goal terminates
    env.set_config(theta)
    np.testing.assert_array_equal(env.incentive, np.where(model.terminal, 0.0, rf))
    s, b = np.repeat(np.arange(208), 4), np.tile(np.arange(4), 208)
    nxt, sf, sl, term = env.transition(s, b, np.random.default_rng(0))
    np.testing.assert_array_equal(sf, model.r_follower.ravel())
    np.testing.assert_array_equal(sl, model.r_leader.ravel())
    np.testing.assert_array_equal(term, np.isin(s, [g1, 104 + g2]))
    np.testing.assert_array_equal(env.state_context(nxt), env.state_context(s))


@pytest.mark.parametrize("sim", [None, 0.33])
def test_tabular_model_matches_simulator_frequencies(sim):
    env = make(simulator_slip_prob=sim)
    S = env.n_states
    P = env.sampling_transitions().toarray().reshape(S, 4, S)
    if sim is None:
        np.testing.assert_array_equal(P, env.tabular_model().P)
    else:  # HPGD's simulator: intended move kept w.p. 0.67, each other 0.11
        s = env.cell_index[2, 2]
        assert P[s, UP, env.cell_index[1, 2]] == pytest.approx(0.67)
        assert P[s, UP, env.cell_index[2, 3]] == pytest.approx(0.11)
    n = 600
    live = np.flatnonzero(~env.terminal)
    s = np.repeat(np.repeat(live, 4), n)
    b = np.tile(np.repeat(np.arange(4), n), len(live))
    nxt, *_, term = env.transition(s, b, np.random.default_rng(0))
    assert not term.any()
    counts = np.bincount((s * 4 + b) * S + nxt, minlength=S * 4 * S).reshape(S, 4, S)[live]
    expected = n * P[live]
    assert counts[expected == 0].sum() == 0
    mask = expected > 0
    chi2 = (((counts - expected) ** 2)[mask] / expected[mask]).sum()
    dof = mask.sum() - mask.any(axis=2).sum()
    assert abs(chi2 - dof) < 6 * np.sqrt(2 * dof), (chi2, dof)


# ---------------------------------------------------------------------- reference values
#: docs/known_optima.md, "Contextual Four-Rooms": (β, λ) -> (J at start, J no incentive)
KNOWN = {(0.001, 1): (0.288, 0.410), (0.001, 3): (0.014, 0.410), (0.001, 5): (-0.261, 0.410),
         (0.003, 1): (0.200, 0.321), (0.003, 3): (-0.068, 0.321), (0.003, 5): (-0.336, 0.321),
         (0.005, 1): (0.182, 0.299), (0.005, 3): (-0.057, 0.299), (0.005, 5): (-0.297, 0.299)}


@pytest.mark.parametrize("beta, lam", sorted(KNOWN))
def test_known_optima_start_and_no_incentive(beta, lam):
    """J = ½(J_G1 + J_G2) with HPGD's matrix (slip 0.44): θ = 0 (the centre of HPGD's
    N(0, 0.01²) start) and all mass on the unused slot, within 1e-3 of the table."""
    start, none = KNOWN[(beta, lam)]
    br = BestResponse(gym.make(ENV_ID, penalty_weight=float(lam)), beta=beta)
    assert leader_objective(br, np.zeros(105)) == pytest.approx(start, abs=1e-3)
    assert leader_objective(br, no_incentive()) == pytest.approx(none, abs=1e-3)
    jitter = np.random.default_rng(0).normal(0.0, 0.01, 105)  # HPGD's flax normal() init
    assert leader_objective(br, jitter) == pytest.approx(start, abs=3e-3)


def test_hypergradient_matches_finite_differences():
    br = BestResponse(gym.make(ENV_ID, penalty_weight=3.0), beta=0.005)
    theta = np.random.default_rng(0).normal(0.0, 1.0, 105)
    grad = hypergradient(br, theta)
    u = br.problem
    coords = [*np.argsort(-np.abs(grad))[:3], 104, u.cell_index[1, 9], u.cell_index[11, 11]]
    h = 1e-5
    for i in coords:
        e = np.zeros(105)
        e[i] = h
        fd = (leader_objective(br, theta + e) - leader_objective(br, theta - e)) / (2 * h)
        assert grad[i] == pytest.approx(fd, rel=1e-5, abs=1e-9), i
    np.testing.assert_array_equal(br.config, np.zeros(105))  # θ restored


# ---------------------------------------------------------------------- contexts
def test_set_context_restricts_starts():
    env = make()
    rng = np.random.default_rng(0)
    both = env.sample_initial_states(4000, rng)
    assert set(both.tolist()) == {31, 135}
    assert abs((both == 135).mean() - 0.5) < 0.03
    env.set_context(1)
    assert env.context == 1
    np.testing.assert_array_equal(env.sample_initial_states(50, rng), 135)
    assert all(env.reset(seed=s)[0] == 135 for s in range(5))
    env.set_context(np.int64(0))
    np.testing.assert_array_equal(env.sample_initial_states(50, rng), 31)
    env.set_context(None)
    assert env.context is None
    for bad in (2, -1, 1.0, True, "1"):
        with pytest.raises(ValueError, match="context"):
            env.set_context(bad)
        with pytest.raises(ValueError, match="context"):
            env.context_mu0(bad)
    assert env.context is None
    np.testing.assert_array_equal(env.context_mu0(None), env.tabular_model().mu0)
    np.testing.assert_array_equal(np.flatnonzero(env.context_mu0(1)), [135])


@pytest.mark.parametrize("n_envs", [1, 50])  # the scalar walk and the numpy rollout
def test_rollouts_stay_in_the_set_context(n_envs):
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    u = br.problem
    model_before, j_before = u.tabular_model(), leader_objective(br)
    for k in (0, 1):
        u.set_context(k)
        batch = br.rollout(4000, n_envs, seed=k)
        starts = batch.obs[batch.time == 0]
        assert len(starts) > n_envs  # restarts happened
        np.testing.assert_array_equal(starts, u.start_states[k])
        assert np.all(u.state_context(batch.obs) == k)
        assert np.all(u.state_context(batch.next_obs) == k)
        assert batch.terminated.any()
        assert np.all(batch.obs[batch.terminated] == u.goal_states[k])
        # the model, the follower and the exact objective do not depend on the context
        np.testing.assert_array_equal(u.tabular_model().mu0, model_before.mu0)
        assert leader_objective(br) == j_before
    u.set_context(None)
    batch = br.rollout(4000, n_envs, seed=3)
    assert set(u.state_context(batch.obs[batch.time == 0]).tolist()) == {0, 1}


def test_context_survives_pickling_and_reset_through_the_wrapper():
    env = gym.make(ENV_ID)
    env.unwrapped.set_context(1)
    clone = pickle.loads(pickle.dumps(env))
    assert clone.unwrapped.context == 1
    assert clone.reset(seed=0)[0] == 135
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    br.problem.set_context(1)
    assert br.reset(seed=0)[0] == 135


def test_goal_of_the_second_context_terminates_with_penalty():
    env = gym.make(ENV_ID, slip_prob=0.0)
    u = env.unwrapped
    u.set_context(1)
    theta = np.random.default_rng(2).normal(0.0, 1.0, 105)
    p = softmax(theta)
    obs, _ = env.reset(seed=0, options={"config": theta})
    assert obs == 135
    # S → left door (6, 2) → row 10 → bottom door (10, 6) → (10, 11) → (11, 11)
    path = [RIGHT] + [DOWN] * 6 + [RIGHT] * 9 + [DOWN]
    for a in path:
        obs, r, term, trunc, info = env.step(a)
        assert not term and type(r) is float and type(info["leader_reward"]) is float
    assert obs == 104 + u.cell_index[11, 11]
    obs, r, term, trunc, info = env.step(UP)
    assert term and r == 1.0
    assert info["leader_reward"] == pytest.approx(-1.0 * 0.2 * (1 - p[-1]))


def test_render_shows_the_current_goal():
    env = make(render_mode="ansi")
    for k, (cur, other) in enumerate([((1, 9), (11, 11)), ((11, 11), (1, 9))]):
        env.set_context(k)
        env.reset(seed=0)
        rows = env.render().rstrip("\n").split("\n")
        assert rows[cur[0]][cur[1]] == "G" and rows[other[0]][other[1]] == "g"
        assert rows[4][1] == "@" and rows[8][4] == "T"
    env = make(render_mode="rgb_array")
    env.set_context(1)
    env.reset(seed=0)
    img = env.render()
    assert img.shape == (13 * 16, 13 * 16, 3)

    def centre(r, c):
        return tuple(img[r * 16 + 2, c * 16 + 2].astype(int))

    assert centre(11, 11) == (40, 170, 70) and centre(1, 9) == (160, 220, 170)
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    pic = env.render_rgb(env.incentive, policy=br.policy, context=0)
    assert pic.shape == img.shape and tuple(pic[1 * 16 + 2, 9 * 16 + 2]) == (40, 170, 70)


@pytest.mark.parametrize("kwargs, name", [
    ({"goals": []}, "goals"),
    ({"goals": (1, 9)}, "goals"),
    ({"goals": [(0, 0)]}, "goals"),
    ({"goals": [(1, 6)]}, "goals"),  # the vertical wall
    ({"goals": [(1, 9), (1, 9)]}, "goals"),
    ({"goals": [(1, 9, 0)]}, "goals"),
    ({"goals": [(1.0, 9)]}, "goals"),
    ({"goals": [(True, 9)]}, "goals"),
    ({"goals": "ab"}, "goals"),
    ({"goals": [(20, 1)]}, "goals"),
    ({"start": (0, 1)}, "start"),
    ({"simulator_slip_prob": 1.2}, "simulator_slip_prob"),
    ({"penalty_weight": -1.0}, "penalty_weight"),
])
def test_bad_kwargs_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        FourRoomsEnv(**kwargs)
