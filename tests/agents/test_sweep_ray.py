"""``run_sweep(backend="ray")``: a local Ray cluster runs a tiny grid × seeds sweep.

Ray is an optional extra (``pip install -e .[ray]``); without it this module is skipped.
"""

import json

import pytest

ray = pytest.importorskip("ray")

from bilevel_agents.experiments.sweep import RunSpec, run_sweep  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             ignore_reinit_error=True)
    yield
    ray.shutdown()


def _specs(out, iterations=4):
    return [RunSpec(env="BiLevel/FourRooms-v0", leader=leader, beta=0.005, seed=seed,
                    iterations=iterations, leader_kwargs={"batch_size": 100, "lr": 0.1},
                    out=str(out), checkpoint_every=2)
            for leader, seed in (("bchg", 0), ("hpgd_mc", 1))]


def test_ray_sweep_matches_local_runs_and_resumes(local_ray, tmp_path):
    specs = _specs(tmp_path / "ray")
    results = run_sweep(specs, backend="ray", progress=False)
    assert len(results) == 2
    for spec in specs:
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        assert summary["iterations"] == 4 and summary["leader"] == spec.leader
    # the same runs in this process give the same θ (seeded, backend-independent)
    local = run_sweep(_specs(tmp_path / "local"), workers=1, progress=False)
    by_key = {(r["leader"], r["seed"]): r["final_theta"] for r in local}
    for r in results:
        assert r["final_theta"] == by_key[(r["leader"], r["seed"])]
    # a second sweep over the same folder reads the finished runs back (nothing is redone)
    stamps = {s.run_dir: (s.run_dir / "metrics.csv").stat().st_mtime_ns for s in specs}
    again = run_sweep(specs, backend="ray", progress=False)
    assert sorted(r["final_objective"] for r in again) == \
        sorted(r["final_objective"] for r in results)
    assert all((d / "metrics.csv").stat().st_mtime_ns == t for d, t in stamps.items())


def test_unknown_backend_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="backend"):
        run_sweep(_specs(tmp_path), backend="dask", progress=False)
