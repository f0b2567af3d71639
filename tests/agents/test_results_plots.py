"""Results folders read without the code: IQM + stratified-bootstrap intervals (``aggregate``),
the problems' known start and best values, labelled learning curves, the Four-Rooms incentive
map (arrows, colour bar, legend, one panel per goal context) and the LQR game plot's axes.

Results folders are written by hand here (``config.json``, ``metrics.csv``, ``summary.json``),
so no test trains anything."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from matplotlib.quiver import Quiver

from bilevel_agents.experiments import results
from bilevel_agents.experiments.references import BUILDING, FOUR_ROOMS
from bilevel_agents.experiments.results import aggregate, plot_results, reference_values


def _run(root: Path, point: str, seed: int, config: dict, objective, theta=None) -> Path:
    run = root / point / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({**config, "seed": seed}))
    with open(run / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["iteration", "objective"])
        w.writerows([i, v] for i, v in enumerate(objective))
    summary = {"iterations": len(objective)}
    if theta is not None:
        summary["final_theta"] = list(map(float, theta))
    (run / "summary.json").write_text(json.dumps(summary))
    return run


def _fr_config(lr: float, env: str = "BiLevel/FourRooms-v0", **env_kwargs) -> dict:
    return {"leader": "bchg", "beta": 0.005, "lr": lr, "batch_size": 100, "sarsa_alpha": 0.5,
            "critic": "SarsaCritic", "env": env, "env_kwargs": env_kwargs,
            "run_spec": {"env": env, "leader": "bchg", "leader_kwargs": {"lr": lr},
                         "follower": "exact"}}


def _fr_folder(root: Path, n_theta: int = 105) -> Path:
    rng = np.random.default_rng(0)
    for lr, top in ((0.5, 0.4), (0.1, -0.5)):
        for seed in range(3):
            curve = np.linspace(-0.76, top, 40) + 0.01 * rng.standard_normal(40)
            _run(root, f"bchg_lr{lr}", seed, _fr_config(lr), curve,
                 theta=rng.normal(0, 1, n_theta))
    return root


# ---------------------------------------------------------------------- aggregate
def test_aggregate_is_the_iqm_with_a_seeded_bootstrap_interval():
    scores = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 100.0])
    out = aggregate(scores, backend="numpy", reps=500)
    assert out["iqm"] == pytest.approx(3.5)  # the middle half: 2, 3, 4, 5
    assert out["low"] <= out["iqm"] <= out["high"] and out["runs"] == 8
    assert aggregate(scores, backend="numpy", reps=500) == out  # seeded
    assert aggregate(scores, backend="numpy", reps=500, seed=1) != out
    one = aggregate([0.7, np.nan], backend="numpy")
    assert one["runs"] == 1 and one["iqm"] == one["low"] == one["high"] == 0.7
    assert np.isnan(aggregate([np.nan], backend="numpy")["iqm"])
    # stratified: runs are resampled within each task (columns)
    two = aggregate(np.c_[np.zeros(6), np.ones(6)], backend="numpy", reps=300)
    assert two["iqm"] == two["low"] == two["high"] == 0.5
    for bad in ({"scores": np.zeros((2, 2, 2))}, {"scores": [[1.0, np.nan]]},
                {"scores": [1.0], "confidence": 1.0}, {"scores": [1.0], "reps": 0},
                {"scores": [1.0], "backend": "R"}):
        with pytest.raises(ValueError):
            aggregate(**bad)


def test_aggregate_agrees_with_rliable():
    pytest.importorskip("rliable")
    scores = np.random.default_rng(3).normal(0.5, 0.2, size=(10, 2))
    ours = aggregate(scores, backend="numpy", reps=4000)
    theirs = aggregate(scores, backend="rliable", reps=4000)
    assert theirs["backend"] == "rliable" and ours["iqm"] == pytest.approx(theirs["iqm"])
    width = theirs["high"] - theirs["low"]
    assert abs(ours["low"] - theirs["low"]) < 0.1 * width
    assert abs(ours["high"] - theirs["high"]) < 0.1 * width


def test_rliable_intervals_are_seeded_and_leave_the_global_generator_alone():
    """rliable resamples with numpy's global generator: the interval must still be a function
    of the scores and the seed, and the caller's global state must survive the call."""
    pytest.importorskip("rliable")
    scores = np.random.default_rng(5).normal(0.0, 0.05, size=10)
    np.random.seed(123)
    state = np.random.get_state()
    first = aggregate(scores, backend="rliable", reps=500)
    after = np.random.get_state()
    assert after[0] == state[0] and np.array_equal(after[1], state[1]) and after[2:] == state[2:]
    np.random.random(7)  # another global state: the same interval
    assert aggregate(scores, backend="rliable", reps=500) == first
    assert aggregate(scores, backend="rliable", reps=500, seed=1) != first


# ---------------------------------------------------------------------- reference values
def test_reference_values_of_the_documented_problems():
    assert reference_values(_fr_config(0.1)) == dict(zip(("start", "best"),
                                                         FOUR_ROOMS[(0.005, 1 / 3)]))
    assert reference_values({**_fr_config(0.1), "beta": 0.001, "env_kwargs": {
        "slip_prob": 0.44}}) == {"start": -0.741, "best": 0.768}
    ctx = {**_fr_config(0.1, "BiLevel/ContextualFourRooms-v0"), "beta": 0.003}
    assert reference_values(ctx) == {"start": 0.200, "best": 1.018}
    assert reference_values({**ctx, "env_kwargs": {"penalty_weight": 3.0}}) == {
        "start": -0.068, "best": 0.798}
    assert reference_values({"env": "BiLevel/BuildingThermal-v0", "beta": 0.1}) == {
        "start": BUILDING["start"], "best": BUILDING["best"]}
    unknown = {"start": None, "best": None}
    assert reference_values(_fr_config(0.1, size=17)) == unknown  # another map
    assert reference_values({**_fr_config(0.1), "beta": 0.02}) == unknown
    assert reference_values({"env": "BiLevel/BuildingThermal-v0", "beta": 0.1,
                             "env_kwargs": {"gamma": 0.95}}) == unknown
    assert reference_values({"env": "toy_game_v0", "beta": 0.05}) == unknown
    assert reference_values({}) == unknown


# ---------------------------------------------------------------------- learning curves
def _legend(fig) -> list[str]:
    return [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().texts]


def test_legend_settings_name_the_sarsa_step_only_where_a_sarsa_critic_uses_it():
    spec = {"leader": "hpgd_mc", "leader_kwargs": {"lr": 0.1}, "follower": "exact"}
    config = {"lr": 0.1, "batch_size": 400, "sarsa_alpha": 0.5, "critic": "MonteCarloCritic",
              "run_spec": spec}
    assert results._settings({"config": config}) == "lr=0.1, batch_size=400"
    config = {**config, "critic": None}
    assert results._settings({"config": config}) == "lr=0.1, batch_size=400"
    config = {**config, "critic": "SarsaCritic"}
    assert results._settings({"config": config}) == "lr=0.1, batch_size=400, sarsa_alpha=0.5"


def test_learning_curves_name_settings_band_start_and_best(tmp_path):
    root = _fr_folder(tmp_path / "fr")
    kw = dict(tail=10, best_known=None, start=None, title=None, label=None, window=5)
    fig = results._curves_figure(root, band="se", all_points=False, **kw)
    text = _legend(fig)
    assert len(fig.axes[0].get_lines()) == 3  # the best grid point, start, best known
    assert any(t.startswith("bchg: lr=0.5, batch_size=100, sarsa_alpha=0.5 — last-10 J = ")
               and "SE (3 seeds)" in t for t in text)
    assert "shaded: ±1 standard error over seeds" in text
    assert "start: J = -0.761" in text and "best known J = 0.623" in text
    fig.canvas.draw()
    assert fig.axes[0].yaxis.get_offset_text().get_text() == ""

    fig = results._curves_figure(root, band="bootstrap", all_points=True,
                                 **{**kw, "start": -1.0, "best_known": 2.0})
    text = _legend(fig)
    assert sum(t.startswith("bchg: lr=") for t in text) == 2  # every grid point
    assert "shaded: 95% bootstrap CI of the seed mean" in text
    assert "start: J = -1.000" in text and "best known J = 2.000" in text
    with pytest.raises(ValueError, match="band"):
        results._curves_figure(root, band="sd", all_points=False, **kw)


def test_a_building_folder_plots_with_its_known_start_and_best(tmp_path):
    root = tmp_path / "building"
    config = {"leader": "naive_pgd", "beta": 0.1, "lr": 0.1, "env": "BiLevel/BuildingThermal-v0",
              "env_kwargs": {}}
    for seed in range(2):
        _run(root, "naive_pgd", seed, config, np.linspace(-262.0, -220.0 - seed, 30),
             theta=np.zeros(8))
    paths = plot_results(root, tmp_path / "plots", tail=10)
    assert [p.name for p in paths] == ["learning_curves.png"]  # no map for the building
    fig = results._curves_figure(root, tail=10, best_known=None, start=None, title=None,
                                 label=None, band="se", all_points=False, window=10)
    text = _legend(fig)
    assert "start: J = -261.960" in text and "best known J = -162.500" in text


def test_a_start_without_a_reference_is_the_runs_first_value(tmp_path):
    root = tmp_path / "fr17"
    _run(root, "bchg_lr0.1", 0, _fr_config(0.1, size=17), [-0.5, -0.4, -0.3])
    fig = results._curves_figure(root, tail=2, best_known=None, start=None, title=None,
                                 label=None, band="se", all_points=False, window=2)
    text = _legend(fig)
    assert "start (runs' mean first J): J = -0.500" in text
    assert not any("best known" in t or "shaded" in t for t in text)  # one seed: no band


# ---------------------------------------------------------------------- incentive map
def _arrows(ax) -> np.ndarray:
    quiver = next(c for c in ax.collections if isinstance(c, Quiver))
    return np.c_[quiver.U, quiver.V]


def test_the_incentive_map_has_arrows_a_colour_bar_and_a_legend(tmp_path):
    from bilevel_agents.experiments.sweep import make_best_response

    root = _fr_folder(tmp_path / "fr")
    run = root / "bchg_lr0.5" / "seed1"
    fig = results._incentive_figure(run, "a title")
    ax, bar = fig.axes  # one panel and its colour bar
    assert "incentive" in bar.get_ylabel()
    br = make_best_response("BiLevel/FourRooms-v0", 0.005)
    br.set_config(json.loads((run / "summary.json").read_text())["final_theta"])
    moves = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
    greedy = np.asarray(br.policy).argmax(axis=1)
    keep = np.arange(br.problem.n_cells) != br.problem.goal_cells[0]
    expected = moves[greedy[keep]][:, ::-1]  # (column step, row step)
    np.testing.assert_array_equal(_arrows(ax), expected)
    assert {(1, 0), (-1, 0)} <= set(map(tuple, _arrows(ax).astype(int)))  # right ≠ left
    labels = [t.get_text() for t in fig.legends[0].texts]
    assert {"start S", "leader's target T (the leader is paid here)"} <= set(labels)
    assert any(t.startswith("goal G") for t in labels)
    assert any("greedy move" in t for t in labels)
    assert fig._suptitle.get_text() == "a title"


def test_the_contextual_map_has_one_panel_per_goal(tmp_path):
    root = tmp_path / "cfr"
    env = "BiLevel/ContextualFourRooms-v0"
    run = _run(root, "bchg_lr0.1", 0, _fr_config(0.1, env), [0.2, 0.3],
               theta=np.zeros(105))
    fig = results._incentive_figure(run, None)
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["context 0: goal at (row 1, col 9)",
                                                 "context 1: goal at (row 11, col 11)"]
    assert not np.array_equal(_arrows(panels[0]), _arrows(panels[1]))
    assert any("another context's goal" in t.get_text() for t in fig.legends[0].texts)


def test_the_map_shows_the_best_run_or_the_chosen_seed(tmp_path, capsys):
    from bilevel_agents.cli import main

    root = _fr_folder(tmp_path / "fr")
    runs = results.load_runs(root)["bchg_lr0.5"]
    best, how = results._chosen_run(runs, None, 10, "bchg_lr0.5")
    scores = [results._tail_mean(r["metrics"], 10) for r in runs]
    assert how == "best run" and best["seed"] == int(np.argmax(scores))
    chosen, how = results._chosen_run(runs, 2, 10, "bchg_lr0.5")
    assert how == "chosen seed" and chosen["seed"] == 2
    assert main(["plot", str(root), "--tail", "10", "--seed", "2", "--out",
                 str(tmp_path / "p")]) == 0
    assert (tmp_path / "p" / "incentive_map.png").exists()
    capsys.readouterr()
    assert main(["plot", str(root), "--seed", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "seed 7 has no finished run" in err[0]


# ---------------------------------------------------------------------- the LQR game plot
def test_the_lqr_game_plot_has_no_offset_axis(tmp_path):
    from bilevel_agents.benchmarks.bench_games import curves_figure, plot_curves

    path = tmp_path / "curves.jsonl"
    with open(path, "w") as fh:
        for seed in range(2):
            x = np.arange(10_000, 10_500, 10)  # offsets appear on such ranges by default
            y = 18.4 + 1e-4 * np.arange(x.size) + seed * 1e-5
            fh.write(json.dumps({"method": "bchg", "setting": "lqr", "seed": seed,
                                 "curve": np.c_[x, y].tolist()}) + "\n")
    fig = curves_figure(path)
    fig.canvas.draw()
    ax = fig.axes[0]
    assert ax.xaxis.get_offset_text().get_text() == ""
    assert ax.yaxis.get_offset_text().get_text() == ""
    assert all("10^" not in t.get_text() and "$" not in t.get_text()
               for t in ax.get_yticklabels())
    plot_curves(path, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").exists()


def test_metrics_are_parsed_once_per_version_of_the_file(tmp_path):
    """The fast parser gives the row reader's numbers; a changed file is read again; empty
    fields (NaN) and damaged values go through the row reader."""
    import os

    from bilevel_agents.experiments import results

    path = tmp_path / "metrics.csv"
    path.write_text("iteration,objective\n0.0,-0.8036958069533288\n1.0,0.1\n")
    first = results._read_metrics(path)
    assert first["objective"].tolist() == [-0.8036958069533288, 0.1]
    first["objective"][0] = 5.0  # callers get copies
    assert results._read_metrics(path)["objective"][0] == -0.8036958069533288
    path.write_text("iteration,objective\n0.0,-0.5\n1.0,\n2.0,0.25\n")
    os.utime(path, ns=(1, 1))  # a new modification time, as any rewrite has
    again = results._read_metrics(path)
    assert np.array_equal(again["objective"], [-0.5, np.nan, 0.25], equal_nan=True)
    path.write_text("iteration,objective\n0.0,-0.5\n1.0,oops\n")
    os.utime(path, ns=(2, 2))
    with pytest.raises(ValueError, match="row 3, column 'objective'"):
        results._read_metrics(path)
