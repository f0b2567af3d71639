"""The plug-in model-based leader critic of the LQR game and the model-based BC-HG leader.

The critic estimates the dynamics (and optionally the follower) from samples and computes
``Q_L``, ``E_b Q_L`` and the Benefit in closed form; it must converge to the exact oracle
critic as samples grow. The leader's conditional-expectation estimator must agree with the
exact hypergradient and learn.
"""

from __future__ import annotations

import numpy as np
import pytest

from bilevel_agents.critics import LQRExactLeaderCritic, LQRModelCritic
from bilevel_agents.exact.games import lqr_objective, lqr_objective_and_grad
from bilevel_agents.leaders import ModelBCHG, get_leader
from bilevel_envs.games import lqr_game_v0
from bilevel_envs.wrappers import GameBestResponse

K_TEST = np.array([[-9.0, -9.5]])


def _br(K=K_TEST):
    br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
    br.set_leader_policy(np.asarray(K, dtype=np.float64))
    return br


def _errors(critic, exact, br, probe):
    s, a, b = probe.obs[:, :60], probe.leader_actions[:, :60], probe.follower_actions[:, :60]
    q_m, q_e = critic.q(s, a, b), exact.q(s, a, b)
    ben_m, ben_e = q_m - critic.v(s, br, a), q_e - exact.v(s, br, a)
    scale = np.abs(ben_e).mean()
    return np.abs(q_m - q_e).max() / np.abs(q_e).mean(), np.abs(ben_m - ben_e).mean() / scale


def test_published_follower_matches_the_exact_critic_from_on_policy_samples():
    br = _br()
    exact = LQRExactLeaderCritic(tol=1e-4)
    exact.update(None, br)
    critic = LQRModelCritic(follower="published", tol=1e-4)
    rng = np.random.default_rng(0)
    critic.update(br.rollout(2, rng=rng), br)   # on-policy: a within W = 1e-3 of Ks
    q_err, ben_err = _errors(critic, exact, br, br.rollout(2, rng=rng))
    assert q_err < 1e-5 and ben_err < 1e-3
    p = br.problem.params
    K = br.leader_gain  # on-policy data pin A + CK and B; A and C apart only to ~W
    assert np.allclose(critic.A + critic.C @ K, p.A + p.C @ K, atol=1e-7)
    assert np.allclose(critic.B, p.B, atol=1e-7)
    assert np.allclose(critic.C, p.C, atol=1e-3) and np.allclose(critic.A, p.A, atol=1e-2)
    s0 = p.s0[None]
    assert critic.leader_value(s0)[0] == pytest.approx(exact.leader_value(s0)[0], rel=1e-5)


def test_fitted_follower_converges_to_the_exact_critic_as_samples_grow():
    br = _br()
    exact = LQRExactLeaderCritic(tol=1e-4)
    exact.update(None, br)
    K = br.leader_gain
    rng = np.random.default_rng(1)

    def wide(obs, g):  # exploratory leader actions identify the follower's K_a
        return obs @ K.T + g.standard_normal((len(obs), 1))

    probe = br.rollout(2, rng=rng)
    critic = LQRModelCritic(follower="fit", follower_forget=1.0, tol=1e-4)
    errs = []
    for n in (1, 16, 256):
        critic.update(br.rollout(n, rng=rng, leader_sampler=wide), br)
        errs.append(_errors(critic, exact, br, probe))
    q_errs, ben_errs = np.array(errs).T
    # the follower's gain on s_2 is weakly excited (s_2 ~ 0.02), so the error falls slowly
    assert ben_errs[-1] < 0.25 * ben_errs[0] and q_errs[-1] < 0.25 * q_errs[0]
    assert q_errs[-1] < 0.03 and ben_errs[-1] < 0.01
    assert np.allclose(critic.follower_cov, br.follower.cov, rtol=0.05)


def test_closed_forms_against_differences_and_monte_carlo():
    br = _br()
    rng = np.random.default_rng(2)
    critic = LQRModelCritic(tol=1e-3)
    critic.update(br.rollout(2, rng=rng), br)
    probe = br.rollout(1, rng=rng)
    s, a = probe.obs[0, :2], probe.leader_actions[0, :2]
    h = 1e-5
    fd = (critic.v(s, br, a + h) - critic.v(s, br, a - h)) / (2 * h)
    assert np.allclose(critic.v_action_grad(s, a)[:, 0], fd, rtol=1e-5, atol=1e-8)
    quad = np.array([[[1.0, 0.3], [0.3, -2.0]]])
    lin = np.array([[0.2, -1.0]])
    cov = critic.response_covariance(s, a, quad, lin)[:, 0]
    M = 20_000
    for i in range(len(s)):
        si, ai = np.repeat(s[i:i + 1], M, 0), np.repeat(a[i:i + 1], M, 0)
        b = br.follower.act(br.problem.follower_obs(si, ai), rng)
        q = critic.q(si, ai, b)
        x = si @ critic.A.T + ai @ critic.C.T + b @ critic.B.T
        psi = np.einsum("ni,ij,nj->n", x, quad[0], x) + x @ lin[0]
        prod = (q - q.mean()) * (psi - psi.mean())
        assert abs(prod.mean() - cov[i]) < 5 * prod.std() / np.sqrt(M) + 1e-9


def test_expected_estimator_agrees_with_the_exact_hypergradient():
    br = _br([[-9.0, -5.0]])
    leader = ModelBCHG(br, seed=0, explore_iterations=0, theta0=np.array([-9.0, -5.0]))
    est = np.array([leader.estimate_gradient() for _ in range(3)])
    # the discounted objective's exact gradient (truncated at γ^700 ≈ 1e-3)
    exact = lqr_objective_and_grad(br.leader_gain, horizon=700, gamma=0.99)[1].ravel()
    assert np.allclose(est.mean(0), exact, rtol=0.05)
    assert np.all(np.sign(est) == np.sign(exact))   # every batch: both signs right


def test_model_critic_by_name_and_the_cli_registry():
    br = _br()
    from bilevel_agents import BCHG

    leader = BCHG(br, critic="model", seed=0, explore_iterations=0)
    assert isinstance(leader.critic, LQRModelCritic)
    assert np.all(np.isfinite(leader.estimate_gradient()))
    assert get_leader("bchg_model") is ModelBCHG
    with pytest.raises(ValueError, match="estimator"):
        ModelBCHG(br, estimator="nope")


def test_model_bchg_learns_and_resumes_exactly():
    def make():
        return ModelBCHG(GameBestResponse(lqr_game_v0.env(), beta=0.1), seed=3,
                         theta0=np.array([-9.0, -9.0]), explore_iterations=2)

    leader = make()
    J0 = lqr_objective(leader.br.leader_gain)
    leader.learn(30, evaluate=False, progress=False)
    assert lqr_objective(leader.br.leader_gain) > 3 * J0      # 1.16 → above 3.5
    state = leader.state_dict()
    leader.learn(34, evaluate=False, progress=False)
    other = make()
    other.load_state_dict(state)
    other.learn(34, evaluate=False, progress=False)
    assert np.array_equal(other.theta, leader.theta)


def test_lqr_gap_experiment_smoke(tmp_path, capsys):
    from bilevel_agents.experiments import lqr_gap

    csv_path, curves = tmp_path / "runs.csv", tmp_path / "curves.jsonl"
    argv = ["--seeds", "1", "--iterations", "12", "--csv", str(csv_path), "--curves",
            str(curves)]
    assert lqr_gap.main(argv) == 0
    assert lqr_gap.main(argv) == 0          # the second call reads the seed back
    out = capsys.readouterr().out
    assert "from" in out and "cost per run" in out and "median" in out
    assert len(curves.read_text().splitlines()) == 1
    s = lqr_gap.summarize_finals([1.0, 10.0, 18.0])
    assert s["median"] == 10.0 and s["above_half_gap"] == 2
