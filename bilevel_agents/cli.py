"""``bilevel`` command line: train (grids × seeds), evaluate, plot, bench, reproduce.

Examples::

    bilevel train --env BiLevel/FourRooms-v0 --leader bchg --beta 0.001 --batch-size 100 \\
        --iterations 10000 --seeds 0-9 --lr 0.5,0.1 --sarsa-alpha 0.3,0.5 --out results/fr
    bilevel train --config fr.yaml --seeds 0-2      # flags from a YAML file; the CLI wins
    bilevel evaluate results/fr --best-known 0.608 --iqm
    bilevel plot results/fr --best-known 0.608
    bilevel bench --quick

A user error (a bad number, an unknown env, leader or option, a leader that does not fit the
env, a missing or damaged results folder, an unwritable output folder, a results folder of
another run, a bad ``--config`` file) ends with one line naming the problem and exit code 2.

``bilevel --help`` imports neither torch nor numpy: every command imports what it needs when it
runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

from bilevel_agents.cli_types import (
    Parser,
    apply_config,
    number,
    number_list,
    parse_seeds,
    seeds,
)

__all__ = ["build_parser", "main", "parse_seeds"]


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


def _pairs(items: list[str] | dict[str, Any] | None, flag: str) -> dict[str, Any]:
    if isinstance(items, dict):  # from a --config file: values keep their YAML types
        return dict(items)
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"{flag} takes key=value, got {item!r}")
        key, val = item.split("=", 1)
        out[key] = _value(val)
    return out


def _existing_folder(path: str) -> Path:
    root = Path(path)
    if not root.is_dir():
        raise ValueError(f"results folder {path!r} does not exist")
    return root


# ---------------------------------------------------------------------- commands
def _cmd_train(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.sweep import RunSpec, default_beta, grid, run_one, run_sweep
    from bilevel_agents.leaders import get_leader

    get_leader(args.leader)  # an unknown name is a usage error before anything runs
    if args.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise ValueError("--tensorboard needs the tensorboard package: "
                         "pip install 'bilevel[tensorboard]'")
    env_kwargs = _pairs(args.env_kwargs, "--env-kwargs")
    beta = args.beta if args.beta is not None else default_beta(args.env, env_kwargs)
    axes = {k: v for k, v in (("lr", args.lr), ("batch_size", args.batch_size),
                              ("sarsa_alpha", args.sarsa_alpha)) if v is not None}
    fixed = _pairs(args.leader_kwargs, "--leader-kwargs")
    specs = [RunSpec(env=args.env, leader=args.leader, beta=beta, seed=seed,
                     iterations=args.iterations, leader_kwargs={**fixed, **point},
                     env_kwargs=env_kwargs, out=args.out, tail=args.tail,
                     checkpoint_every=args.checkpoint_every, follower=args.follower,
                     tensorboard=args.tensorboard)
             for point in grid(**axes) for seed in args.seeds]
    if len(specs) == 1:  # a single run shows its own progress bar
        results = [run_one(specs[0], progress=True)]
    else:
        results = run_sweep(specs, workers=args.workers, backend=args.backend)
    scores = [r["tail_mean_objective"] for r in results if "tail_mean_objective" in r]
    score = f"{sum(scores) / len(scores):.4f}" if scores else "n/a (no exact objective)"
    print(f"{len(results)} runs in {args.out}; mean last-{args.tail} objective {score}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.references import gap_share
    from bilevel_agents.experiments.results import score_table

    rows = score_table(_existing_folder(args.results), tail=args.tail)
    if not rows:
        raise ValueError(f"no runs with an objective under {args.results!r}")
    gap = args.best_known is not None
    if args.iqm:
        from bilevel_agents.experiments.results import aggregate

        for r in rows:
            r["iqm"] = aggregate(r["scores"])
    print(f"| grid point | seeds | iterations | start J | last-{args.tail} mean J ± SE |"
          + (" share of gap |" if gap else "")
          + (" IQM over seeds | 95% CI (stratified bootstrap) |" if args.iqm else ""))
    print("|---|---|---|---|---|" + ("---|" if gap else "") + ("---|---|" if args.iqm else ""))
    for r in rows:
        start = args.start if args.start is not None else r["start"]
        line = (f"| {r['point']} | {r['seeds']} | {r['iterations']} | "
                f"{'n/a' if start is None else f'{start:.4f}'} | "
                f"{r['mean']:.4f} ± {r['se']:.4f} |")
        if gap:
            if start is None or start == args.best_known:
                line += " n/a |"
            else:
                line += f" {gap_share(r['mean'], start, args.best_known):.1%} |"
        if args.iqm:
            q = r["iqm"]
            line += f" {q['iqm']:.4f} | [{q['low']:.4f}, {q['high']:.4f}] |"
        print(line)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1, default=str))
    return 0


def _cmd_plot(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.results import plot_results

    for path in plot_results(_existing_folder(args.results), args.out, tail=args.tail,
                             best_known=args.best_known, start=args.start, seed=args.seed,
                             band=args.band, all_points=args.all_points):
        print(path)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from bilevel_agents import benchmarks

    names = benchmarks.available()
    if args.list:
        print("\n".join(names))
        return 0
    chosen = [n for n in names if args.only is None or args.only in n]
    if not chosen:
        raise ValueError(f"--only {args.only!r} matches no benchmark; available: {names}")
    return benchmarks.run(chosen, quick=args.quick)


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from bilevel_agents.experiments.reproduce import main as reproduce

    return reproduce([args.task, *args.options])


def build_parser() -> argparse.ArgumentParser:
    """The ``bilevel`` parser (help shows every default)."""
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = Parser(prog="bilevel", description=__doc__.split("\n")[0].replace("``", ""),
               formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    p.commands = sub.choices  # name -> sub-parser (main() applies --config to its own)

    t = sub.add_parser("train", help="train a leader over a grid of hyper-parameters × seeds",
                       formatter_class=fmt)
    t.add_argument("--env", default="BiLevel/FourRooms-v0",
                   help="a registered Gymnasium id or a game of bilevel_envs.games")
    t.add_argument("--env-kwargs", nargs="*", metavar="KEY=VALUE", help="env keyword arguments")
    t.add_argument("--leader", default="bchg",
                   help="bchg, naive_pgd, hpgd, hpgd_mc, hpgd_sa, hpgd_oracle, sobirl, biac, exact, "
                        "amd, zero_order")
    t.add_argument("--follower", default="exact",
                   help="exact, kstep:K[:carry|reset], soft-q-learning[:k=v,...], "
                        "soft-dqn[:k=v,...], sb3:ALGO[:k=v,...]")
    t.add_argument("--beta", type=number(float, low=0.0, low_open=True),
                   help="the follower's entropy temperature (default: the problem's "
                        "documented one: Four-Rooms 0.001, building 0.1, toy game 0.05, ...)")
    t.add_argument("--iterations", type=number(int, low=1), default=10_000,
                   help="outer iterations of every run")
    t.add_argument("--seeds", type=seeds, default=[0], metavar="SEEDS",
                   help="e.g. 0-9 or 0,3,5")
    t.add_argument("--lr", type=number_list(float, low=0.0, low_open=True),
                   help="comma list of step sizes (a grid axis); default: the method's")
    t.add_argument("--batch-size", type=number_list(int, low=1),
                   help="comma list of transitions per iteration (a grid axis)")
    t.add_argument("--sarsa-alpha", type=number_list(float, low=0.0, high=1.0, low_open=True),
                   help="comma list of SARSA step sizes (a grid axis)")
    t.add_argument("--leader-kwargs", nargs="*", metavar="KEY=VALUE",
                   help="more leader options, e.g. optimizer=adam critic=exact")
    t.add_argument("--out", default="results/run", help="results folder")
    t.add_argument("--workers", type=number(int, low=1), default=1,
                   help="parallel processes (local backend)")
    t.add_argument("--backend", default="local", choices=["local", "ray"])
    t.add_argument("--tail", type=number(int, low=1), default=1000,
                   help="the score is the mean objective over the last TAIL iterations")
    t.add_argument("--checkpoint-every", type=number(int, low=1), default=500,
                   help="checkpoint period in iterations")
    t.add_argument("--tensorboard", action=argparse.BooleanOptionalAction, default=False,
                   help="also write TensorBoard events to every run folder (RUN/tb; needs "
                        "the tensorboard extra)")
    t.add_argument("--config", metavar="FILE.yaml",
                   help="a YAML file of flag values (keys: the flag names with _ or -, e.g. "
                        "batch_size: [100, 200]); flags given here override it")
    t.set_defaults(func=_cmd_train)

    e = sub.add_parser("evaluate", help="score table of a results folder", formatter_class=fmt)
    e.add_argument("results", help="a results folder written by `bilevel train`")
    e.add_argument("--tail", type=number(int, low=1), default=1000,
                   help="score = mean objective over the last TAIL iterations")
    e.add_argument("--best-known", type=number(float), help="best known objective")
    e.add_argument("--start", type=number(float),
                   help="start objective for the gap share (default: each run's first value)")
    e.add_argument("--json", help="also write the table as JSON here")
    e.add_argument("--iqm", action="store_true",
                   help="add the interquartile mean over seeds and its 95%% stratified-"
                        "bootstrap interval (rliable's estimator)")
    e.set_defaults(func=_cmd_evaluate)

    pl = sub.add_parser("plot", help="learning curves and incentive map of a results folder",
                        formatter_class=fmt)
    pl.add_argument("results", help="a results folder written by `bilevel train`")
    pl.add_argument("--out", help="where the figures go (default: the results folder)")
    pl.add_argument("--tail", type=number(int, low=1), default=1000,
                    help="the legend's score = mean objective over the last TAIL iterations")
    pl.add_argument("--best-known", type=number(float),
                    help="best known objective (default: the problem's documented one, if any)")
    pl.add_argument("--start", type=number(float),
                    help="start objective (default: the problem's documented one, else the "
                         "runs' mean first value)")
    pl.add_argument("--seed", type=number(int, low=0),
                    help="the run of the incentive map (default: the best run of the best grid "
                         "point)")
    pl.add_argument("--band", choices=["se", "bootstrap"], default="se",
                    help="the curves' band: ±1 standard error over seeds, or a 95%% bootstrap "
                         "interval of the seed mean")
    pl.add_argument("--all-points", action="store_true",
                    help="a curve per grid point (default: the best grid point of each leader)")
    pl.set_defaults(func=_cmd_plot)

    b = sub.add_parser("bench", help="run the speed and accuracy benchmarks",
                       formatter_class=fmt)
    b.add_argument("--only", help="substring of a benchmark's name")
    b.add_argument("--quick", action="store_true", help="short settings")
    b.add_argument("--list", action="store_true", help="list the benchmarks")
    b.set_defaults(func=_cmd_bench)

    r = sub.add_parser("reproduce", help="re-run a paper experiment", formatter_class=fmt)
    r.add_argument("task", choices=["four-rooms", "hpgd-table1", "followers"])
    r.add_argument("options", nargs=argparse.REMAINDER, help="see `bilevel reproduce TASK -h`")
    r.set_defaults(func=_cmd_reproduce)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code (2 for a user error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is not None:  # the file's values become defaults
        apply_config(parser.commands[args.command], args.config)
        args = parser.parse_args(argv)
    from bilevel_agents.runs import RunBusy

    try:
        return int(args.func(args) or 0)
    except (ValueError, RunBusy) as err:
        print(f"bilevel: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. an unwritable --out
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"bilevel: error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("bilevel: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
