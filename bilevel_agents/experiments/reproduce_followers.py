"""Followers that are not oracles: how BC-HG and the baselines cope (Four-Rooms), in one command.

    bilevel reproduce followers                       # the study below
    bilevel reproduce followers --seeds 0-2 --iterations 2000 --batches 100
    bilevel reproduce followers --no-run              # only the report of what is there

The study: Four-Rooms at β = 0.003 (slip 1/3), batch 100 and 1000, every method of
:data:`METHODS` at its authors' best grid point, against every follower of :data:`FOLLOWERS`:
the exact best response; the authors' sub-optimal followers, k ∈ {1, 5, 20, 50} policy
iterations × 5 backups from a start carried across outer iterations or drawn afresh from
N(0, 1); and tabular soft Q-learning with 100 or 1000 of its own transitions per leader update
(the two-timescale ratio). Each run logs, every ``eval_every`` iterations, the exact objective
under the exact best response (``objective``, the leader's true J(θ)), the exact objective under
the follower it actually faces (``objective_actual``) and the follower's soft-value gap to the
best response at the start (``follower_gap``).

Score: per run the mean over its last ``tail`` iterations of each metric; per cell the seed mean
± SE; beside it the share of the gap from the start value to the best known value
(:data:`~bilevel_agents.experiments.references.FOUR_ROOMS`). The figure plots the final J (under
the best response and under the actual follower) against the follower's gap, one line per method.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bilevel_agents.cli_types import Parser, number, seed_list
from bilevel_agents.cli_types import seeds as seeds_type
from bilevel_agents.experiments.references import FOUR_ROOMS, gap_share
from bilevel_agents.experiments.sweep import RunSpec, run_sweep

__all__ = ["FOLLOWERS", "METHODS", "followers_report", "followers_specs", "main"]

ENV = "BiLevel/FourRooms-v0"
BETA = 0.003
#: method → (CLI name, leader kwargs): the authors' best batch-100 grid points at β = 0.003
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "BC-HG": ("bchg", {"lr": 0.05, "sarsa_alpha": 0.5}),
    "HPGD (SA)": ("hpgd_sa", {"lr": 0.05, "sarsa_alpha": 0.9}),
    "NAIVE-PGD": ("naive_pgd", {"lr": 0.5}),
}
#: follower specs (``bilevel train --follower``) of the study
FOLLOWERS: tuple[str, ...] = (
    "exact",
    *(f"kstep:{k}:{mode}" for k in (1, 5, 20, 50) for mode in ("carry", "reset")),
    "soft-q-learning:steps_per_leader_update=100",
    "soft-q-learning:steps_per_leader_update=1000",
)


def followers_specs(*, out: str | Path, batches: Sequence[int] = (100, 1000),
                    seeds: int | Sequence[int] = 10,
                    iterations: int = 10_000, methods: Sequence[str] | None = None,
                    followers: Sequence[str] | None = None, tail: int = 1000,
                    eval_every: int = 10) -> list[RunSpec]:
    """The run specs of the study (one folder per batch size)."""
    methods = list(methods or METHODS)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(METHODS)}")
    specs = []
    for batch in batches:
        root = Path(out) / f"batch{batch}"
        for method in methods:
            name, kwargs = METHODS[method]
            n_envs = max(1, batch // 200)
            for follower in followers or FOLLOWERS:
                for seed in seed_list(seeds):
                    specs.append(RunSpec(
                        env=ENV, leader=name, beta=BETA, seed=seed, iterations=iterations,
                        leader_kwargs={**kwargs, "batch_size": batch, "n_envs": n_envs},
                        out=str(root), tail=min(tail, iterations), follower=follower,
                        eval_every=eval_every))
    return specs


def _run_metrics(run: Path, tail: int) -> dict[str, float] | None:
    import csv

    path = run / "metrics.csv"
    if not (run / "summary.json").exists() or not path.exists():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = float(rows[-1]["iteration"])
    rows = [r for r in rows if float(r["iteration"]) > last - tail]  # the last `tail` iterations
    out = {}
    for key in ("objective", "objective_actual", "follower_gap"):
        vals = np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")])
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[key] = float(vals.mean())
    return out


def followers_report(*, out: str | Path, batches: Sequence[int], tail: int = 1000,
                     figure: str | Path | None = None) -> str:
    """Markdown tables (one per batch size) and the figure of J vs the follower's gap."""
    start, best = FOUR_ROOMS[(BETA, 1 / 3)]
    lines: list[str] = []
    points: dict[tuple[int, str], list[tuple[float, float, float]]] = {}
    for batch in batches:
        root = Path(out) / f"batch{batch}"
        lines += [f"### Batch {batch} (β = {BETA}, start J = {start}, best known {best})", "",
                  "| method | follower | seeds | J under the best response ± SE | share of gap | "
                  "J under the actual follower ± SE | follower gap (start) |",
                  "|---|---|---|---|---|---|---|"]
        for method, (name, _) in METHODS.items():
            for follower in FOLLOWERS:
                runs = sorted(root.glob(f"{name}_*" + ("" if follower == "exact" else
                                                       "_follower" + follower.replace(":", "-"))
                                        + "/seed*"))
                runs = [r for r in runs if json.loads((r / "config.json").read_text())
                        .get("run_spec", {}).get("follower") == follower]
                rows = [m for m in (_run_metrics(r, tail) for r in runs) if m]
                if not rows:
                    continue
                obj = np.array([r["objective"] for r in rows])
                act = np.array([r.get("objective_actual", r["objective"]) for r in rows])
                gap = np.array([r.get("follower_gap", 0.0) for r in rows])
                se = (lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan"))
                lines.append(f"| {method} | `{follower}` | {len(rows)} | {obj.mean():.3f} ± "
                             f"{se(obj):.3f} | {gap_share(obj.mean(), start, best):.0%} | "
                             f"{act.mean():.3f} ± {se(act):.3f} | {gap.mean():.3g} |")
                points.setdefault((batch, method), []).append(
                    (float(gap.mean()), float(obj.mean()), float(act.mean())))
        lines.append("")
    if figure is not None and points:
        _figure(points, Path(figure), start, best)
    return "\n".join(lines)


def _figure(points, path: Path, start: float, best: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({b for b, _ in points})
    fig, axes = plt.subplots(1, len(batches), figsize=(5.5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches):
        for (b, method), pts in sorted(points.items()):
            if b != batch:
                continue
            pts = sorted(pts)
            gap = np.maximum([p[0] for p in pts], 1e-6)
            line, = ax.plot(gap, [p[1] for p in pts], "o-", label=f"{method}: J under g*")
            ax.plot(gap, [p[2] for p in pts], "x--", color=line.get_color(),
                    label=f"{method}: J under the actual follower")
        ax.axhline(best, color="k", lw=1, ls=":", label=f"best known ({best})")
        ax.axhline(start, color="grey", lw=1, ls=":", label=f"start ({start})")
        ax.set_xscale("log")
        ax.set_xlabel("follower's soft-value gap to the best response at S (log; exact = 1e-6)")
        ax.set_ylabel("final exact leader objective J")
        ax.set_title(f"Four-Rooms β = {BETA}, batch {batch}")
        ax.legend(fontsize=7)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """``bilevel reproduce followers [options]`` (module docstring)."""
    p = Parser(prog="bilevel reproduce followers", description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("task", choices=["followers"])
    p.add_argument("--batches", type=number(int, low=1), nargs="+", default=[100, 1000])
    p.add_argument("--seeds", type=seeds_type, default=list(range(10)),
                   help="the seeds of every cell, e.g. 0-9 or 0,3,5")
    p.add_argument("--iterations", type=number(int, low=1), default=10_000)
    p.add_argument("--methods", help="comma list among " + ",".join(METHODS))
    p.add_argument("--followers", help="comma list of follower specs (default: the study's)")
    p.add_argument("--eval-every", type=number(int, low=1), default=10)
    p.add_argument("--workers", type=number(int, low=1), default=1)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="results/followers")
    p.add_argument("--report", help="Markdown report (default: OUT/followers.md)")
    p.add_argument("--no-run", action="store_true", help="only write the report")
    args = p.parse_args(argv)
    methods = args.methods.split(",") if args.methods else None
    followers = args.followers.split(",") if args.followers else None
    specs = followers_specs(out=args.out, batches=args.batches, seeds=args.seeds,
                            iterations=args.iterations, methods=methods, followers=followers,
                            eval_every=args.eval_every)
    print(f"{len(specs)} runs under {args.out}")
    if not args.no_run:
        run_sweep(specs, workers=args.workers, backend=args.backend)
    report = Path(args.report) if args.report else Path(args.out) / "followers.md"
    tail = min(1000, args.iterations)
    text = followers_report(out=args.out, batches=args.batches, tail=tail,
                            figure=report.with_name(report.stem + "_gap.png"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Followers that are not oracles (`bilevel reproduce followers`)\n\n"
                      + text + "\n")
    print(text)
    print(f"wrote {report}")
    return 0
