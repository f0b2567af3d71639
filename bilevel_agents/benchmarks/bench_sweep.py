"""Sweep throughput: the paper's BC-HG grid at β = 0.001, batch 100.

Usage (``python -m bilevel_agents.benchmarks.bench_sweep [OPTIONS]``)::

    bench_sweep                       # sub-grid, 1 vs 2 workers, ~3 min
    bench_sweep --quick               # 2 runs × 1000 iterations
    bench_sweep --points 24 --seeds 10 --iterations 10000 --workers 2
                                      # the full grid (~25 min on 2 cores)

Runs ``points`` grid points (lr × α_SA of the paper, in order) × ``seeds`` seeds through
:func:`bilevel_agents.experiments.sweep.run_sweep` in a temporary folder, once per worker
count, and prints the wall time, runs per minute and the speed-up over the first worker count,
all measured in this run, plus the extrapolation to the full 24 × 10 × 10,000-iteration grid.
"""

from __future__ import annotations

import sys
import tempfile

from bilevel_agents.benchmarks.harness import Report, Stopwatch, parser, single_threaded
from bilevel_agents.experiments.reproduce import ALPHAS, LRS
from bilevel_agents.experiments.sweep import RunSpec, grid, run_sweep

FULL_RUNS, FULL_ITERATIONS = 24 * 10, 10_000


def specs(out: str, points: int, seeds: int, iterations: int) -> list[RunSpec]:
    pts = grid(lr=LRS, sarsa_alpha=ALPHAS)[:points]
    return [RunSpec(env="BiLevel/FourRooms-v0", leader="bchg", beta=0.001, seed=s,
                    iterations=iterations, leader_kwargs={"batch_size": 100, **p}, out=out)
            for p in pts for s in range(seeds)]


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, quick_help="1 grid point × 2 seeds × 1000 iterations")
    p.add_argument("--points", type=int, default=4, help="grid points (1..24)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.seeds, args.iterations = 1, 2, 1000
    if not 1 <= args.points <= 24:
        raise ValueError(f"points must be in 1..24, got {args.points}")
    if args.seeds < 1 or args.iterations < 1 or min(args.workers) < 1:
        raise ValueError("seeds, iterations and workers must be >= 1")
    n = args.points * args.seeds
    report = Report("bench_sweep", args, width=40)
    report.section(f"{n} BC-HG runs (β=0.001, batch 100) × {args.iterations} iterations")
    walls = {}
    for workers in args.workers:
        with (tempfile.TemporaryDirectory() as out, single_threaded(args.blas_threads),
              Stopwatch() as sw):
            run_sweep(specs(out, args.points, args.seeds, args.iterations), workers=workers,
                      progress=False)
        walls[workers] = wall = sw.seconds
        full = wall / (n * args.iterations) * FULL_RUNS * FULL_ITERATIONS
        report.time(f"workers={workers}: wall time", wall,
                    f"{60 * n / wall:6.1f} runs/min; full 240-run grid ≈ {full / 60:5.1f} min")
    first = args.workers[0]
    for workers in args.workers[1:]:
        report.ratio(f"speed-up {workers} vs {first} worker(s)", walls[first], walls[workers])
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
