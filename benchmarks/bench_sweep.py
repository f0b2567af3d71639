"""Sweep throughput: the paper's BC-HG grid at β = 0.001, batch 100 (issue 5).

Usage (from the repository root)::

    python benchmarks/bench_sweep.py                      # sub-grid, 1 vs 2 workers, ~3 min
    python benchmarks/bench_sweep.py --points 24 --seeds 10 --iterations 10000 --workers 2
                                                          # the full grid (~25 min on 2 cores)

Runs ``points`` grid points (lr × α_SA of the paper, in order) × ``seeds`` seeds through
:func:`bilevel_agents.sweep.run_sweep` in a temporary folder, once per worker count, and prints
the wall time, runs per minute and the speed-up over one worker, all measured in this run,
plus the extrapolation to the full 24 × 10 × 10,000-iteration grid.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from bilevel_agents.reproduce import ALPHAS, LRS
from bilevel_agents.sweep import RunSpec, grid, run_sweep

FULL_RUNS, FULL_ITERATIONS = 24 * 10, 10_000


def specs(out: str, points: int, seeds: int, iterations: int) -> list[RunSpec]:
    pts = grid(lr=LRS, sarsa_alpha=ALPHAS)[:points]
    return [RunSpec(env="BiLevel/FourRooms-v0", leader="bchg", beta=0.001, seed=s,
                    iterations=iterations, leader_kwargs={"batch_size": 100, **p}, out=out)
            for p in pts for s in range(seeds)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--points", type=int, default=4, help="grid points (1..24)")
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--iterations", type=int, default=2000)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = p.parse_args()
    if not 1 <= args.points <= 24:
        raise ValueError(f"points must be in 1..24, got {args.points}")
    if args.seeds < 1 or args.iterations < 1 or min(args.workers) < 1:
        raise ValueError("seeds, iterations and workers must be >= 1")
    n = args.points * args.seeds
    print(f"{n} BC-HG runs (β=0.001, batch 100) × {args.iterations} iterations; "
          f"{os.cpu_count()} CPUs")
    ref_wall = None
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            run_sweep(specs(out, args.points, args.seeds, args.iterations), workers=workers,
                      progress=False)
            wall = time.perf_counter() - t0
        ref_wall = ref_wall or wall
        full = wall / (n * args.iterations) * FULL_RUNS * FULL_ITERATIONS
        print(f"workers={workers}: {wall:7.1f} s  {60 * n / wall:6.1f} runs/min  "
              f"speed-up vs {args.workers[0]} worker(s) {ref_wall / wall:4.2f}x  "
              f"full 240-run grid ≈ {full / 60:5.1f} min")


if __name__ == "__main__":
    main()
