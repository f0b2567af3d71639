"""Markov games: exact ground truth, Theorem 2 estimators and leaders."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bilevel_agents import BCHG, BiAC, NaivePGD
from bilevel_agents.critics import TabularGameCritic
from bilevel_agents.estimators.returns import discounted_forward_sum, discounted_reverse_sum
from bilevel_agents.estimators.theorem2 import (
    benefit_exact,
    benefit_from_samples,
    follower_q_grad,
    partial_derivative,
    theorem2_gradient,
    theorem2_weights,
)
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_agents.exact.games import (
    lqr_objective,
    lqr_objective_and_grad,
    toy_exact,
    toy_hypergradient,
    toy_indifference,
    toy_objective,
    toy_policy_from_p,
)
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.wrappers import GameBestResponse

GAMES = [toy_game_v0, lqr_game_v0]


# ============================================================================ exact toy
@pytest.mark.parametrize("R,bootstrap,p,undisc,disc", [
    (2, "paper", 0.497, 59.750, 31.166), (2, "official", 0.509, 59.481, 31.026),
    (1, "paper", 0.833, 52.324, 27.316), (1, "official", 0.842, 52.209, 27.256)])
def test_toy_known_optima(R, bootstrap, p, undisc, disc):
    kw = dict(reward=R, bootstrap=bootstrap, horizon=150)
    assert toy_objective(toy_policy_from_p(p), gamma=1.0, **kw) == pytest.approx(undisc, abs=2e-3)
    assert toy_objective(toy_policy_from_p(p), gamma=0.99, **kw) == pytest.approx(disc, abs=3e-3)
    for q in (p - 0.02, p + 0.02):  # a local maximum in p
        assert toy_objective(toy_policy_from_p(q), gamma=1.0, **kw) < undisc


def test_toy_indifference_and_baseline_value():
    assert toy_indifference(2, "official") == pytest.approx(0.402, abs=1e-3)
    assert toy_objective(toy_policy_from_p(0.4), reward=2, bootstrap="official",
                         horizon=150, gamma=1.0) == pytest.approx(32.57, abs=0.01)


@pytest.mark.parametrize("bootstrap", ["paper", "official"])
def test_toy_hypergradient_vs_finite_differences(bootstrap):
    th = np.random.default_rng(2).normal(size=(3, 2)) * 0.5
    for horizon, gamma in ((None, None), (150, 1.0)):
        g = toy_hypergradient(th, bootstrap=bootstrap, horizon=horizon, gamma=gamma)
        eps = 1e-5
        fd = np.zeros_like(th)
        for i in np.ndindex(th.shape):
            e = np.zeros_like(th)
            e[i] = eps
            J = [toy_objective(torch.softmax(torch.tensor(th + d), 1).numpy(),
                               bootstrap=bootstrap, horizon=horizon, gamma=gamma)
                 for d in (e, -e)]
            fd[i] = (J[0] - J[1]) / (2 * eps)
        assert np.allclose(g, fd, atol=2e-5 * (1 + np.abs(fd).max()))


def test_exact_dispatch_through_wrapper():
    br = GameBestResponse(toy_game_v0.env(reward=2), beta=0.05)
    th = np.random.default_rng(3).normal(size=6) * 0.5
    g = hypergradient(br, th)
    assert g.shape == (6,)
    assert np.allclose(g, toy_hypergradient(th.reshape(3, 2)).ravel())
    br.set_config(th)
    assert leader_objective(br) == pytest.approx(leader_objective(br, th))
    assert np.allclose(br.config, th)  # θ left as it was


# ============================================================================ Theorem 2
def _toy_setup(theta, **kw):
    th = torch.tensor(theta, requires_grad=True)
    ex = toy_exact(th, **kw)
    f = ex.f.detach().numpy()
    S, A = f.shape
    score = np.zeros((S, A, S, A))
    idx = np.arange(S)
    score[idx, :, idx, :] = np.eye(A)[None] - f[:, None, :]
    return th, ex, f, score


def test_theorem2_occupancy_form_equals_autograd():
    """eq. 8 with exact Q_L, Benefit and eq. 9 (linear solve) == d J / d θ by autograd."""
    theta = np.random.default_rng(0).normal(size=(3, 2)) * 0.5
    for bootstrap_kw in ({}, {"beta": 0.3, "gamma_follower": 0.9}):
        th, ex, f, score = _toy_setup(theta, **bootstrap_kw)
        g, q_l = ex.g.detach().numpy(), ex.q_l.detach().numpy()
        d = ex.occupancy.detach().numpy()
        dqf = ex.follower_q_grad_eq9(th)
        w = d[:, None, None] * f[:, :, None] * g
        est = (np.einsum("sab,sab,saxy->xy", w, q_l, score)
               + np.einsum("sab,sab,sabxy->xy", w, benefit_exact(q_l, g) / ex.beta, dqf))
        (exact,) = torch.autograd.grad(ex.objective(), th)
        assert np.allclose(est, exact.numpy(), atol=1e-9)


def test_eq9_vs_implicit_derivative_of_q_follower():
    """eq. 9 equals ∇Q_F (implicit differentiation) plus V_F(s,a)∇log f(a|s) (eq. 34b)."""
    theta = np.random.default_rng(1).normal(size=(3, 2)) * 0.5
    th, ex, f, score = _toy_setup(theta)
    jac = np.stack([torch.autograd.grad(ex.q_f.reshape(-1)[i], th, retain_graph=True)[0].numpy()
                    for i in range(18)]).reshape(3, 2, 3, 3, 2)
    eq9 = ex.follower_q_grad_eq9(th)
    vf = ex.v_f.detach().numpy()
    assert np.allclose(eq9, jac + vf[:, :, None, None, None] * score[:, :, None], atol=1e-8)


def test_theorem2_monte_carlo_with_exact_critic():
    """The average BC-HG estimate (exact leader critic) agrees with the exact hypergradient."""
    kw = dict(beta=0.5, gamma_follower=0.9, gamma_leader=0.9)
    theta = np.random.default_rng(0).normal(size=(3, 2)) * 0.5
    exact = toy_hypergradient(theta, **kw)
    th, ex, f, _ = _toy_setup(theta, **kw)
    g, q_l = ex.g.detach().numpy(), ex.q_l.detach().numpy()
    br = GameBestResponse(toy_game_v0.raw_env(gamma_follower=0.9, gamma_leader=0.9), beta=0.5)
    br.set_leader_policy(f)
    E, T = 2000, 150
    b = br.rollout(E, seed=2, horizon=T)
    s, a, bb = b.obs, b.leader_actions, b.follower_actions
    sc = br.leader_score(s, a)
    v_l = ex.v_l.detach().numpy()
    B = benefit_exact(q_l, g)[s, a, bb]
    base = (f * ex.v_f.detach().numpy()).sum(1)[s]
    w = theorem2_weights(q_l[s, a, bb] - v_l[s], B, b.follower_value, 0.5, 0.9, 0.9,
                     baseline=base, include_first=False)
    per_episode = np.einsum("et,etd->ed", w, sc)
    mean, se = per_episode.mean(0), per_episode.std(0) / np.sqrt(E)
    assert np.all(np.abs(mean - exact.ravel()) < 4 * se + 0.01)
    assert mean @ exact.ravel() / (np.linalg.norm(mean) * np.linalg.norm(exact)) > 0.99
    # the weight form equals the explicit eq. 8 sum on the same data
    full = theorem2_gradient(q_l[s, a, bb] - v_l[s], B, b.follower_value, sc, 0.5, 0.9, 0.9,
                              baseline=base, include_first=False)
    assert np.allclose(full, mean, atol=1e-9)


# ============================================================================ estimators
def test_discounted_cumsums_vs_loops():
    x = np.random.default_rng(0).normal(size=(3, 7, 2))
    rev, fwd = discounted_reverse_sum(x, 0.8), discounted_forward_sum(x, 0.8)
    for e in range(3):
        for t in range(7):
            assert np.allclose(rev[e, t], sum(0.8 ** (k - t) * x[e, k] for k in range(t, 7)))
            assert np.allclose(fwd[e, t], sum(0.8 ** (t - k) * x[e, k] for k in range(t + 1)))
    with pytest.raises(ValueError, match="gamma"):
        discounted_reverse_sum(x, 1.5)


def test_follower_q_grad_explicit_and_weights():
    rng = np.random.default_rng(1)
    E, T, d = 2, 6, 3
    v, sc, B, q = rng.normal(size=(E, T)), rng.normal(size=(E, T, d)), rng.normal(size=(E, T)), \
        rng.normal(size=(E, T))
    dq = follower_q_grad(v, sc, 0.7)
    for t in range(T):  # Alg. 7 on the suffix
        assert np.allclose(dq[:, t], sum(0.7 ** (k - t) * v[:, k, None] * sc[:, k]
                                          for k in range(t, T)))
    explicit = theorem2_gradient(q, B, v, sc, 0.2, 0.9, 0.7)
    via_w = np.einsum("et,etd->d", theorem2_weights(q, B, v, 0.2, 0.9, 0.7), sc) / E
    assert np.allclose(explicit, via_w)
    assert np.allclose(partial_derivative(q, sc, 0.9),
                       np.einsum("et,etd->d", q * 0.9 ** np.arange(T), sc) / E)
    assert np.allclose(partial_derivative(q, sc), (q[..., None] * sc).reshape(-1, d).mean(0))
    with pytest.raises(ValueError, match="beta"):
        theorem2_gradient(q, B, v, sc, 0.0, 0.9, 0.7)


def test_benefit_from_samples_converges():
    rng = np.random.default_rng(0)
    g = np.array([0.2, 0.5, 0.3])
    q = np.array([1.0, -2.0, 4.0])
    samples = q[rng.choice(3, p=g, size=(3, 20000))]
    est = benefit_from_samples(q, samples)
    assert np.allclose(est, benefit_exact(q[None], g[None])[0], atol=0.05)


def test_follower_q_grad_expectation_matches_eq9():
    """Monte Carlo of Alg. 7 from (S, a0, b0) agrees with eq. 9 solved exactly."""
    kw = dict(beta=0.5, gamma_follower=0.9, gamma_leader=0.9)
    theta = np.random.default_rng(4).normal(size=(3, 2)) * 0.5
    th, ex, f, _ = _toy_setup(theta, **kw)
    br = GameBestResponse(toy_game_v0.raw_env(gamma_follower=0.9, gamma_leader=0.9), beta=0.5)
    br.set_leader_policy(f)
    b = br.rollout(3000, seed=1, horizon=150)
    dq = follower_q_grad(b.follower_value, br.leader_score(b.obs, b.leader_actions), 0.9)[:, 0]
    eq9 = ex.follower_q_grad_eq9(th).reshape(3, 2, 3, -1)
    for a0 in range(2):
        for b0 in (1, 2):
            sel = (b.leader_actions[:, 0] == a0) & (b.follower_actions[:, 0] == b0)
            if sel.sum() < 200:
                continue
            m, se = dq[sel].mean(0), dq[sel].std(0) / np.sqrt(sel.sum())
            assert np.all(np.abs(m - eq9[0, a0, b0]) < 4 * se + 1e-3)


# ============================================================================ exact LQR
@pytest.mark.parametrize("K,J", [((0.0, 0.0), 0.0149), ((-9.683, -10.25), 3.840),
                                 ((-9.9655, -10.0), 18.43)])
def test_lqr_known_values(K, J):
    assert lqr_objective(np.array([K])) == pytest.approx(J, abs=6e-3)


def test_lqr_gradient_vs_finite_differences():
    K = np.array([[-9.0, -9.5]])
    J, g = lqr_objective_and_grad(K)
    eps = 1e-6
    fd = [(lqr_objective(K + eps * e.reshape(1, 2)) - lqr_objective(K - eps * e.reshape(1, 2)))
          / (2 * eps) for e in np.eye(2)]
    assert np.allclose(g.ravel(), fd, rtol=1e-5, atol=1e-7)


def test_lqr_objective_vs_monte_carlo():
    K = np.array([[-9.683, -10.25]])
    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    br.set_leader_policy(K)
    ret = br.rollout(3000, seed=0).returns()
    assert abs(ret.mean() - lqr_objective(K)) < 4 * ret.std() / np.sqrt(len(ret))
    assert leader_objective(br) == pytest.approx(
        lqr_objective(K, horizon=2292, gamma=0.99), rel=1e-9)
    g = hypergradient(br)
    assert g.shape == (2,) and np.all(np.isfinite(g))


# ============================================================================ leaders
def _toy_leader(cls, seed=0, **kw):
    br = GameBestResponse(toy_game_v0.env(reward=2), beta=0.05, bootstrap="official")
    return br, cls(br, lr=0.01, seed=seed, **kw)


def test_leaders_are_deterministic_under_seed():
    thetas = []
    for _ in range(2):
        _, L = _toy_leader(BCHG, seed=4)
        L.learn(15, evaluate=False, progress=False)
        thetas.append(L.theta)
    assert np.array_equal(*thetas)


def test_bchg_beats_naive_on_toy():
    """BC-HG keeps f(0|A) near the optimum; NAIVE-PGD slides below the follower's threshold."""
    out = {}
    for cls in (BCHG, NaivePGD):
        br, L = _toy_leader(cls)
        L.learn(150, evaluate=False, progress=False)
        out[cls] = toy_objective(br.leader_policy, reward=2, bootstrap="official", horizon=150)
    assert out[BCHG] > 50 and out[BCHG] > out[NaivePGD] + 10


def test_biac_stackelberg_target_and_critic_tracks_exact():
    br, L = _toy_leader(BiAC)
    assert L.critic.target == "stackelberg"
    br2, L2 = _toy_leader(NaivePGD, critic_kwargs={"steps": 50})
    for _ in range(20):
        L2.critic.update(br2.rollout(3, seed=None), br2)
    ex = toy_exact(br2.leader_policy, probs=True, bootstrap="official")
    q = ex.q_l.detach().numpy()
    # well-visited cells (S, *, a) and (S, *, b) are close to the exact infinite-horizon Q_L
    assert np.allclose(L2.critic.table[0, :, 1:], q[0, :, 1:], rtol=0.2)
    with pytest.raises(ValueError, match="target"):
        TabularGameCritic(3, 2, 3, target="x")


def test_lqr_leaders_smoke():
    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    for cls, kw in ((BCHG, {}), (NaivePGD, {"critic_exploration": 0.3})):
        L = cls(br, lr=0.1, seed=0, init_scale=1.0, episodes=2, explore_iterations=1,
                critic_kwargs={"steps": 5}, **kw)
        rows = L.learn(3, evaluate=False, progress=False)
        assert len(rows) == 3 and np.all(np.isfinite(L.theta))


@pytest.mark.slow
def test_bchg_toy_r1_reaches_optimum_region():
    br = GameBestResponse(toy_game_v0.env(reward=1), beta=0.05, bootstrap="official")
    L = BCHG(br, lr=0.003, seed=0, max_grad_norm=None)  # the results protocol
    L.learn(500, evaluate=False, progress=False)
    assert toy_objective(br.leader_policy, reward=1, bootstrap="official", horizon=150,
                         gamma=0.99) > 20


def test_mlp_leader_parameterization():
    from bilevel_envs.games.policies import MLPSoftmax

    par = MLPSoftmax(3, 2, hidden=(8, 8))
    th = par.initial(np.random.default_rng(0)) + np.random.default_rng(1).normal(size=par.dim) * 0.3
    eps = 1e-6
    fd = np.stack([(np.log(par.probs(th + eps * v)) - np.log(par.probs(th - eps * v))) / (2 * eps)
                   for v in np.eye(par.dim)], -1)
    assert np.allclose(par.score_table(th), fd, atol=1e-7)
    br = GameBestResponse(toy_game_v0.env(), beta=0.05, leader_parameterization=par)
    L = BCHG(br, lr=1e-3, seed=0)
    assert br.config_space.shape == (par.dim,)
    assert np.allclose(br.leader_policy, 0.5, atol=0.02)  # Xavier init, tiny last layer
    b = br.rollout(2, seed=0, horizon=5)
    assert np.allclose(br.leader_score(b.obs, b.leader_actions),
                       par.score_table(br.config)[b.obs, b.leader_actions])
    L.learn(3, evaluate=False, progress=False)
    with pytest.raises(ValueError, match="leader_parameterization"):
        GameBestResponse(lqr_game_v0.env(), beta=0.1, leader_parameterization=par)


def test_lqr_exact_leader_critic():
    from bilevel_agents.critics import LQRExactLeaderCritic

    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    K = np.array([[-9.683, -10.25]])
    br.set_leader_policy(K)
    c = LQRExactLeaderCritic(tol=1e-10)
    c.update(None, br)
    v0 = c.leader_value(br.problem.params.s0[None])[0]
    assert v0 == pytest.approx(lqr_objective(K, horizon=2292, gamma=0.99), rel=1e-6)
    s, a, b = np.array([[0.3, 0.1]]), np.array([[0.2]]), np.array([[-0.1]])
    nxt, _, r_l = br.problem.transition(s, a, b)
    assert c.q(s, a, b)[0] == pytest.approx(r_l[0] + 0.99 * c.leader_value(nxt)[0])


def test_game_leaders_need_a_publishing_follower():
    class Silent:
        beta = 0.05

        def solve(self, game, leader_policy=None):
            self.f = leader_policy

        def act(self, obs, rng):
            return np.zeros(len(obs), dtype=np.int64)

    br = GameBestResponse(toy_game_v0.env(), beta=0.05, follower=Silent())
    with pytest.raises(ValueError, match="need the follower's published"):
        BCHG(br)
