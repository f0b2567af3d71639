"""Leaders on the tabular tax design (θ-dependent dynamics): the partial derivative with the
∇log p term (Alg. 4) is picked automatically, the estimates average to the exact
hypergradient, and BC-HG, HPGD and zero-order improve the exact objective."""

import types

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, HPGD, NaivePGD, ZeroOrder
from bilevel_agents.exact import hypergradient, leader_values
from bilevel_envs.wrappers import BestResponse

# a coarse grid and 100-step episodes (γ = 0.9: truncation ≈ 3e-5 of the values) keep it fast
SMALL = {"n_grid": 11, "max_episode_steps": 100}


def tax_br(beta=0.2, **kw):
    return BestResponse(gym.make("BiLevel/TaxDesignTabular-v0", **{**SMALL, **kw}), beta=beta)


def exact_partial(br):
    """``Σ d_L g [∇r_L + γ_L Σ_s' ∇p(s'|s,b) V_L(s')]``, the follower held fixed."""
    p, policy = br.problem, br.policy
    model = p.tabular_model()
    _, v_l = leader_values(model, policy, p.gamma_leader)
    d_l = model.solve_discounted(model.policy_transition(policy), model.mu0, p.gamma_leader,
                                 transpose=True)
    w = d_l[:, None] * policy
    rewards = p.tabular_rewards_vjp(p.config, np.zeros_like(w), w)
    dynamics = p.tabular_transitions_vjp(p.config, p.gamma_leader * w[:, :, None]
                                         * v_l[None, None, :])
    return rewards, dynamics


def test_exact_partial_derivative_is_the_hypergradient_without_the_response():
    from bilevel_agents.exact.tabular import tabular_hypergradient

    br = tax_br()
    rewards, dynamics = exact_partial(br)
    args = (br.problem, br.config, br.policy, br.beta)
    np.testing.assert_allclose(tabular_hypergradient(*args, response=False), rewards + dynamics,
                               rtol=1e-9, atol=1e-12)
    assert not np.allclose(tabular_hypergradient(*args), rewards + dynamics, atol=1e-3)


def test_td_partial_is_picked_on_theta_dependent_dynamics():
    br = tax_br()
    assert br.problem.config_dependent_dynamics
    leader = BCHG(br, seed=0, batch_size=2000, n_envs=20)
    assert leader.family.options.partial == "td" and leader.hparams()["partial"] == "td"
    with pytest.raises(ValueError, match="partial='td'"):
        BCHG(br, partial="mc")
    # the leader starts at the problem's default (rates 0.3) plus the authors' noise
    vat, tau = br.problem.rates()
    assert np.allclose(vat, 0.3, atol=0.01) and tau == pytest.approx(0.3, abs=0.01)


def test_partial_term_averages_to_the_exact_partial_derivative():
    """The ∇log p term (τ moves the asset dynamics) is what the Monte Carlo form would miss."""
    br = tax_br()
    leader = NaivePGD(br, seed=0, batch_size=4000, n_envs=40, critic="exact")
    fam = leader.family
    rewards, dynamics = exact_partial(br)
    assert abs(dynamics[3]) > 1.0 and np.all(dynamics[:3] == 0)  # only τ enters p
    est = []
    for _ in range(25):
        batch = fam.collect(leader)
        leader.critic.update(batch, br)
        est.append(fam.gradient(leader, batch, fam.partial_term(leader, batch)))
    est = np.array(est)
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(mean - (rewards + dynamics)) < 4 * se + 1e-3)
    assert abs(mean[3] - rewards[3]) > 4 * se[3]  # without the ∇log p term: wrong


@pytest.mark.slow
@pytest.mark.parametrize("critic", ["exact", "model"])
def test_bchg_estimate_averages_to_the_exact_hypergradient(critic):
    """With the exact critic, and with the state-value model critic learned from the batch."""
    br = tax_br()
    leader = BCHG(br, seed=0, batch_size=4000, n_envs=40, critic=critic)
    exact = hypergradient(br)
    est = np.array([leader.estimate_gradient() for _ in range(60)])
    mean, se = est.mean(0), est.std(0, ddof=1) / np.sqrt(len(est))
    assert np.all(np.abs(mean - exact) < 4 * se)
    assert mean @ exact / (np.linalg.norm(mean) * np.linalg.norm(exact)) > 0.95


@pytest.mark.parametrize("cls, kwargs", [
    (BCHG, {"critic": "mc", "batch_size": 2000, "n_envs": 20}),
    (HPGD, {"batch_size": 2000, "n_envs": 20}),
    (ZeroOrder, {"c": 0.5}),
])
def test_short_run_improves_the_exact_objective(cls, kwargs):
    leader = cls(tax_br(), seed=0, lr=0.05, clip_groups=(3, 1), **kwargs)
    hist = leader.learn(10, progress=False)
    assert hist[-1]["objective"] > hist[0]["objective"] + 1.0


# ---------------------------------------------------------------------- HPGD's tax-code options
def _batch_and_leader(**kw):
    br = tax_br()
    leader = HPGD(br, seed=1, batch_size=1000, n_envs=10, critic="exact", **kw)
    return leader, leader.family.collect(leader)


def test_score_clip_clips_each_transition_score():
    """Clipped surrogate = Σ_k c_k clip(∇log p_k), the scores taken one transition at a time."""
    import torch

    from bilevel_agents.estimators.theorem1 import Coefficients, surrogate_gradient

    leader, batch = _batch_and_leader()
    problem, theta = leader.br.problem, leader.theta
    k = slice(0, 60)
    s, b, s2 = batch.obs[k], batch.actions[k], batch.next_obs[k]
    c_p = np.random.default_rng(0).normal(size=60)
    coef = Coefficients(np.zeros(60), np.zeros(60), c_p)
    scores = []
    for j in range(60):
        th = torch.tensor(theta, requires_grad=True)
        lp = problem.log_transition_torch(th, s[j:j + 1], b[j:j + 1], s2[j:j + 1]).sum()
        scores.append(torch.autograd.grad(lp, th)[0].numpy())
    scores = np.array(scores)
    clip = 0.5 * np.abs(scores[:, 3]).max()  # clips some scores, not all
    assert 0 < np.sum(np.abs(scores[:, 3]) > clip) < 60
    sub = types.SimpleNamespace(obs=s, actions=b, next_obs=s2)
    expected = c_p @ np.clip(scores, -clip, clip)
    np.testing.assert_allclose(surrogate_gradient(problem, theta, sub, coef, score_clip=clip),
                               expected, rtol=1e-10, atol=1e-12)
    # a clip above every score is the plain one-pass surrogate
    np.testing.assert_allclose(surrogate_gradient(problem, theta, sub, coef, score_clip=1e9),
                               surrogate_gradient(problem, theta, sub, coef), rtol=1e-10)


def test_response_coordinates_keep_the_response_term_on_those_coordinates_only():
    leader, batch = _batch_and_leader()
    fam = leader.family
    full = leader.gradient_from_batch(batch)  # (updates the exact critic at θ)
    partial = fam.gradient(leader, batch, fam.partial_term(leader, batch))
    masked = HPGD(leader.br, seed=1, batch_size=1000, n_envs=10, critic="exact",
                  response_coordinates=[0, 1, 2], theta0=leader.theta)
    got = masked.gradient_from_batch(batch)
    np.testing.assert_allclose(got[:3], full[:3], rtol=1e-10)
    np.testing.assert_allclose(got[3], partial[3], rtol=1e-10)
    assert abs(full[3] - partial[3]) > 1e-6  # the response term is there to be dropped
    hp = masked.hparams()
    assert hp["response_coordinates"] == [0, 1, 2] and "score_clip" not in hp
    assert "response_coordinates" not in leader.hparams()  # earlier run folders keep identity


@pytest.mark.parametrize("kw, match", [({"score_clip": 0.0}, "score_clip"),
                                       ({"score_clip": "1"}, "score_clip"),
                                       ({"response_coordinates": [4]}, "response_coordinates"),
                                       ({"response_coordinates": [0, 0]}, "response_coordinates"),
                                       ({"response_coordinates": []}, "response_coordinates"),
                                       ({"response_coordinates": "012"}, "response_coordinates"),
                                       ({"response_coordinates": [0.5]}, "response_coordinates")])
def test_tax_code_options_are_checked(kw, match):
    with pytest.raises(ValueError, match=match):
        HPGD(tax_br(), **kw)
