"""The batched engine against the per-run runner: the paper's BC-HG grid, one run, problem size.

Usage (``python -m bilevel_agents.benchmarks.bench_batched [OPTIONS]``)::

    bench_batched                     # 240 runs × (20, 100) iterations, both paths, ~3 min
    bench_batched --quick             # 24 runs × (5, 20) iterations, small sizes
    bench_batched --points 24 --seeds 10 --iterations 20 200

1. **The grid**: β = 0.001, batch 100, BC-HG, lr {0.5, 0.1, 0.05, 0.01} × α_SA {0.1, 0.3,
   0.5, 0.7, 0.9, 1.0} × seeds, through :func:`~bilevel_agents.experiments.sweep.run_sweep`
   on ``--workers`` cores: batched (``engine="auto"``: one batch per worker process, half the
   runs each) and per run (``engine="processes"``: a pool of workers), both with the exact
   evaluation every iteration and run folders, measured in this run at two iteration counts.
   The slope gives the cost per run-iteration, the intercept the fixed cost (building the
   leaders, the first solves); both extrapolate to the 240-run × 10,000-iteration grid.
2. **One run**: the engine with one run against the single-run loop, in this process.
3. **Problem size**: per run-iteration time of the batched engine at Four-Rooms ``size`` 13,
   37 and 103 (104, ~1,200 and ~10,000 states), exact evaluation on, with the functions that
   dominate (cProfile, own time).
4. **HPGD's contextual Four-Rooms** (β = 0.003, λ = 3): BC-HG's and HPGD's full Table-1 grids
   × ``--seeds`` in one batch each (the slope between two iteration counts, one core), against
   the single-run loop of one grid point.
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import tempfile

from bilevel_agents.benchmarks.harness import Report, Stopwatch, parser, single_threaded
from bilevel_agents.experiments.reproduce import ALPHAS, LRS
from bilevel_agents.experiments.sweep import RunSpec, build_leader, grid, run_sweep

FULL_RUNS, FULL_ITERATIONS = 24 * 10, 10_000
SIZES = {13: (16, 10), 37: (4, 3), 103: (2, 2)}  # size -> (runs, iterations)


def specs(out: str, points: int, seeds: int, iterations: int, env_kwargs=None) -> list[RunSpec]:
    pts = grid(lr=LRS, sarsa_alpha=ALPHAS)[:points]
    return [RunSpec(env="BiLevel/FourRooms-v0", leader="bchg", beta=0.001, seed=s,
                    iterations=iterations, leader_kwargs={"batch_size": 100, **p}, out=out,
                    env_kwargs=dict(env_kwargs or {}))
            for p in pts for s in range(seeds)]


def _sweep(points, seeds, iterations, workers, engine) -> float:
    with tempfile.TemporaryDirectory() as out, Stopwatch() as sw:
        run_sweep(specs(out, points, seeds, iterations), workers=workers, progress=False,
                  engine=engine)
    return sw.seconds


def _categories(stats: pstats.Stats, top: int = 4) -> str:
    rows = sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]  # own time
    total = sum(v[2] for v in stats.stats.values())
    return "; ".join(f"{fn[2]} {100 * v[2] / total:.0f}%" for fn, v in rows)


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, quick_help="24 runs × (5, 20) iterations, sizes 13 and 37")
    p.add_argument("--points", type=int, default=24, help="grid points (1..24)")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--iterations", type=int, nargs=2, default=[20, 100],
                   help="the two iteration counts of the grid measurement")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--sizes", type=int, nargs="*", default=sorted(SIZES))
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.seeds, args.iterations, args.sizes = 12, 2, [5, 20], [13, 37]
    lo, hi = args.iterations
    n = args.points * args.seeds
    report = Report("bench_batched", args, width=58)
    with single_threaded(args.blas_threads):
        report.section(f"{n} BC-HG runs (β=0.001, batch 100), {args.workers} workers, "
                       f"exact J every iteration")
        per_ri = {}
        for engine, label in (("auto", "batched"), ("processes", "per-run")):
            t_lo = _sweep(args.points, args.seeds, lo, args.workers, engine)
            t_hi = _sweep(args.points, args.seeds, hi, args.workers, engine)
            slope = (t_hi - t_lo) / (n * (hi - lo))  # wall per run-iteration on all workers
            fixed = max(t_lo - slope * n * lo, 0.0) / n
            per_ri[label] = slope
            full = FULL_RUNS * (fixed + slope * FULL_ITERATIONS)
            report.time(f"{label}: wall, {hi} iterations", t_hi)
            report.time(f"{label}: per run-iteration per core", slope * args.workers,
                        f"fixed {fixed * 1e3:.0f} ms/run; 240 × 10,000 grid ≈ "
                        f"{full / 60:.1f} min")
        report.ratio("per-run / batched (per run-iteration)", per_ri["per-run"],
                     per_ri["batched"])

        report.section("one run, in this process (200 iterations, exact J)")
        from bilevel_agents.batched import BatchedRun, train_batched
        from bilevel_agents.trainer import train

        spec = specs("unused", 2, 1, 200)[1]
        with Stopwatch() as sw:
            train(build_leader(spec), 200, progress=False)
        t_single = report.time("single-run loop, per iteration", sw.seconds / 200)
        with Stopwatch() as sw:
            train_batched([BatchedRun(lambda: build_leader(spec), 200)], progress=False)
        t_one = report.time("batched engine with 1 run, per iteration", sw.seconds / 200,
                            "(includes building the leader)")
        report.ratio("single loop / engine", t_single, t_one)

        report.section("problem size (batched, exact J every iteration)")
        for size in args.sizes:
            runs, its = SIZES.get(size, (2, 2))
            jobs = [BatchedRun(lambda s=s: build_leader(s), its)
                    for s in specs("unused", runs, 1, its, {"size": size})]
            with Stopwatch() as sw:
                train_batched(jobs, progress=False)
            with Stopwatch() as sw0:  # the fixed cost (building leaders, first solves)
                for job in jobs:
                    job.make_leader()
            prof = cProfile.Profile()  # a second pass, profiled: what dominates
            prof.enable()
            train_batched(jobs, progress=False)
            prof.disable()
            states = jobs[0].make_leader().br.problem.n_states
            per = (sw.seconds - sw0.seconds) / (runs * its)
            report.time(f"size {size} ({states} states), {runs} runs: per run-iteration",
                        per, _categories(pstats.Stats(prof)))
        report.section("HPGD's contextual Four-Rooms, β=0.003, λ=3: full grid × seeds, 1 core")
        from bilevel_agents.experiments.reproduce_hpgd import hpgd_table1_specs

        with tempfile.TemporaryDirectory() as out:  # one-time costs (plans, caches) first
            run_sweep(hpgd_table1_specs(out=out, cells=[(0.003, 3)], methods=["bchg"],
                                        seeds=[0], iterations=2, full_grid=False),
                      workers=1, progress=False, engine="auto")
        for method, (lo_c, hi_c) in (("bchg", (5, 20) if args.quick else (20, 60)),
                                     ("hpgd", (2, 6) if args.quick else (5, 15))):
            wall = {}
            for its in (lo_c, hi_c):
                with tempfile.TemporaryDirectory() as out, Stopwatch() as sw:
                    cell = hpgd_table1_specs(out=out, cells=[(0.003, 3)], methods=[method],
                                             seeds=range(args.seeds), iterations=its)
                    run_sweep(cell, workers=1, progress=False, engine="auto")
                wall[its] = sw.seconds
            slope = (wall[hi_c] - wall[lo_c]) / (len(cell) * (hi_c - lo_c))
            single = {}
            for its in (lo_c, hi_c):
                with Stopwatch() as sw:
                    train(build_leader(cell[0]), its, progress=False)
                single[its] = sw.seconds
            single_slope = (single[hi_c] - single[lo_c]) / (hi_c - lo_c)
            report.time(f"{method}: batched ({len(cell)} runs), per run-iteration", slope)
            report.time(f"{method}: single-run loop, per iteration", single_slope)
            report.ratio(f"{method}: single / batched", single_slope, slope)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
