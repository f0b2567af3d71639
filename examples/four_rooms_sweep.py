"""Four-Rooms study of BC-HG vs NAIVE-PGD vs exact ascent (paper §5.1, Fig. 2), resumable.

Runs grids × seeds with :func:`bilevel_agents.sweep.run_sweep` into ``results/four_rooms/``,
then prints one markdown table per (β, slip) with the last-1000-iteration mean ± SE of the
exact objective, the share of the gap closed from the start value to the best known value
(docs/known_optima.md), and writes learning curves.

    python examples/four_rooms_sweep.py --workers 2                 # the full study
    python examples/four_rooms_sweep.py --iterations 500 --seeds 2  # a quick look

Re-running skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bilevel_agents.experiments.references import FOUR_ROOMS
from bilevel_agents.experiments.results import plot_results, score_table
from bilevel_agents.experiments.sweep import RunSpec, grid, run_sweep

ENV = "BiLevel/FourRooms-v0"
REFERENCE = FOUR_ROOMS  # (β, slip) → (J at the θ ~ N(0, 0.01²) start, best known J)


def specs_for(beta: float, slip: float, args: argparse.Namespace) -> list[RunSpec]:
    out = str(Path(args.out) / f"beta{beta}_slip{slip:.2f}")
    env_kwargs = {} if slip == 1 / 3 else {"slip_prob": slip}
    seeds = range(args.seeds)
    common = dict(env=ENV, beta=beta, iterations=args.iterations, env_kwargs=env_kwargs, out=out)
    bchg = [RunSpec(leader="bchg", seed=s, leader_kwargs={"batch_size": 100, **p}, **common)
            for p in grid(lr=args.lr, sarsa_alpha=args.alpha) for s in seeds]
    naive = [RunSpec(leader="naive_pgd", seed=s, leader_kwargs={"batch_size": 100, "lr": lr},
                     **common) for lr in args.naive_lr for s in seeds]
    exact = [RunSpec(leader="exact", seed=s, leader_kwargs={"lr": lr}, **common)
             for lr in args.exact_lr for s in seeds[:3]]
    return bchg + naive + exact


def report(beta: float, slip: float, args: argparse.Namespace) -> str:
    root = Path(args.out) / f"beta{beta}_slip{slip:.2f}"
    start, best = REFERENCE.get((beta, slip), (None, None))
    rows = score_table(root)
    lines = [f"### β = {beta}, slip = {slip:.2f} (start {start}, best known {best})", "",
             "| method / grid point | seeds | iterations | last-1000 mean J ± SE | share of gap |",
             "|---|---|---|---|---|"]
    for r in rows:
        share = (r["mean"] - start) / (best - start) if best is not None else float("nan")
        lines.append(f"| {r['point']} | {r['seeds']} | {r['iterations']} | "
                     f"{r['mean']:.4f} ± {r['se']:.4f} | {share:.1%} |")
    plot_results(root, best_known=best, title=f"Four-Rooms β={beta}, slip={slip:.2f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--betas", type=float, nargs="+", default=[0.001, 0.003, 0.005])
    p.add_argument("--slips", type=float, nargs="+", default=[1 / 3])
    p.add_argument("--lr", type=float, nargs="+", default=[0.5, 0.1, 0.05, 0.01])
    p.add_argument("--alpha", type=float, nargs="+", default=[0.1, 0.3, 0.5, 0.7, 0.9, 1.0])
    p.add_argument("--naive-lr", type=float, nargs="+", default=[0.5, 0.1, 0.05, 0.01])
    p.add_argument("--exact-lr", type=float, nargs="+", default=[0.1])
    p.add_argument("--iterations", type=int, default=10_000)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", default="results/four_rooms")
    p.add_argument("--report", default=None, help="also write the tables to this markdown file")
    args = p.parse_args()
    cells = [(b, s) for s in args.slips for b in args.betas]
    specs = [spec for b, s in cells for spec in specs_for(b, s, args)]
    run_sweep(specs, workers=args.workers)
    text = "\n\n".join(report(b, s, args) for b, s in cells)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")


if __name__ == "__main__":
    main()
