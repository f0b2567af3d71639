"""Four-Rooms configurable MDP: conformance, map facts, model vs simulator, rewards, bad input."""

from __future__ import annotations

import itertools
import pickle
import warnings

import gymnasium as gym
import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.sparse as sp
import torch
from scipy.sparse.csgraph import breadth_first_order

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_envs.envs.four_rooms import FourRoomsEnv, four_rooms_layout
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/FourRooms-v0"
BILEVEL_IDS = sorted(env_id for env_id in gym.registry if env_id.startswith("BiLevel/"))

# The authors' map: x wall, . free, d corridor.
PAPER_MAP = """\
xxxxxxxxxxxxx
x.....x..G..x
x.....x.....x
x.....d.....x
xS....x.....x
x.....x.....x
xxdxxxx.....x
x.....xxxdxxx
x...T.x.....x
x.....x.....x
x.....d.....x
x.....x.....x
xxxxxxxxxxxxx"""

UP, RIGHT, DOWN, LEFT = 0, 1, 2, 3


def make(**kwargs) -> FourRoomsEnv:
    return gym.make(ENV_ID, disable_env_checker=True, **kwargs).unwrapped


def random_theta(env, seed=0, scale=1.0):
    return np.random.default_rng(seed).normal(0.0, scale, env.config_space.shape)


def softmax(x):
    z = np.exp(x - x.max())
    return z / z.sum()


# ---------------------------------------------------------------------- conformance
def test_registry_has_four_rooms():
    assert ENV_ID in BILEVEL_IDS


def test_four_rooms_trajectories_use_slip():
    """Same actions, different seeds → different paths (the slip is random and seeded)."""
    paths = []
    for seed in (0, 0, 1):
        env = gym.make(ENV_ID)
        env.reset(seed=seed)
        paths.append([env.step(RIGHT)[0] for _ in range(40)])
    assert paths[0] == paths[1] and paths[0] != paths[2]


def test_best_response_pickles():
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    br.set_config(random_theta(br, 1))
    br.reset(seed=2)
    clone = pickle.loads(pickle.dumps(br))
    assert isinstance(clone, BestResponse)
    np.testing.assert_array_equal(clone.config, br.config)
    np.testing.assert_array_equal(clone.policy, br.policy)
    np.testing.assert_array_equal(clone.soft_q, br.soft_q)
    assert [br.follower_action(31) for _ in range(50)] == \
        [clone.follower_action(31) for _ in range(50)]
    b1, b2 = br.rollout(400, 4, seed=5), clone.rollout(400, 4, seed=5)
    for x, y in zip(b1, b2, strict=True):
        np.testing.assert_array_equal(x, y)
    # the clone is independent
    clone.set_config(np.zeros(105))
    assert not np.array_equal(clone.config, br.config)


def test_best_response_spec_recreates_the_same_follower():
    br = BestResponse(gym.make(ENV_ID, slip_prob=0.44), beta=0.003, solver="value_iteration",
                      max_iterations=5)
    clone = gym.make(br.spec)
    assert isinstance(clone, BestResponse) and clone.beta == 0.003
    assert clone.unwrapped.slip_prob == 0.44
    assert clone.follower.max_iterations == 5 and clone.follower.solver == "value_iteration"
    np.testing.assert_array_equal(clone.soft_q, br.soft_q)


def test_vector_envs():
    for mode in ("sync", "async"):
        envs = gym.make_vec(ENV_ID, num_envs=2, vectorization_mode=mode)
        obs, _ = envs.reset(seed=0)
        np.testing.assert_array_equal(obs, [31, 31])
        obs, rew, _term, _trunc, info = envs.step(np.array([0, 1]))
        assert obs.shape == (2,) and rew.shape == (2,)
        assert "leader_reward" in info
        envs.close()


# ---------------------------------------------------------------------- map
def test_paper_map_facts():
    env = make()
    grid = np.array([list(row) for row in PAPER_MAP.splitlines()])
    np.testing.assert_array_equal(env.wall, grid == "x")
    assert env.n_states == 104 == env.observation_space.n
    assert env.action_space == gym.spaces.Discrete(4)
    assert env.config_space.shape == (105,)
    assert (env.start_state, env.goal_state, env.target_state) == (31, 7, 66)
    assert tuple(env.cells[31]) == (4, 1)
    assert tuple(env.cells[7]) == (1, 9)
    assert tuple(env.cells[66]) == (8, 4)
    # row-major ranks of the free cells
    np.testing.assert_array_equal(env.cells, np.argwhere(grid != "x"))
    for r, c in [(3, 6), (6, 2), (7, 9), (10, 6)]:
        assert not env.wall[r, c]
    assert env.gamma_follower == env.gamma_leader == 0.99
    assert gym.make(ENV_ID).spec.max_episode_steps == 200


def test_moves_and_walls():
    env = make()
    idx = env.cell_index
    s = idx[4, 1]  # S: wall on the left
    assert env.move_table[s, LEFT] == s
    assert env.move_table[s, RIGHT] == idx[4, 2]
    assert env.move_table[s, UP] == idx[3, 1]
    assert env.move_table[s, DOWN] == idx[5, 1]
    door = idx[3, 6]  # the top corridor connects left and right rooms only
    assert env.move_table[door, UP] == door and env.move_table[door, DOWN] == door
    assert env.move_table[door, LEFT] == idx[3, 5] and env.move_table[door, RIGHT] == idx[3, 7]
    assert env.move_table[idx[6, 7], DOWN] == idx[6, 7]  # wall below the top-right room
    assert env.move_table[idx[6, 9], DOWN] == idx[7, 9]  # right corridor


def _rooms_connected(wall):
    _labels, n = ndi.label(~wall)  # 4-connectivity
    return n == 1


@pytest.mark.parametrize("size", [13, 15, 17, 21, 25, 41, 103, 301])
def test_layout_sane_for_sizes(size):
    lay = four_rooms_layout(size)
    wall = lay["wall"]
    mid = (size - 1) // 2
    assert wall.shape == (size, size)
    assert wall[0].all() and wall[-1].all() and wall[:, 0].all() and wall[:, -1].all()
    assert _rooms_connected(wall)
    # exactly four doors; closing them splits the map into four rooms
    doors = [(r, mid) for r in range(1, size - 1) if not wall[r, mid]]
    doors += [(mid, c) for c in range(1, mid) if not wall[mid, c]]
    doors += [(mid + 1, c) for c in range(mid + 1, size - 1) if not wall[mid + 1, c]]
    assert len(doors) == 4
    closed = wall.copy()
    for d in doors:
        closed[d] = True
    labels, n_rooms = ndi.label(~closed)
    assert n_rooms == 4
    s, g, t = lay["start"], lay["goal"], lay["target"]
    assert len({labels[s], labels[g], labels[t]}) == 3  # S, G, T in three different rooms
    assert s[1] < mid and s[0] < mid  # top-left
    assert g[1] > mid and g[0] < mid  # top-right
    assert t[1] < mid and t[0] > mid  # bottom-left


def test_all_sizes_connected():
    for size in range(13, 302, 2):
        assert _rooms_connected(four_rooms_layout(size)["wall"]), size


def test_size_103_has_about_ten_thousand_states():
    env = make(size=103)
    assert 9_000 <= env.n_states <= 11_000
    model = env.tabular_model()
    assert model.transitions.shape == (env.n_states * 4, env.n_states)
    assert model.transitions.nnz <= env.n_states * 4 * 4  # sparse: ≤ 4 successors per (s, b)
    np.testing.assert_allclose(model.transitions.sum(axis=1), 1.0, atol=1e-12)
    assert env.config_space.shape == (env.n_states + 1,)
    # every state reachable from S through the move graph
    succ = env.move_table  # (S, 4)
    graph = sp.csr_array((np.ones(succ.size), (np.repeat(np.arange(env.n_states), 4),
                                                succ.ravel())), shape=(env.n_states,) * 2)
    order = breadth_first_order(graph, env.start_state, directed=True,
                                return_predecessors=False)
    assert len(order) == env.n_states
    obs, _ = env.reset(seed=0)
    assert obs == env.start_state
    obs, *_ = env.step(0)
    assert env.observation_space.contains(obs)


# ---------------------------------------------------------------------- model vs simulator
@pytest.mark.parametrize("slip, sim", [(1 / 3, None), (0.44, None), (0.0, None), (0.44, 1 / 3)])
def test_tabular_model_matches_simulator_frequencies(slip, sim):
    env = make(slip_prob=slip, simulator_slip_prob=sim)
    model = env.tabular_model()
    S = env.n_states
    P = env.sampling_transitions().toarray().reshape(S, 4, S)
    if sim is None:
        np.testing.assert_array_equal(P, model.P)
    np.testing.assert_allclose(P.sum(axis=2), 1.0, atol=1e-12)
    n = 1500
    nonterminal = np.flatnonzero(~model.terminal)
    s = np.repeat(np.repeat(nonterminal, 4), n)
    b = np.tile(np.repeat(np.arange(4), n), len(nonterminal))
    nxt, *_ , term = env.transition(s, b, np.random.default_rng(0))
    assert not term.any()
    counts = np.bincount((s * 4 + b) * S + nxt, minlength=S * 4 * S).reshape(S, 4, S)
    expected = n * P[nonterminal]
    observed = counts[nonterminal]
    assert observed[expected == 0].sum() == 0  # never lands where the model says impossible
    mask = expected > 0
    chi2 = (((observed - expected) ** 2)[mask] / expected[mask]).sum()
    dof = mask.sum() - mask.any(axis=2).sum()  # support − 1 per (s, b) row
    if dof == 0:  # deterministic model: all mass on the single successor
        assert chi2 == 0
    else:
        assert chi2 < dof + 6 * np.sqrt(2 * dof), (chi2, dof)
        assert chi2 > dof - 6 * np.sqrt(2 * dof), (chi2, dof)  # not suspiciously exact


@pytest.mark.parametrize("n_envs", [1, 50])  # scalar walk and numpy rollout
def test_authors_mismatched_simulator(n_envs):
    """slip_prob=0.44 + simulator_slip_prob=1/3 (the authors' code): the follower and the exact
    objective use the 0.44 model, the samples keep the intended move w.p. 2/3."""
    from bilevel_agents.exact import leader_objective

    br = BestResponse(gym.make(ENV_ID, slip_prob=0.44, simulator_slip_prob=1 / 3), beta=10.0)
    ref = BestResponse(gym.make(ENV_ID, slip_prob=0.44), beta=10.0)
    u = br.problem
    np.testing.assert_array_equal(u.tabular_model().P, ref.problem.tabular_model().P)
    np.testing.assert_allclose(br.policy, ref.policy)
    assert leader_objective(br) == pytest.approx(leader_objective(ref))
    batch = br.rollout(40_000, n_envs, seed=0)
    open_all = (u.move_table != np.arange(u.n_states)[:, None]).all(axis=1) & ~u.terminal
    k = open_all[batch.obs]
    kept = batch.next_obs[k] == u.move_table[batch.obs[k], batch.actions[k]]
    assert k.sum() > 10_000
    assert abs(kept.mean() - 2 / 3) < 4 * np.sqrt(2 / 9 / k.sum())
    same = ref.rollout(40_000, n_envs, seed=0)
    k2 = open_all[same.obs]
    assert abs((same.next_obs[k2] == u.move_table[same.obs[k2], same.actions[k2]]).mean()
               - 0.56) < 4 * np.sqrt(0.25 / k2.sum())
    with pytest.raises(ValueError, match="simulator_slip_prob"):
        make(simulator_slip_prob=1.5)


def test_terminal_goal_step():
    env = make()
    g = env.goal_state
    rng = np.random.default_rng(0)
    nxt, _r_f, _r_l, term = env.transition(np.full(8, g), np.arange(8) % 4, rng)
    assert term.all() and (nxt == g).all()
    assert env.tabular_model().terminal[g] and env.tabular_model().terminal.sum() == 1


def test_slip_044_rows():
    env = make(slip_prob=0.44)
    P = env.tabular_model().P
    idx = env.cell_index
    s = idx[2, 2]  # interior: all four moves open
    nbr = [idx[1, 2], idx[2, 3], idx[3, 2], idx[2, 1]]
    for b in range(4):
        row = P[s, b]
        for b2, t in enumerate(nbr):
            assert row[t] == pytest.approx(0.56 if b2 == b else 0.44 / 3, abs=1e-12)
        assert row.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(0.44 / 3, 0.14667, atol=1e-5)
    corner = idx[1, 1]  # up and left blocked: both stay
    assert P[corner, UP, corner] == pytest.approx(0.56 + 0.44 / 3)
    assert P[corner, RIGHT, corner] == pytest.approx(2 * 0.44 / 3)
    assert P[corner, RIGHT, idx[1, 2]] == pytest.approx(0.56)
    default = make().tabular_model().P
    assert default[s, UP, nbr[0]] == pytest.approx(2 / 3)
    assert default[s, UP, nbr[1]] == pytest.approx(1 / 9)


# ---------------------------------------------------------------------- rewards
def test_rewards_per_docstring():
    env = make()
    theta = random_theta(env, 7, scale=2.0)
    p = softmax(theta)
    model = env.tabular_model(theta)
    g, t = env.goal_state, env.target_state
    inc = -0.2 * p[:104]
    inc[g] = 0.0
    r_f = inc + (np.arange(104) == g)
    r_l = (np.arange(104) == t) - 5.0 * (np.arange(104) == g) * 0.2 * (1 - p[-1])
    np.testing.assert_allclose(model.r_follower, np.repeat(r_f[:, None], 4, 1), atol=1e-15)
    np.testing.assert_allclose(model.r_leader, np.repeat(r_l[:, None], 4, 1), atol=1e-15)
    assert model.r_follower[:, 0].sum() == pytest.approx(1 - 0.2 * (1 - p[-1] - p[g]))
    # the torch tables agree and are differentiable
    th = torch.tensor(theta, requires_grad=True)
    tf, tl = env.tabular_rewards_torch(th)
    np.testing.assert_allclose(tf.detach().numpy(), model.r_follower, atol=1e-15)
    np.testing.assert_allclose(tl.detach().numpy(), model.r_leader, atol=1e-15)
    (grad,) = torch.autograd.grad(tl[g, 0], th)
    # ∂/∂θ_last of −(1 − p_last) = p_last (1 − p_last)
    assert grad[-1].item() == pytest.approx(p[-1] * (1 - p[-1]), rel=1e-10)
    # tabular_model(θ) does not change the current config
    np.testing.assert_array_equal(env.config, np.zeros(105))
    # the simulator pays the same rewards as the model (state where the action is taken)
    env.set_config(theta)
    states = np.arange(104).repeat(4)
    actions = np.tile(np.arange(4), 104)
    _, sf, sl, _ = env.transition(states, actions, np.random.default_rng(0))
    np.testing.assert_allclose(sf, model.r_follower.ravel(), atol=0)
    np.testing.assert_allclose(sl, model.r_leader.ravel(), atol=0)
    # per-sample torch terms
    np.testing.assert_allclose(
        env.follower_reward_torch(th, torch.tensor(states), torch.tensor(actions)).detach(),
        sf, atol=1e-15)


def _walk(env, actions):
    out = []
    for a in actions:
        out.append(env.step(a))
    return out


def test_info_leader_reward_along_deterministic_walks():
    theta = random_theta(make(), 3, scale=1.5)
    p = softmax(theta)
    env = gym.make(ENV_ID, slip_prob=0.0)
    env.reset(seed=0, options={"config": theta})
    u = env.unwrapped
    # S → left door → T, then one step taken in T
    steps = _walk(env, [RIGHT, DOWN, DOWN, DOWN, DOWN, RIGHT, RIGHT])
    assert u._state == u.target_state
    for obs, r, term, trunc, info in steps:
        assert type(r) is float and type(info["leader_reward"]) is float
        assert term is False and trunc is False
        assert info["leader_reward"] == 0.0
    infos = [s[4] for s in steps]
    assert all(a is not b for a, b in itertools.pairwise(infos))  # fresh dict each step
    cells = [u.start_state] + [s[0] for s in steps[:-1]]
    for cell, (_, r, *_rest) in zip(cells, steps):
        assert r == pytest.approx(-0.2 * p[cell])
    obs, r, term, trunc, info = env.step(UP)
    assert info["leader_reward"] == 1.0 and r == pytest.approx(-0.2 * p[u.target_state])
    # S → top door → G, then the step in G pays 1 and terminates
    env.reset(seed=1)
    _walk(env, [UP] + [RIGHT] * 6 + [UP, UP, RIGHT, RIGHT])
    assert u._state == u.goal_state
    obs, r, term, trunc, info = env.step(DOWN)
    assert term is True and trunc is False and obs == u.goal_state
    assert r == 1.0
    assert info["leader_reward"] == pytest.approx(-5 * 0.2 * (1 - p[-1]))


def test_time_limit_truncates_at_200():
    env = gym.make(ENV_ID, slip_prob=0.0)
    env.reset(seed=0)
    for k in range(200):
        obs, _r, term, trunc, _info = env.step(LEFT)  # S is against the left wall
        assert obs == env.unwrapped.start_state and not term
        assert trunc == (k == 199)


# ---------------------------------------------------------------------- θ plumbing
def test_config_via_set_config_and_reset_options():
    env = make()
    theta = random_theta(env, 1)
    env.set_config(theta)
    np.testing.assert_array_equal(env.config, theta)
    theta2 = random_theta(env, 2)
    env.reset(options={"config": theta2})
    np.testing.assert_array_equal(env.config, theta2)
    env.reset()  # no options: θ kept
    np.testing.assert_array_equal(env.config, theta2)
    c = env.config
    c[:] = 0  # a copy
    np.testing.assert_array_equal(env.config, theta2)
    np.testing.assert_allclose(env.incentive[np.arange(104) != 7],
                               -0.2 * softmax(theta2)[:104][np.arange(104) != 7])


def test_best_response_reset_with_config_resolves():
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    theta = random_theta(br, 4, scale=3.0)
    before = br.policy.copy()
    br.reset(seed=0, options={"config": theta})
    fresh = BestResponse(gym.make(ENV_ID), beta=0.005)
    fresh.set_config(theta)
    assert not np.allclose(before, br.policy)
    np.testing.assert_allclose(br.policy, fresh.policy, atol=1e-8)


# ---------------------------------------------------------------------- rendering
def test_render_ansi():
    env = make(render_mode="ansi")
    theta = np.zeros(105)
    theta[env.cell_index[3, 5]] = 20.0  # all the budget on one cell
    env.reset(seed=0, options={"config": theta})
    text = env.render()
    rows = text.rstrip("\n").split("\n")
    assert len(rows) == 13 and all(len(r) == 13 for r in rows)
    assert rows[4][1] == "@"  # follower on S
    assert rows[1][9] == "G" and rows[8][4] == "T"
    assert rows[0] == "█" * 13 and rows[3][6] == " "
    assert rows[3][5] == "&"  # heaviest incentive shade
    assert text.count("@") == 1
    env.step(RIGHT)
    text = env.render()
    assert "S" in text and text.count("@") == 1


def test_render_rgb_array():
    env = make(render_mode="rgb_array")
    theta = np.zeros(105)
    heavy = env.cell_index[3, 5]
    theta[heavy] = 20.0
    env.reset(seed=0, options={"config": theta})
    img = env.render()
    assert img.dtype == np.uint8 and img.shape == (13 * 16, 13 * 16, 3)

    def centre(r, c):
        return img[r * 16 + 2, c * 16 + 2].astype(int)

    red = centre(3, 5)
    assert red[0] == 255 and red[1] < 50 and red[2] < 50  # heat map
    assert (centre(2, 2) > 240).all()  # no incentive: white
    assert (centre(0, 0) < 60).all()  # wall
    assert not np.array_equal(centre(1, 9), centre(8, 4))  # G and T coloured differently
    pic = env.render_rgb(env.incentive, policy=np.full((104, 4), 0.25))
    assert pic.shape == img.shape
    assert make().render() is None


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [
    (np.zeros(104), "shape"),
    (np.zeros((105, 1)), "shape"),
    (np.full(105, np.nan), "NaN"),
    (np.r_[np.zeros(104), np.inf], "NaN or inf"),
    (np.r_[np.zeros(104), 2e3], "config_space"),
])
def test_bad_theta_raises(bad, match):
    env = make()
    with pytest.raises(ValueError, match=match) as err:
        env.set_config(bad)
    assert "theta" in str(err.value)
    with pytest.raises(ValueError, match="theta"):
        env.reset(options={"config": bad})
    with pytest.raises(ValueError, match="theta"):
        env.tabular_model(bad)
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    with pytest.raises(ValueError, match="theta"):
        br.set_config(bad)
    with pytest.raises(ValueError, match="theta"):
        br.reset(options={"config": bad})
    np.testing.assert_array_equal(env.config, np.zeros(105))
    np.testing.assert_array_equal(br.config, np.zeros(105))


def test_unknown_reset_option_raises_and_changes_nothing():
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    policy = br.policy.copy()
    with pytest.raises(ValueError, match="bogus"):
        br.reset(options={"config": random_theta(br, 0, 3.0), "bogus": 1})
    np.testing.assert_array_equal(br.config, np.zeros(105))  # θ untouched → follower in sync
    np.testing.assert_array_equal(br.policy, policy)
    with pytest.raises(ValueError, match="bogus"):
        make().reset(options={"bogus": 1})


@pytest.mark.parametrize("beta", [0.0, -1e-3, np.nan, np.inf, -np.inf])
def test_bad_beta_raises(beta):
    with pytest.raises(ValueError, match="beta"):
        BestResponse(gym.make(ENV_ID), beta=beta)


def test_best_response_rejects_non_configurable_env():
    with pytest.raises(ValueError, match="env"):
        BestResponse(gym.make("CartPole-v1"), beta=0.1)


def test_unknown_env_kwarg_raises_type_error_naming_it():
    # Python's own error for an unknown keyword; gym.make re-raises it with the env id.
    with pytest.raises(TypeError, match="colour"):
        gym.make(ENV_ID, colour="red")


@pytest.mark.parametrize("kwargs, name", [
    ({"slip_prob": -0.1}, "slip_prob"),
    ({"slip_prob": 1.5}, "slip_prob"),
    ({"slip_prob": np.nan}, "slip_prob"),
    ({"size": 14}, "size"),
    ({"size": 11}, "size"),
    ({"size": 303}, "size"),
    ({"size": 13.0}, "size"),
    ({"size": "13"}, "size"),
    ({"gamma_follower": 1.0}, "gamma_follower"),
    ({"gamma_leader": np.nan}, "gamma_leader"),
    ({"incentive_budget": -0.2}, "incentive_budget"),
    ({"penalty_weight": np.nan}, "penalty_weight"),
    ({"render_mode": "rgb"}, "render_mode"),
    ({"slip_prob": "0.1"}, "slip_prob"),
    ({"incentive_budget": np.inf}, "incentive_budget"),
    ({"penalty_weight": None}, "penalty_weight"),
    ({"gamma_follower": "0.9"}, "gamma_follower"),
])
def test_bad_env_kwargs_raise(kwargs, name):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # gym.make warns about an undeclared render_mode first
        with pytest.raises(ValueError, match=name):
            gym.make(ENV_ID, **kwargs)


@pytest.mark.parametrize("steps", [0, -5, 2.5, "200", True])
def test_bad_max_episode_steps_raises(steps):
    # gym.make(..., max_episode_steps=) sets the TimeLimit; the class kwarg is the problem's own
    with pytest.raises(ValueError, match="max_episode_steps"):
        FourRoomsEnv(max_episode_steps=steps)


@pytest.mark.parametrize("action", [4, -1, 1.0, 2.5, True, np.array([1]), "1", None])
def test_bad_action_raises(action):
    env = make()
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)
    wrapped = gym.make(ENV_ID)
    wrapped.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        wrapped.step(action)


def test_good_actions_accepted():
    env = make()
    env.reset(seed=0)
    for a in (0, np.int64(1), np.int32(2), 3):
        env.step(a)


@pytest.mark.parametrize("kwargs, name", [
    ({"n_transitions": 0}, "n_transitions"),
    ({"n_transitions": -10}, "n_transitions"),
    ({"n_transitions": 10.5}, "n_transitions"),
    ({"n_transitions": 100, "n_envs": 0}, "n_envs"),
    ({"n_transitions": 100, "n_envs": 3}, "n_transitions"),
    ({"n_transitions": 100, "n_envs": 2.0}, "n_envs"),
    ({"n_transitions": 4, "n_envs": 2, "initial_states": np.array([31])}, "initial_states"),
    ({"n_transitions": 2, "n_envs": 2, "initial_states": np.array([31, -1])}, "initial_states"),
    ({"n_transitions": 2, "n_envs": 2, "initial_states": np.array([31, 104])},
     "initial_states"),
    ({"n_transitions": 2, "n_envs": 2, "initial_states": np.array([31.0, 2.0])},
     "initial_states"),
])
def test_bad_rollout_args_raise(kwargs, name):
    br = BestResponse(gym.make(ENV_ID), beta=0.005)
    with pytest.raises(ValueError, match=name):
        br.rollout(**kwargs)


def test_complex_theta_is_rejected():
    env = make()
    with pytest.raises(ValueError, match="must be real"):
        env.set_config(np.zeros(105) + 1j)
