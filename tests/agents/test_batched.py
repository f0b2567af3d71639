"""The batched engine (bilevel_agents.batched) against single runs: same histories bit for bit,
run folders interchangeable with the single-run path, sweeps grouped with fallbacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from bilevel_agents.batched import BatchedRun, train_batched, unsupported_reason
from bilevel_agents.experiments.sweep import RunSpec, build_leader, plan_batches, run_sweep
from bilevel_agents.trainer import train

ENV = "BiLevel/FourRooms-v0"
DYNAMICS = {"slip1/3": {}, "authors": {"slip_prob": 0.44, "simulator_slip_prob": 1 / 3}}
#: method -> per-run leader kwargs (mixed lr, α_SA, seeds)
METHODS = {
    "bchg": [{"lr": 0.5, "sarsa_alpha": 0.3}, {"lr": 0.05, "sarsa_alpha": 0.9}],
    "naive_pgd": [{"lr": 0.5}, {"lr": 0.01}],
    "hpgd_mc": [{"lr": 0.1}, {"lr": 0.5}],
    "hpgd_sa": [{"lr": 0.5, "sarsa_alpha": 0.9}, {"lr": 0.1, "sarsa_alpha": 0.1}],
    # 20 oracle streams: the walk stepped in numpy (wider than WALK_MAX_ENVS); on-policy
    # batches: the scalar walk
    "hpgd_oracle": [{"lr": 0.05, "oracle_batch_size": 2000, "oracle_n_envs": 20},
                    {"lr": 0.5, "oracle_batch_size": 2000, "oracle_n_envs": 20}],
    "sobirl": [{"lr": 0.5}, {"lr": 0.05}],
    "exact": [{"lr": 0.1}, {"lr": 0.5}],
}
SEEDS = (0, 7)


def _spec(method, kw, seed, env_kwargs, iterations, out="unused", beta=0.003):
    kw = dict(kw) if method == "exact" else {"batch_size": 100, **kw}
    return RunSpec(env=ENV, leader=method, beta=beta, seed=seed, iterations=iterations,
                   leader_kwargs=kw, env_kwargs=env_kwargs, out=str(out), checkpoint_every=4)


def _single(spec, iterations=None, **kwargs):
    with threadpool_limits(limits=1):  # as every run of a sweep
        leader = build_leader(spec)
        history = train(leader, iterations or spec.iterations, progress=False, **kwargs)
    return leader, history


@pytest.mark.parametrize("dynamics", sorted(DYNAMICS))
@pytest.mark.parametrize("method", sorted(METHODS))
def test_batched_equals_single_runs_bit_for_bit(method, dynamics):
    iterations = 6 if method == "hpgd_oracle" else 20
    specs = [_spec(method, kw, seed, DYNAMICS[dynamics], iterations)
             for kw, seed in zip(METHODS[method], SEEDS)]
    out = train_batched([BatchedRun(lambda s=s: build_leader(s), iterations) for s in specs],
                        progress=False, keep_history=True)
    for spec, got in zip(specs, out):
        leader, history = _single(spec)
        assert [list(r) for r in got["history"]] == [list(r) for r in history]
        assert got["history"] == history  # every metric, the exact objective, bit for bit
        assert np.array_equal(got["summary"]["final_theta"], leader.theta)


@pytest.mark.parametrize("dynamics", sorted(DYNAMICS))
def test_batched_equals_single_runs_with_batches_beyond_the_time_limit(dynamics):
    """Batches of 400 transitions from one stream cross the 200-step time limit."""
    specs = [RunSpec(env=ENV, leader="bchg", beta=0.005, seed=seed, iterations=8,
                     leader_kwargs={"batch_size": 400, **kw}, env_kwargs=DYNAMICS[dynamics],
                     out="unused") for kw, seed in zip(METHODS["bchg"], SEEDS)]
    out = train_batched([BatchedRun(lambda s=s: build_leader(s), 8) for s in specs],
                        progress=False, keep_history=True)
    for spec, got in zip(specs, out):
        assert got["history"] == _single(spec)[1]


@pytest.mark.parametrize("contexts", ["per_iteration", "per_episode"])
@pytest.mark.parametrize("method, kws", [
    ("bchg", [{"batch_size": 100, "lr": 0.5, "sarsa_alpha": 0.3},
              {"batch_size": 100, "lr": 0.05, "sarsa_alpha": 0.9}]),
    # HPGD's Table-1 layout (5 streams, beyond the time limit), a smaller batch
    ("hpgd", [{"batch_size": 1500, "n_envs": 5, "lr": 0.1},
              {"batch_size": 1500, "n_envs": 5, "lr": 0.5}]),
])
def test_batched_equals_single_runs_on_the_contextual_task(method, kws, contexts):
    """HPGD's contextual Four-Rooms: one context per iteration from each run's generator (or
    the mixture per episode), the runs of a batch in different contexts."""
    specs = [RunSpec(env="BiLevel/ContextualFourRooms-v0", leader=method, beta=0.003, seed=seed,
                     iterations=10, leader_kwargs={**kw, "contexts": contexts},
                     env_kwargs={"penalty_weight": 3.0}, out="unused")
             for kw, seed in zip(kws, SEEDS)]
    leaders = [build_leader(s) for s in specs]
    assert all(unsupported_reason(ld) is None for ld in leaders)
    out = train_batched([BatchedRun(lambda s=s: build_leader(s), 10) for s in specs],
                        progress=False, keep_history=True)
    for spec, got in zip(specs, out):
        history = _single(spec)[1]
        assert [list(r) for r in got["history"]] == [list(r) for r in history]
        assert got["history"] == history
    if contexts == "per_iteration":  # the runs' contexts differ within the batch
        drawn = np.array([[r["context"] for r in o["history"]] for o in out])
        assert (drawn[0] != drawn[1]).any()


def test_hpgd_oracle_batches_on_the_contextual_task_fall_back():
    spec = RunSpec(env="BiLevel/ContextualFourRooms-v0", leader="hpgd_oracle", beta=0.003,
                   seed=0, iterations=1, leader_kwargs={"batch_size": 100}, out="unused")
    assert "oracle" in unsupported_reason(build_leader(spec))


def test_run_folders_resume_across_the_two_paths(tmp_path):
    """Interrupted batched runs resume with the single runner and vice versa; the folders end
    as an uninterrupted single run's (log, summary, checkpoint)."""
    specs = [_spec("bchg", kw, seed, {}, 12, out=tmp_path / "a")
             for kw, seed in zip(METHODS["bchg"], SEEDS)]
    ref = [_single(_spec("bchg", kw, seed, {}, 12, out=tmp_path / "ref"),
                   run_dir=tmp_path / f"ref{seed}", checkpoint_every=4)
           for kw, seed in zip(METHODS["bchg"], SEEDS)]

    def stop_after(n):  # train_batched on the same folders, interrupted after n iterations
        jobs = [BatchedRun(lambda s=s: build_leader(s), s.iterations, run_dir=s.run_dir,
                           spec=s.identity(), checkpoint_every=4) for s in specs]
        calls = {"n": 0}
        import bilevel_agents.batched as engine

        real = engine._Engine.step

        def step(self):
            if calls["n"] == n:
                raise KeyboardInterrupt
            calls["n"] += 1
            return real(self)

        engine._Engine.step = step
        try:
            with pytest.raises(KeyboardInterrupt):
                train_batched(jobs, progress=False)
        finally:
            engine._Engine.step = real

    stop_after(6)  # checkpoint at 4, rows 0..5 logged: resume cuts back to 4
    # run 0 goes on with the single runner up to 9 (interrupted), run 1 stays as it is
    with threadpool_limits(limits=1):
        leader = build_leader(specs[0])
        train(leader, 12, run_dir=specs[0].run_dir, progress=False, checkpoint_every=4,
              spec=specs[0].identity(), callback=lambda it, row: it < 9)
    results = run_sweep(specs, progress=False)  # the batched engine finishes both
    for spec, (leader, history), result in zip(specs, ref, results):
        log = (spec.run_dir / "metrics.csv").read_text().splitlines()
        ref_log = (tmp_path / f"ref{spec.seed}" / "metrics.csv").read_text().splitlines()
        assert log == ref_log
        assert result["final_theta"] == leader.theta.tolist()
        summary = json.loads((spec.run_dir / "summary.json").read_text())
        assert summary == json.loads((tmp_path / f"ref{spec.seed}" / "summary.json").read_text())
    # a finished sweep is read back, not redone
    stamps = {s.run_dir: (s.run_dir / "metrics.csv").stat().st_mtime_ns for s in specs}
    again = run_sweep(specs, progress=False)
    assert [r["final_theta"] for r in again] == [r["final_theta"] for r in results]
    assert all((d / "metrics.csv").stat().st_mtime_ns == t for d, t in stamps.items())


def test_a_batched_checkpoint_resumes_in_the_single_runner(tmp_path):
    spec = _spec("hpgd_sa", METHODS["hpgd_sa"][0], 3, {}, 8, out=tmp_path)
    run_sweep([spec], progress=False)  # batched, checkpoints at 4 and 8
    ckpt = (spec.run_dir / "checkpoint.npz").read_bytes()
    leader, _ = _single(spec)
    from bilevel_agents.checkpoint import load_checkpoint

    state = load_checkpoint(spec.run_dir / "checkpoint.npz")
    assert np.array_equal(state["theta"], leader.theta)
    assert state.keys() == leader.state_dict().keys()
    assert ckpt  # a plain .npz


def test_sweeps_group_runs_and_fall_back_with_a_reason(tmp_path, capsys):
    specs = [_spec("bchg", kw, s, {}, 3, out=tmp_path) for kw in METHODS["bchg"] for s in SEEDS]
    specs.append(_spec("bchg", {"lr": 0.1, "optimizer": "adam"}, 0, {}, 3, out=tmp_path))
    for seed, (follower, every) in enumerate((("kstep:3", 1), ("kstep:3", 10), ("exact", 10))):
        specs.append(RunSpec(env=ENV, leader="bchg", beta=0.003, seed=seed, iterations=3,
                             leader_kwargs={"batch_size": 100}, out=str(tmp_path),
                             follower=follower, eval_every=every))
    batches, fallbacks = plan_batches(specs, workers=2)
    assert sorted(len(b) for b in batches) == [2, 2]
    assert {r for _, r in fallbacks} == {
        ("only plain SGD steps are batched (no Adam, clip groups, step-size decay or simplex "
         "geometry)"),
        "the follower is not the exact warm-started Newton solver",
        "the engine evaluates every iteration"}
    # the method's own reason comes first: a k-step run says so whatever its evaluation period
    assert [r for s, r in fallbacks if s.follower == "kstep:3"] == [
        "the follower is not the exact warm-started Newton solver"] * 2
    results = run_sweep(specs, progress=False)
    assert len(results) == len(specs)
    assert "not batched" in capsys.readouterr().out


def test_unsupported_settings_are_named():
    assert unsupported_reason(build_leader(_spec("bchg", {"partial": "td"}, 0, {}, 1))) \
        .startswith("only the Monte Carlo partial")
    leader = build_leader(_spec("hpgd_mc", {"leader_value": "q"}, 0, {}, 1))
    assert "Benefit" in unsupported_reason(leader)
    with pytest.raises(ValueError, match="cannot run"):
        train_batched([BatchedRun(lambda: leader, 1)], progress=False)


def test_a_checkpoint_of_another_sampler_revision_is_not_resumed(tmp_path):
    """The generator state continues a run's draws only under the rule that made them: a
    checkpoint saved under another sampler revision is refused by both paths; one saved
    without a revision (earlier releases) resumes."""
    from bilevel_agents.checkpoint import load_checkpoint, save_checkpoint
    from bilevel_agents.runs import RunMismatch
    from bilevel_envs.wrappers.best_response import SAMPLER_REVISION

    spec = _spec("hpgd_oracle", METHODS["hpgd_oracle"][0], 0, {}, 8, out=tmp_path)

    def single(**kwargs):  # the single runner on the sweep's folder
        with threadpool_limits(limits=1):
            leader = build_leader(spec)
            train(leader, spec.iterations, run_dir=spec.run_dir, spec=spec.identity(),
                  checkpoint_every=4, progress=False, **kwargs)
        return leader

    single(callback=lambda it, row: it < 4)
    path = spec.run_dir / "checkpoint.npz"
    state = load_checkpoint(path)
    assert state["best_response"]["sampler"] == SAMPLER_REVISION
    state["best_response"]["sampler"] = SAMPLER_REVISION - 1
    save_checkpoint(path, state)
    for resume in (single,
                   lambda: run_sweep([spec], progress=False)):
        with pytest.raises(RunMismatch, match=f"sampler revision {SAMPLER_REVISION - 1}"):
            resume()
    del state["best_response"]["sampler"]
    save_checkpoint(path, state)
    leader = single()
    ref, _ = _single(spec)
    np.testing.assert_array_equal(leader.theta, ref.theta)
