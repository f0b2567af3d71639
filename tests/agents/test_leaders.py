"""Leaders, the shared loop, checkpoints/resume and the CLI."""

import json

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, LEADERS, ExactAscent, Leader, NaivePGD, train
from bilevel_agents.cli import main, parse_seeds
from bilevel_agents.exact import leader_objective
from bilevel_envs.wrappers import BestResponse


def make_br(beta=0.005, **kw):
    return BestResponse(gym.make("BiLevel/FourRooms-v0", **kw), beta=beta)


def test_estimate_is_reproducible_under_a_seed():
    g1 = BCHG(make_br(), seed=3).estimate_gradient()
    g2 = BCHG(make_br(), seed=3).estimate_gradient()
    g3 = BCHG(make_br(), seed=4).estimate_gradient()
    np.testing.assert_array_equal(g1, g2)
    assert not np.array_equal(g1, g3)
    assert g1.shape == (105,) and np.all(np.isfinite(g1))


def test_update_clips_to_global_norm_and_ascends():
    leader = BCHG(make_br(), lr=0.5, seed=0)
    before = leader.theta
    metrics = leader.update()
    assert np.linalg.norm(leader.theta - before) <= 0.5 + 1e-12
    assert leader.iteration == 1 and metrics["grad_norm"] > 0


@pytest.mark.parametrize("kwargs, match", [
    ({"lr": 0.0}, "lr"), ({"lr": float("nan")}, "lr"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 100, "n_envs": 3}, "n_envs"), ({"critic": "bogus"}, "critic"),
    ({"partial": "bogus"}, "partial"), ({"max_grad_norm": -1.0}, "max_grad_norm"),
    ({"sarsa_alpha": 1.5}, "alpha"),
])
def test_bad_leader_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BCHG(make_br(), **kwargs)


def test_bchg_learns_past_the_start_and_naive_pgd_goes_to_no_incentive():
    """β = 0.005, batch 100: BC-HG leaves the start value far behind within 1200 iterations;
    NAIVE-PGD removes the incentive (J → no-incentive value ≈ 0.0017)."""
    start = leader_objective(make_br(), np.random.default_rng(0).normal(0, 0.01, 105))
    leader = BCHG(make_br(), lr=0.1, sarsa_alpha=0.5, seed=0)
    hist = leader.learn(1200, progress=False)
    assert np.mean([h["objective"] for h in hist[-100:]]) > start + 0.6
    naive = NaivePGD(make_br(), lr=0.5, seed=0)
    hist = naive.learn(800, progress=False)
    assert abs(hist[-1]["objective"] - 0.0017) < 0.02


def test_exact_ascent_falls_into_the_no_incentive_optimum():
    """Deterministic ascent from the near-uniform start removes the incentive (known_optima.md)."""
    leader = ExactAscent(make_br(), lr=0.5, seed=0)
    hist = leader.learn(600, progress=False)
    assert hist[-1]["objective"] == pytest.approx(0.0017, abs=0.03)
    p = np.exp(leader.theta - leader.theta.max())
    assert p[-1] / p.sum() > 0.5  # most of the mass on the unused slot


def test_resume_continues_exactly(tmp_path):
    full = BCHG(make_br(), seed=7)
    full.learn(60, progress=False)
    stopped = BCHG(make_br(), seed=7)
    train(stopped, 60, run_dir=tmp_path, progress=False, checkpoint_every=20,
          callback=lambda it, row: it < 44)  # "killed" after iteration 44 (checkpoint at 40)
    resumed = BCHG(make_br(), seed=7)
    hist = train(resumed, 60, run_dir=tmp_path, progress=False, checkpoint_every=20)
    np.testing.assert_allclose(resumed.theta, full.theta)
    assert [h["iteration"] for h in hist] == list(range(60))
    lines = (tmp_path / "metrics.csv").read_text().strip().splitlines()
    assert len(lines) == 61  # header + one row per iteration, no duplicates
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["leader"] == "bchg" and config["env"] == "BiLevel/FourRooms-v0"


def test_a_custom_leader_runs_through_the_shared_loop():
    class RandomSearch(Leader):
        name = "random"

        def estimate_gradient(self):
            return self.rng.normal(size=self.theta.shape)

    hist = RandomSearch(make_br(), lr=0.01, seed=0).learn(5, progress=False)
    assert len(hist) == 5 and all("objective" in h for h in hist)


def test_cli_train_evaluate_plot(tmp_path, capsys):
    out = tmp_path / "res"
    assert main(["train", "--leader", "bchg", "--beta", "0.005", "--iterations", "30",
                 "--seeds", "0-1", "--lr", "0.1,0.05", "--out", str(out), "--tail", "10"]) == 0
    assert len(list(out.glob("*/seed*/summary.json"))) == 4
    assert main(["evaluate", str(out), "--tail", "10", "--best-known", "0.623",
                 "--start", "-0.761"]) == 0
    table = capsys.readouterr().out
    assert "bchg_lr0.1" in table and "share of gap" in table
    assert main(["plot", str(out), "--tail", "10"]) == 0
    assert (out / "learning_curves.png").exists() and (out / "incentive_map.png").exists()
    # a second call does not redo finished runs
    mtime = (out / "bchg_lr0.1" / "seed0" / "summary.json").stat().st_mtime
    main(["train", "--leader", "bchg", "--beta", "0.005", "--iterations", "30", "--seeds", "0",
          "--lr", "0.1", "--out", str(out)])
    assert (out / "bchg_lr0.1" / "seed0" / "summary.json").stat().st_mtime == mtime


def test_cli_rejects_bad_input(capsys):
    assert main(["train", "--leader", "nope", "--iterations", "1"]) == 2
    assert "unknown leader 'nope'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="seeds"):
        parse_seeds("a-b")
    assert parse_seeds("0-2,5") == [0, 1, 2, 5]


def test_leader_registry_names_match():
    assert {"bchg", "naive_pgd", "exact"} <= set(LEADERS)
    assert all(cls.name == name for name, cls in LEADERS.items())


def test_geometric_lr_decay():
    leader = NaivePGD(make_br(), lr=0.1, lr_final=0.01, lr_decay_iterations=4, seed=0)
    rates = []
    for _ in range(6):
        rates.append(leader.current_lr)
        leader.update()
    np.testing.assert_allclose(rates, [0.1, 0.1 * 0.1 ** 0.25, 0.1 * 0.1 ** 0.5,
                                       0.1 * 0.1 ** 0.75, 0.01, 0.01])
    with pytest.raises(ValueError, match="lr_final"):
        NaivePGD(make_br(), lr=0.1, lr_final=0.01)


def test_adam_option_moves_each_coordinate_by_at_most_lr_and_resumes(tmp_path):
    leader = NaivePGD(make_br(), lr=0.01, optimizer="adam", seed=0)
    before = leader.theta
    leader.update()
    assert np.abs(leader.theta - before).max() <= 0.01 + 1e-12  # first Adam step: |Δ| ≤ lr
    full = NaivePGD(make_br(), lr=0.01, optimizer="adam", seed=1)
    full.learn(30, progress=False)
    part = NaivePGD(make_br(), lr=0.01, optimizer="adam", seed=1)
    train(part, 30, run_dir=tmp_path, progress=False, checkpoint_every=10,
          callback=lambda it, row: it < 14)
    again = NaivePGD(make_br(), lr=0.01, optimizer="adam", seed=1)
    train(again, 30, run_dir=tmp_path, progress=False, checkpoint_every=10)
    np.testing.assert_allclose(again.theta, full.theta)
    with pytest.raises(ValueError, match="optimizer"):
        NaivePGD(make_br(), optimizer="rmsprop")


def test_refinement_phase_switches_batch_size():
    leader = BCHG(make_br(), batch_size=100, refine_after=2, refine_batch_size=400, seed=0)
    sizes = []
    for _ in range(4):
        sizes.append(len(leader.family.collect(leader)))
        leader.update()
    assert sizes == [100, 100, 400, 400]
    with pytest.raises(ValueError, match="refine_after"):
        BCHG(make_br(), refine_after=-1)


def test_cli_trains_a_game_leader(tmp_path):
    out = tmp_path / "toy"
    assert main(["train", "--env", "toy_game_v0", "--env-kwargs", "reward=2", "--leader",
                 "game-bchg", "--beta", "0.05", "--iterations", "5", "--seeds", "0",
                 "--lr", "0.05", "--out", str(out), "--tail", "5"]) == 0
    summary = json.loads(next(out.glob("*/seed0/summary.json")).read_text())
    config = json.loads(next(out.glob("*/seed0/config.json")).read_text())
    assert config["env"] == "toy_game_v0" and config["env_kwargs"] == {"reward": 2}
    assert np.isfinite(summary["final_objective"])
    assert main(["train", "--env", "no_such_game", "--iterations", "1"]) == 2


@pytest.mark.parametrize("kwargs,match", [
    ({"batch_size": 1.5}, "batch_size must be an integer"),
    ({"batch_size": True}, "batch_size must be an integer"),
    ({"n_envs": 3}, "n_envs must divide"),
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": 1j}, "lr must be a finite number"),
    ({"sarsa_alpha": 0.0}, "sarsa_alpha"),
    ({"clip_groups": (100, 4)}, "clip_groups"),
    ({"episodes": 3}, "unknown option"),
])
def test_leader_options_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BCHG(make_br(), **kwargs)


@pytest.mark.parametrize("kwargs,match", [
    ({"benefit_samples": 0}, "benefit_samples must be an integer >= 1"),
    ({"buffer_episodes": 0}, "buffer_episodes must be an integer >= 1"),
    ({"episodes": 0.5}, "episodes must be an integer"),
    ({"critic_exploration": 0.3}, "critic_exploration is for linear-Gaussian"),
    ({"batch_size": 100}, "unknown option"),
])
def test_game_leader_options_are_validated(kwargs, match):
    from bilevel_envs.games import toy_game_v0
    from bilevel_envs.wrappers import GameBestResponse

    with pytest.raises(ValueError, match=match):
        BCHG(GameBestResponse(toy_game_v0.env(), beta=0.05), **kwargs)


@pytest.mark.parametrize("leader_cls,kwargs", [(BCHG, {}), (NaivePGD, {}),
                                                ("hpgd", {"critic": "mc"})])
def test_a_black_box_follower_needs_no_exact_solver(leader_cls, kwargs, monkeypatch):
    """Trained with a follower that publishes nothing (black-box soft Q-learning), a leader uses
    the follower's actions and rewards only: the exact solver may raise during training."""
    import importlib

    from bilevel_agents import HPGD
    from bilevel_envs.followers import SoftQLearning

    svi = importlib.import_module("bilevel_envs.followers.soft_value_iteration")

    follower = SoftQLearning(0.005, steps_per_leader_update=200, publish=False, seed=0)
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005, follower=follower)
    cls = HPGD if leader_cls == "hpgd" else leader_cls

    def forbidden(*args, **kw):
        raise AssertionError("the exact solver was called during training")

    monkeypatch.setattr(svi, "soft_value_iteration", forbidden)
    monkeypatch.setattr(svi, "soft_newton_step", forbidden)
    monkeypatch.setattr(importlib.import_module("bilevel_agents.exact.tabular"),
                        "soft_value_iteration", forbidden)
    leader = cls(br, seed=0, **kwargs)
    theta0 = leader.theta
    history = leader.learn(20, evaluate=False, progress=False)
    assert len(history) == 20 and not np.array_equal(leader.theta, theta0)
    monkeypatch.undo()
    from bilevel_agents.exact import follower_metrics, leader_objective

    assert np.isfinite(leader_objective(br))  # evaluation, kept separate, may solve exactly
    assert set(follower_metrics(br)) == {"objective_actual", "follower_gap"}


def test_sobirl_needs_the_followers_policy():
    from bilevel_agents import SoBiRL
    from bilevel_envs.followers import SoftQLearning
    from bilevel_envs.followers.base import NotPublishedError

    follower = SoftQLearning(0.005, steps_per_leader_update=10, publish=False, seed=0)
    br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005, follower=follower)
    with pytest.raises(NotPublishedError, match="does not publish policy"):
        SoBiRL(br)


# ---------------------------------------------------------------------- simplex geometry
def test_simplex_direction_is_the_natural_gradient_of_the_softmax():
    """For J = c·softmax(θ): ∇θ J = p ⊙ (c − pᵀc), and the simplex direction recovers c − pᵀc
    (the natural gradient); it stays an ascent direction where the floor binds."""
    from bilevel_agents.leader import simplex_direction

    rng = np.random.default_rng(0)
    theta = rng.normal(size=12)
    theta[3] = -20.0  # a coordinate of tiny probability: the floor binds there
    p = np.exp(theta - theta.max())
    p /= p.sum()
    c = rng.normal(size=12)
    grad = p * (c - p @ c)
    d = simplex_direction(grad, theta, floor=1e-6)
    free = p >= 1e-6
    np.testing.assert_allclose(d[free], (c - p @ c)[free], rtol=1e-12)
    assert grad @ simplex_direction(grad, theta, floor=1e-3) > 0


def test_the_simplex_step_is_the_clipped_natural_gradient_step():
    """The one step with ``geometry="simplex"``: θ ← θ + lr · clip(simplex_direction(ĝ))."""
    from bilevel_agents.exact import hypergradient
    from bilevel_agents.leader import clip_by_global_norm, simplex_direction

    br = make_br()
    theta0 = np.random.default_rng(1).normal(size=105)
    leader = ExactAscent(br, lr=0.5, seed=0, theta0=theta0, geometry="simplex")
    grad = np.asarray(hypergradient(br))
    expected = theta0 + 0.5 * clip_by_global_norm(simplex_direction(grad, theta0), 1.0)
    leader.update()
    np.testing.assert_allclose(leader.theta, expected, rtol=0, atol=1e-12)


def test_simplex_geometry_needs_softmax_logits_and_is_not_batched():
    from bilevel_agents.batched import unsupported_reason

    building = BestResponse(gym.make("BiLevel/BuildingThermal-v0"), beta=0.1)
    with pytest.raises(ValueError, match="softmax logits"):
        BCHG(building, geometry="simplex")
    with pytest.raises(ValueError, match="geometry"):
        BCHG(BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005), geometry="sphere")
    with pytest.raises(ValueError, match="simplex_floor"):
        BCHG(BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005), geometry="simplex",
             simplex_floor=0.0)
    leader = BCHG(BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005), batch_size=100,
                  geometry="simplex", seed=0)
    assert "simplex geometry" in unsupported_reason(leader)
