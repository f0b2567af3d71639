"""Tax design (HPGD): conformance of both ids, the economy's formulas, torch terms vs numpy,
the tabular model vs its simulator and vs Monte Carlo, θ-dependent transitions, contexts."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import scipy.stats as st
import torch

import bilevel_envs  # noqa: F401  (registers the ids)
from bilevel_agents.exact import leader_objective, leader_values
from bilevel_envs.envs.tax_design import (ACTION_NVEC, TaxDesignEnv, TaxDesignTabularEnv,
                                          _sample_truncnorm, config_from_rates, decode_actions,
                                          encode_actions, rates_from_config)
from bilevel_envs.testing import check_configurable_env
from bilevel_envs.wrappers import BestResponse

CONT_ID, TAB_ID = "BiLevel/TaxDesign-v0", "BiLevel/TaxDesignTabular-v0"


def make(env_id=CONT_ID, **kwargs):
    return gym.make(env_id, disable_env_checker=True, **kwargs).unwrapped


def random_batch(env, n, seed=0):
    rng = np.random.default_rng(seed)
    states = env.sample_initial_states(n, rng)
    states[:, 0] = rng.uniform(-100, 100, n)
    actions = np.stack([rng.integers(0, k, n) for k in ACTION_NVEC], axis=1)
    return states, actions, rng


# independent restatement of the economy (module docstring), for the formula tests
def u(a, k):
    return k * np.log(a / 20 + 1) if a > 0 else a


def expected_rewards(a, b, alpha, vat, tau):
    h, c = 0.89 * b[0], 1.25 * np.asarray(b[1:], dtype=float)
    r_f = u(a, 1.0) - 0.1 * h**2 + np.prod([(c[i] / (1 + vat[i])) ** alpha[i] for i in range(3)])
    sw = min(a, 0.0) + 15 * np.mean(c / (1 + vat)) / 5 \
        + 5 * np.log(1 + np.sum(vat * c / (1 + vat)) + tau * h)
    mean = np.clip(a + (1 - tau) * h - c.sum(), -100, 100)
    return r_f, sw, mean


# ---------------------------------------------------------------------- conformance
def test_conformance_continuous():
    check_configurable_env(CONT_ID, beta=None)


def test_conformance_tabular():
    check_configurable_env(TAB_ID, beta=0.2)


def test_defaults():
    for env_id in (CONT_ID, TAB_ID):
        env = gym.make(env_id)
        assert env.spec.max_episode_steps == 200
        p = env.unwrapped
        assert p.gamma_follower == p.gamma_leader == 0.9 and p.n_contexts == 2
        np.testing.assert_allclose(p.config, np.log(0.15 / 0.85))  # 2·sigmoid(θ) = 0.3
        vat, tau = p.rates()
        np.testing.assert_allclose(vat, 0.3)
        assert tau == pytest.approx(0.3)
        np.testing.assert_array_equal(p.preferences, [[0.6, 0.3, 0.1], [0.1, 0.7, 0.2]])
        assert p.config_space.shape == (4,)
    cont, tab = make(CONT_ID), make(TAB_ID)
    assert cont.action_space == gym.spaces.MultiDiscrete([10, 5, 5, 5])
    assert cont.observation_space.shape == (2,)
    assert tab.action_space == gym.spaces.Discrete(1250)
    assert tab.observation_space == gym.spaces.Discrete(82)
    np.testing.assert_allclose(tab.asset_grid, np.arange(-100, 101, 5))
    theta = config_from_rates([0.1, 0.5, 1.9], 1.2)
    vat, tau = rates_from_config(theta)
    np.testing.assert_allclose(np.r_[vat, tau], [0.1, 0.5, 1.9, 1.2])
    b = np.array([[9, 4, 0, 3], [0, 0, 0, 0], [2, 1, 3, 4]])
    np.testing.assert_array_equal(tab.joint_actions[encode_actions(b)], b)
    assert encode_actions(b).tolist() == [9 * 125 + 4 * 25 + 3, 0, 2 * 125 + 25 + 15 + 4]
    hours, cons = decode_actions(b)
    np.testing.assert_allclose(hours, [8.01, 0.0, 1.78])
    np.testing.assert_allclose(cons[0], [5.0, 0.0, 3.75])


# ---------------------------------------------------------------------- economy
@pytest.mark.parametrize("a, b, k", [(10.0, (3, 2, 1, 4), 0), (-30.0, (0, 4, 4, 4), 1),
                                     (0.0, (9, 2, 0, 1), 0), (100.0, (5, 1, 1, 1), 1)])
def test_rewards_and_mean_per_docstring(a, b, k):
    env = make(noise_std=1e-9)
    theta = config_from_rates([0.2, 0.7, 1.1], 0.45)
    env.set_config(theta)
    vat, tau = env.rates()
    nxt, r_f, r_l, term = env.transition(np.array([[a, k]]), np.array([b]),
                                         np.random.default_rng(0))
    e_f, e_l, e_m = expected_rewards(a, b, env.preferences[k], vat, tau)
    assert r_f[0] == pytest.approx(e_f, rel=1e-12, abs=1e-12)
    assert r_l[0] == pytest.approx(e_l, rel=1e-12, abs=1e-12)
    assert nxt[0, 0] == pytest.approx(e_m, abs=1e-6) and nxt[0, 1] == k and not term[0]


def test_zero_consumption_has_exact_zero_gradient():
    """Where HPGD's code gets NaN (and substitutes −0.1) the term is identically 0 in θ."""
    env = make()
    s = np.array([[5.0, 0.0], [5.0, 1.0], [5.0, 0.0]])
    b = np.array([[3, 0, 2, 2], [3, 2, 2, 2], [3, 0, 0, 0]])
    th = torch.tensor(env.config, requires_grad=True)
    r_f = env.follower_reward_torch(th, s, b)
    grads = [torch.autograd.grad(r_f[i], th, retain_graph=True)[0] for i in range(3)]
    assert torch.all(torch.isfinite(torch.stack(grads)))
    assert torch.all(grads[0] == 0) and torch.all(grads[2] == 0)
    assert torch.all(grads[1][:3] < 0) and grads[1][3] == 0  # VAT lowers utility; τ does not


def test_torch_terms_match_numpy_and_scipy():
    env = make()
    env.set_config(np.array([-0.5, 0.3, -2.0, 0.1]))
    states, actions, rng = random_batch(env, 400)
    nxt, r_f, r_l, _ = env.transition(states, actions, rng)
    th = torch.tensor(env.config, requires_grad=True)
    tf = env.follower_reward_torch(th, states, actions)
    tl = env.leader_reward_torch(th, torch.as_tensor(states), torch.as_tensor(actions))
    lp = env.log_transition_torch(th, states, actions, nxt)
    np.testing.assert_allclose(tf.detach().numpy(), r_f, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(tl.detach().numpy(), r_l, rtol=1e-13, atol=1e-12)
    vat, tau = env.rates()
    hours, cons = decode_actions(actions)
    mean = np.clip(states[:, 0] + (1 - tau) * hours - cons.sum(1), -100, 100)
    ref = st.truncnorm.logpdf(nxt[:, 0], (-100 - mean) / 5, (100 - mean) / 5, loc=mean, scale=5)
    np.testing.assert_allclose(lp.detach().numpy(), ref, rtol=1e-10, atol=1e-10)
    # autograd of the three terms against central differences of the numpy/scipy values
    w = np.random.default_rng(1).normal(size=(3, 400))
    total = sum((torch.as_tensor(wi) * t).sum() for wi, t in zip(w, (tf, tl, lp)))
    (grad,) = torch.autograd.grad(total, th)

    def value(theta):
        env.set_config(theta)
        _, f, l_, _ = env.transition(states, actions, np.random.default_rng(0))
        v, t = env.rates()
        m = np.clip(states[:, 0] + (1 - t) * hours - cons.sum(1), -100, 100)
        logp = st.truncnorm.logpdf(nxt[:, 0], (-100 - m) / 5, (100 - m) / 5, loc=m, scale=5)
        return w[0] @ f + w[1] @ l_ + w[2] @ logp

    theta0 = env.config
    for i in range(4):
        e = np.zeros(4)
        e[i] = 1e-6
        fd = (value(theta0 + e) - value(theta0 - e)) / 2e-6
        assert grad[i].item() == pytest.approx(fd, rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("mean", [-99.0, -60.0, 0.0, 3.3, 97.5, 100.0])
def test_noise_is_the_truncated_normal(mean):
    x = _sample_truncnorm(np.full(20_000, mean), 5.0, np.random.default_rng(7))
    assert x.min() >= -100 and x.max() <= 100
    law = st.truncnorm((-100 - mean) / 5, (100 - mean) / 5, loc=mean, scale=5)
    assert st.kstest(x, law.cdf).pvalue > 1e-3


def test_continuous_env_has_no_exact_follower():
    with pytest.raises(ValueError, match="learning follower"):
        BestResponse(gym.make(CONT_ID), beta=0.1)


# ---------------------------------------------------------------------- tabular model
def test_tabular_model_structure_and_rewards():
    env = make(TAB_ID)
    theta = np.array([-1.0, 0.2, 0.5, -0.3])
    model = env.tabular_model(theta)
    np.testing.assert_array_equal(env.config, env.default_config())  # θ restored
    S, B = 82, 1250
    assert model.transitions.shape == (S * B, S) and not model.terminal.any()
    np.testing.assert_allclose(model.transitions.sum(axis=1), 1.0, atol=1e-12)
    P = model.P
    assert P[:41, :, 41:].sum() == 0 and P[41:, :, :41].sum() == 0  # the context never changes
    np.testing.assert_array_equal(P[:41, :, :41], P[41:, :, 41:])  # same economy per context
    np.testing.assert_allclose(model.mu0.sum(), 1.0)
    np.testing.assert_allclose(model.mu0[:41], model.mu0[41:])
    # a_0 ~ √2·N(0, 1): the cell of 0 is [−2.5, 2.5), each context w.p. ½
    assert 2 * model.mu0[20] == pytest.approx(2 * st.norm.cdf(2.5 / np.sqrt(2)) - 1, rel=1e-12)
    vat, tau = env.rates(theta)
    rng = np.random.default_rng(0)
    for s, b in zip(rng.integers(0, S, 20), rng.integers(0, B, 20)):
        a, k = env.asset_grid[s % 41], s // 41
        e_f, e_l, e_m = expected_rewards(a, env.joint_actions[b], env.preferences[k], vat, tau)
        assert model.r_follower[s, b] == pytest.approx(e_f, rel=1e-12, abs=1e-12)
        assert model.r_leader[s, b] == pytest.approx(e_l, rel=1e-12, abs=1e-12)
        edges = np.r_[-100, np.arange(-97.5, 100, 5), 100]
        cdf = st.norm.cdf((edges - e_m) / 5)
        np.testing.assert_allclose(P[s, b, 41 * k: 41 * (k + 1)], np.diff(cdf) / (cdf[-1] - cdf[0]),
                                   atol=1e-13)
    th = torch.tensor(theta)
    rf, rl = env.tabular_rewards_torch(th)
    np.testing.assert_allclose(rf.numpy(), model.r_follower, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(rl.numpy(), model.r_leader, rtol=1e-13, atol=1e-12)


def test_tabular_transitions_torch():
    env = make(TAB_ID)
    theta = np.array([0.3, -0.2, 0.1, 0.4])
    th = torch.tensor(theta, requires_grad=True)
    P = env.tabular_transitions_torch(th)
    assert P.shape == (82, 1250, 82)
    np.testing.assert_allclose(P.detach().sum(-1).numpy(), 1.0, atol=1e-12)
    dense = env.tabular_model(theta).transitions.toarray().reshape(82, 1250, 82)
    np.testing.assert_allclose(P.detach().numpy(), dense, atol=1e-15)
    # differentiable in θ through τ only, matching central differences
    w = torch.as_tensor(np.random.default_rng(0).normal(size=P.shape))
    (grad,) = torch.autograd.grad((w * P).sum(), th)
    assert torch.all(grad[:3] == 0)
    h = 1e-6
    e = np.array([0, 0, 0, h])
    fd = ((w.numpy() * (env.tabular_model(theta + e).P - env.tabular_model(theta - e).P)).sum()
          / (2 * h))
    assert grad[3].item() == pytest.approx(fd, rel=1e-6)
    # log_transition_torch = log of the same entries (sampled transitions), same gradient
    env.set_config(theta)
    rng = np.random.default_rng(1)
    s, b = rng.integers(0, 82, 300), rng.integers(0, 1250, 300)
    s2, *_ = env.transition(s, b, rng)
    lp = env.log_transition_torch(th, s, b, s2)
    np.testing.assert_allclose(lp.detach().numpy(), np.log(dense[s, b, s2]), rtol=1e-12)
    (g1,) = torch.autograd.grad(lp.sum(), th)
    (g2,) = torch.autograd.grad(torch.log(env.tabular_transitions_torch(th)[s, b, s2]).sum(), th)
    np.testing.assert_allclose(g1.numpy(), g2.numpy(), rtol=1e-10)
    other = (s2 + 41) % 82  # across contexts: impossible
    assert torch.all(env.log_transition_torch(th, s, b, other) == -torch.inf)
    # the closed-form VJP (what an exact hypergradient needs) equals autograd
    np.testing.assert_allclose(env.tabular_transitions_vjp(theta, w.numpy()), grad.numpy(),
                               rtol=1e-10, atol=1e-12)


def test_tabular_model_matches_simulator_frequencies():
    env = make(TAB_ID)
    env.set_config(np.array([0.0, 0.0, 0.0, 1.0]))
    P = env.tabular_model().P
    rng = np.random.default_rng(0)
    rows = np.c_[rng.integers(0, 82, 40), rng.integers(0, 1250, 40)]
    rows[:4] = [[0, 1249], [40, 9 * 125], [81, 0], [20, 500]]  # at the bounds, pushing out
    n = 4000
    s, b = np.repeat(rows[:, 0], n), np.repeat(rows[:, 1], n)
    nxt, *_ = env.transition(s, b, rng)
    counts = np.zeros((len(rows), 82))
    np.add.at(counts, (np.repeat(np.arange(len(rows)), n), nxt), 1)
    expected = n * P[rows[:, 0], rows[:, 1]]
    assert counts[expected == 0].sum() == 0
    # pool the cells with small expectations into one per row, then a χ² test per batch
    big = expected >= 5
    small_obs, small_exp = (counts * ~big).sum(1), (expected * ~big).sum(1)
    chi2 = (((counts - expected) ** 2 / np.where(big, expected, 1))[big]).sum() \
        + (((small_obs - small_exp) ** 2 / np.maximum(small_exp, 1e-300))[small_exp >= 5]).sum()
    dof = big.sum() + (small_exp >= 5).sum() - len(rows)
    assert abs(chi2 - dof) < 6 * np.sqrt(2 * dof), (chi2, dof)
    # the start distribution too
    starts = env.sample_initial_states(40_000, rng)
    freq = np.bincount(starts, minlength=82) / 40_000
    mu0 = env.tabular_model().mu0
    assert np.all(freq[mu0 == 0] == 0)
    np.testing.assert_allclose(freq, mu0, atol=4 * np.sqrt(0.25 / 40_000))


@pytest.mark.parametrize("context", [None, 0, 1])
def test_exact_objective_matches_monte_carlo(context):
    """J (infinite horizon, γ = 0.9) vs the mean discounted 200-step leader return of the
    exact follower's rollouts from the problem's simulator (one episode per stream)."""
    br = BestResponse(gym.make(TAB_ID), beta=0.2)
    u = br.problem
    theta = np.array([-1.0, -2.0, -1.5, -0.5])
    br.set_config(theta)
    _, v_l = leader_values(u.tabular_model(), br.policy, 0.9)
    exact = leader_objective(br) if context is None else u.context_mu0(context) @ v_l
    u.set_context(context)
    n_envs = 300
    batch = br.rollout(200 * n_envs, n_envs, seed=1)  # > 16 streams: numpy path, env.transition
    assert batch.truncated.reshape(n_envs, 200)[:, -1].all()
    returns = (batch.r_leader.reshape(n_envs, 200) * 0.9 ** np.arange(200)).sum(axis=1)
    se = returns.std() / np.sqrt(n_envs)
    assert abs(returns.mean() - exact) < 4 * se + 1e-6, (returns.mean(), exact, se)
    if context is not None:
        assert np.all(u.state_context(batch.obs) == context)


@pytest.mark.parametrize("i", [0, 3])  # VAT_1 (rewards only) and τ (rewards and dynamics)
def test_leader_objective_is_smooth_in_theta(i):
    """Central differences at two step sizes agree: J is smooth in θ."""
    br = BestResponse(gym.make(TAB_ID), beta=0.3)
    theta = br.config
    diffs = []
    for h in (1e-2, 1e-3):
        e = np.zeros(4)
        e[i] = h
        diffs.append((leader_objective(br, theta + e) - leader_objective(br, theta - e))
                     / (2 * h))
    assert diffs[0] == pytest.approx(diffs[1], rel=1e-4, abs=1e-6)
    assert abs(diffs[0]) > 1e-3  # the rates matter
    np.testing.assert_array_equal(br.config, theta)


def test_set_context_restricts_starts():
    for env in (make(CONT_ID), make(TAB_ID)):
        rng = np.random.default_rng(0)
        env.set_context(1)
        s = env.sample_initial_states(200, rng)
        contexts = s[:, 1] if s.ndim == 2 else env.state_context(s)
        assert np.all(contexts == 1)
        obs, _ = env.reset(seed=0)
        assert (obs[1] if np.ndim(obs) else env.state_context(obs)) == 1
        env.set_context(None)
        s = env.sample_initial_states(2000, rng)
        contexts = s[:, 1] if s.ndim == 2 else env.state_context(s)
        assert abs(np.mean(contexts) - 0.5) < 0.05
        with pytest.raises(ValueError, match="context"):
            env.set_context(2)
    tab = make(TAB_ID)
    np.testing.assert_allclose(tab.context_mu0(0)[:41], 2 * tab.tabular_model().mu0[:41])
    assert tab.context_mu0(0)[41:].sum() == 0


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("bad, match", [(np.zeros(3), "shape"), (np.full(4, np.nan), "NaN"),
                                        (np.array([0, 0, 0, 25.0]), "config_space")])
def test_bad_theta_raises(bad, match):
    for env in (make(CONT_ID), make(TAB_ID)):
        with pytest.raises(ValueError, match=match):
            env.set_config(bad)


@pytest.mark.parametrize("action", [[10, 0, 0, 0], [0, 5, 0, 0], [-1, 0, 0, 0], [0, 0, 0],
                                    [0.0, 1.0, 1.0, 1.0], 3, None])
def test_bad_continuous_action_raises(action):
    env = make(CONT_ID)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("action", [1250, -1, 1.0, True, [3], None])
def test_bad_tabular_action_raises(action):
    env = make(TAB_ID)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.step(action)


@pytest.mark.parametrize("kwargs, name", [
    ({"preferences": [[0.5, 0.5]]}, "preferences"),
    ({"preferences": [[0.5, -0.5, 1.0]]}, "preferences"),
    ({"preferences": []}, "preferences"),
    ({"noise_std": 0.0}, "noise_std"),
    ({"gamma": 1.0}, "gamma"),
    ({"max_episode_steps": 0}, "max_episode_steps"),
    ({"config_bound": -1.0}, "config_bound"),
    ({"render_mode": "ansi"}, "render_mode"),
])
@pytest.mark.parametrize("cls", [TaxDesignEnv, TaxDesignTabularEnv])
def test_bad_kwargs_raise(cls, kwargs, name):
    with pytest.raises(ValueError, match=name):
        cls(**kwargs)


@pytest.mark.parametrize("n_grid", [2, 4.0, True, 1000])
def test_bad_grid_raises(n_grid):
    with pytest.raises(ValueError, match="n_grid"):
        TaxDesignTabularEnv(n_grid=n_grid)


def test_known_optima_tax_values():
    """docs/known_optima.md, Tax Design: J at HPGD's start and at the best known θ (β = 0.1),
    and that the best known θ is a stationary point of the exact objective."""
    from bilevel_agents.exact import hypergradient

    br = BestResponse(gym.make("BiLevel/TaxDesignTabular-v0"), beta=0.1)
    assert leader_objective(br) == pytest.approx(29.440, abs=1e-3)  # all rates 0.3
    best = np.array([-7.517129834888709, -8.253715954150307, -5.826702000540138,
                     -0.7726323435527718])
    assert leader_objective(br, best) == pytest.approx(38.708, abs=1e-3)
    grad = hypergradient(br, best)
    assert abs(grad[3]) < 0.05 and np.all(grad[:3] < 0.05)  # τ stationary, VAT at its floor
