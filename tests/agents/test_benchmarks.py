"""The benchmarks package: every benchmark imports and has a ``main``, the fast ones run their
``--quick`` path, ``available()`` / ``run()`` select and launch them, the harness works.

Only the benchmarks whose ``--quick`` run takes a few seconds are run here (in-process); the
others (building, sweep, estimator accuracy: 10–25 s) are only imported. No test asserts a
time.
"""

import importlib
import pkgutil

import pytest

from bilevel_agents import benchmarks
from bilevel_agents.benchmarks import harness

#: benchmarks whose --quick run takes a few seconds (the others: import only)
QUICK = ["bench_bchg_iteration", "bench_followers", "bench_four_rooms", "bench_games"]


def test_available_lists_every_benchmark_module():
    modules = {m.name for m in pkgutil.iter_modules(benchmarks.__path__)} - {"harness"}
    assert set(benchmarks.available()) == modules
    assert len(benchmarks.available()) == len(modules) == 8


@pytest.mark.parametrize("name", benchmarks.available())
def test_benchmark_imports_and_has_main(name):
    mod = importlib.import_module(f"bilevel_agents.benchmarks.{name}")
    assert callable(mod.main)
    assert mod.__doc__ and mod.__doc__.strip()


@pytest.mark.parametrize("name", QUICK)
def test_quick_run_prints_same_run_ratios(name, capsys):
    mod = importlib.import_module(f"bilevel_agents.benchmarks.{name}")
    assert mod.main(["--quick"]) == 0
    out = capsys.readouterr().out
    assert "quick run" in out
    assert "ratio" in out and "×" in out


def test_select_by_name_and_substring():
    assert benchmarks.select(None) == benchmarks.available()
    assert benchmarks.select(["bench_games"]) == ["bench_games"]
    assert benchmarks.select(["games", "accuracy"]) == ["bench_games", "estimator_accuracy"]
    with pytest.raises(ValueError, match="available"):
        benchmarks.select(["no_such_benchmark"])


def test_run_starts_one_process_per_benchmark(monkeypatch, capsys):
    calls = []

    def fake_call(cmd):
        calls.append(cmd)
        return 1 if cmd[2].endswith("bench_sweep") else 0

    monkeypatch.setattr(benchmarks.subprocess, "call", fake_call)
    assert benchmarks.run(["four_rooms"], quick=True) == 0
    assert calls[-1][1:] == ["-m", "bilevel_agents.benchmarks.bench_four_rooms", "--quick"]
    assert benchmarks.run(["bench_sweep", "bchg"], quick=False) == 1
    assert [c[2] for c in calls[-2:]] == ["bilevel_agents.benchmarks.bench_bchg_iteration",
                                          "bilevel_agents.benchmarks.bench_sweep"]
    assert "--quick" not in calls[-1]
    assert "bench_sweep failed" in capsys.readouterr().out


def test_timed_passes_setup_result_and_returns_last_result():
    seen = []

    def setup():
        seen.append(len(seen))
        return seen[-1]

    seconds, out = harness.timed(lambda x: x * 10, repeat=3, setup=setup)
    assert seen == [0, 1, 2] and out == 20 and seconds >= 0
    with pytest.raises(ValueError):
        harness.timed(lambda: None, repeat=0)


def test_report_rows_ratio_and_markdown(capsys):
    args = harness.parser(__doc__).parse_args(["--quick", "--markdown"])
    report = harness.Report("demo", args)
    report.section("solvers")
    report.time("fast", 0.002)
    report.time("slow", 0.02)
    assert report.ratio("slow / fast", 0.02, 0.002) == pytest.approx(10.0)
    assert report.finish(3) == 3
    out = capsys.readouterr().out
    assert "demo:" in out and "quick run" in out and "10.0×" in out
    assert "**solvers**" in out and "| slow / fast | 10.0× |  |" in out


def test_single_threaded_restores_torch_threads():
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    with harness.single_threaded(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_estimator_accuracy_measures_the_contextual_task():
    """The estimator-accuracy study on HPGD's contextual Four-Rooms: the exact-critic BC-HG
    estimate, averaged, points along the exact hypergradient of the context mixture."""
    import numpy as np

    from bilevel_agents.benchmarks.estimator_accuracy import measure

    theta = np.random.default_rng(0).normal(0.0, 0.01, 105)
    r = measure(0.003, theta, "BC-HG (exact Q_L)", 1000, 30, 0, seed=1,
                env="BiLevel/ContextualFourRooms-v0", env_kwargs={"penalty_weight": 3})
    assert r["cos_of_mean"] > 0.3 and r["reps"] == 30
