"""``bilevel`` command line: train (grids × seeds), evaluate, plot, bench.

Examples::

    bilevel train --env BiLevel/FourRooms-v0 --leader bchg --beta 0.001 --batch-size 100 \\
        --iterations 10000 --seeds 0-9 --lr 0.5,0.1 --sarsa-alpha 0.3,0.5 --out results/fr
    bilevel evaluate results/fr --best-known 0.608
    bilevel plot results/fr --best-known 0.608
    bilevel bench
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["main", "parse_seeds"]


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"2"`` → list of ints."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = part.split("-")
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds must look like '0-9' or '0,3,5', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must be non-negative integers, got {text!r}")
    return seeds


def _value(text: str) -> Any:
    low = text.lower()
    if low in ("none", "null"):
        return None
    if low in ("true", "false"):
        return low == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _pairs(items: list[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} takes key=value, got {item!r}")
        key, val = item.split("=", 1)
        out[key] = _value(val)
    return out


def _list(text: str | None) -> list[Any] | None:
    return None if text is None else [_value(t) for t in text.split(",")]


def _cmd_train(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.sweep import RunSpec, grid, run_sweep
    from bilevel_agents.leaders import get_leader

    get_leader(args.leader)  # an unknown name is a usage error before anything runs
    axes = {k: v for k, v in (("lr", _list(args.lr)), ("batch_size", _list(args.batch_size)),
                               ("sarsa_alpha", _list(args.sarsa_alpha))) if v is not None}
    fixed = _pairs(args.leader_kwargs, "--leader-kwargs")
    env_kwargs = _pairs(args.env_kwargs, "--env-kwargs")
    specs = [RunSpec(env=args.env, leader=args.leader, beta=args.beta, seed=seed,
                     iterations=args.iterations, leader_kwargs={**fixed, **point},
                     env_kwargs=env_kwargs, out=args.out, tail=args.tail)
             for point in grid(**axes) for seed in parse_seeds(args.seeds)]
    if len(specs) == 1:  # a single run shows its own progress bar
        from bilevel_agents.experiments.sweep import run_one

        results = [run_one(specs[0], progress=True)]
    else:
        results = run_sweep(specs, workers=args.workers, backend=args.backend)
    scores = [r["tail_mean_objective"] for r in results if "tail_mean_objective" in r]
    print(f"{len(results)} runs in {args.out}; mean last-{args.tail} objective "
          f"{sum(scores) / max(len(scores), 1):.4f}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.results import score_table

    rows = score_table(args.results, tail=args.tail)
    if not rows:
        print(f"no runs with an objective under {args.results}")
        return 1
    print(f"| grid point | seeds | iterations | last-{args.tail} mean J ± SE |"
          + (" share of gap |" if args.best_known is not None else ""))
    print("|---|---|---|---|" + ("---|" if args.best_known is not None else ""))
    for r in rows:
        line = f"| {r['point']} | {r['seeds']} | {r['iterations']} | {r['mean']:.4f} ± {r['se']:.4f} |"
        if args.best_known is not None:
            start = args.start if args.start is not None else 0.0
            line += f" {(r['mean'] - start) / (args.best_known - start):.1%} |"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.results import plot_results

    for path in plot_results(args.results, args.out, tail=args.tail,
                             best_known=args.best_known):
        print(path)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    root = Path(args.dir)
    scripts = sorted(root.glob("bench_*.py")) if root.is_dir() else []
    if not scripts:
        raise ValueError(f"no benchmarks found in {str(root)!r} (run from the repository root)")
    code = 0
    for script in scripts:
        if args.only and args.only not in script.name:
            continue
        print(f"== {script.name}", flush=True)
        code |= subprocess.call([sys.executable, str(script)] + (["--quick"] if args.quick else []))
    return code


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.reproduce import main as reproduce

    return reproduce([args.task, *args.options])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bilevel", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a leader over a grid of hyper-parameters × seeds")
    t.add_argument("--env", default="BiLevel/FourRooms-v0")
    t.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--leader", default="bchg")
    t.add_argument("--beta", type=float, default=0.001)
    t.add_argument("--iterations", type=int, default=10_000)
    t.add_argument("--seeds", default="0")
    t.add_argument("--lr", help="comma list, e.g. 0.5,0.1")
    t.add_argument("--batch-size", help="comma list of transitions per iteration")
    t.add_argument("--sarsa-alpha", help="comma list of SARSA step sizes")
    t.add_argument("--leader-kwargs", nargs="*", metavar="KEY=VALUE")
    t.add_argument("--out", default="results/run")
    t.add_argument("--workers", type=int, default=1)
    t.add_argument("--backend", default="local", choices=["local", "ray"])
    t.add_argument("--tail", type=int, default=1000)
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="score table of a results folder")
    e.add_argument("results")
    e.add_argument("--tail", type=int, default=1000)
    e.add_argument("--best-known", type=float)
    e.add_argument("--start", type=float, help="objective at the start (for the gap share)")
    e.add_argument("--json", help="also write the table as JSON here")
    e.set_defaults(func=_cmd_evaluate)

    pl = sub.add_parser("plot", help="learning curves and incentive map of a results folder")
    pl.add_argument("results")
    pl.add_argument("--out")
    pl.add_argument("--tail", type=int, default=1000)
    pl.add_argument("--best-known", type=float)
    pl.set_defaults(func=_cmd_plot)

    b = sub.add_parser("bench", help="run the benchmarks in ./benchmarks")
    b.add_argument("--dir", default="benchmarks")
    b.add_argument("--only", help="substring of the benchmark file name")
    b.add_argument("--quick", action="store_true")
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser("reproduce", help="re-run a paper experiment (bilevel_agents.reproduce)")
    r.add_argument("task", choices=["four-rooms"])
    r.add_argument("options", nargs=argparse.REMAINDER, help="see `bilevel reproduce TASK -h`")
    r.set_defaults(func=_cmd_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ValueError as err:
        print(f"bilevel: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
