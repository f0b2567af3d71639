"""Followers that are not oracles: how BC-HG and the baselines cope, in one command.

    bilevel reproduce followers                       # the Four-Rooms study below
    bilevel reproduce followers --problem toy         # the toy Markov game study
    bilevel reproduce followers --seeds 0-2 --iterations 2000 --batches 100
    bilevel reproduce followers --no-run              # only the report of what is there

The Four-Rooms study: β = 0.003 (slip 1/3), batch 100 and 1000, every method of
:data:`METHODS` at its authors' best grid point, against every follower of :data:`FOLLOWERS`:
the exact best response; the authors' sub-optimal followers, k ∈ {1, 5, 20, 50} policy
iterations × 5 backups from a start carried across outer iterations or drawn afresh from
N(0, 1); and tabular soft Q-learning with 100 or 1000 of its own transitions per leader update
(the two-timescale ratio).

The toy-game study (``--problem toy``): R = 2, β = 0.05, the game's documented protocol
(500 iterations, 3 episodes × 150 rounds, Adam 0.003), BC-HG and Bi-AC against the exact
follower, k-step soft Q-iteration followers (one backup per step, carried or reset) and soft
Q-learning with 450 or 4500 own rounds per leader update (the leader collects 450), exploring
with ε = 0.2 (without exploration the Boltzmann learner at β = 0.05 all but stops visiting A).

Each run logs, every ``eval_every`` iterations, the exact objective under the exact best response
(``objective``; the toy's 150-step return ``return_150``), the exact objective under the
follower it actually faces (``objective_actual``; ``return_150_actual``) and the follower's
soft-value gap to the best response at the start (``follower_gap``).

Score: per run the mean over its last ``tail`` iterations of each metric; per cell the seed mean
± SE; beside it the share of the gap from the start value to the best known value
(:mod:`~bilevel_agents.experiments.references`; on the toy game the start is within 0.01 of the
best, so the table gives the distance below the best instead). The figure plots the final J
(under the best response and under the actual follower) against the follower's gap, one line per
method.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bilevel_agents.cli_types import Parser, number, seed_list
from bilevel_agents.cli_types import seeds as seeds_type
from bilevel_agents.experiments.references import FOUR_ROOMS, TOY_GAME, gap_share
from bilevel_agents.experiments.sweep import RunSpec, run_sweep
from bilevel_envs.followers.specs import split_follower_list

__all__ = ["FOLLOWERS", "METHODS", "STUDIES", "Study", "followers_report", "followers_specs",
           "main"]

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


@dataclass(frozen=True)
class Study:
    """One problem of the followers study.

    Attributes:
        env, env_kwargs, beta: the problem.
        methods: method → (CLI name, leader kwargs).
        followers: the follower specs.
        metric: the logged exact metric under the best response (``metric + "_actual"`` under
            the actual follower).
        iterations, tail, eval_every: the protocol's defaults.
        batched: whether the study has a batch-size axis (``batch_size``, ``n_envs``).
    """

    env: str
    env_kwargs: dict
    beta: float
    methods: dict
    followers: tuple
    metric: str
    iterations: int
    tail: int
    eval_every: int
    batched: bool

    def reference(self) -> tuple[float, float]:
        """(start value, best known value) of :attr:`metric`."""
        if self.batched:
            return FOUR_ROOMS[(self.beta, 1 / 3)]
        from bilevel_agents.exact.games import toy_objective

        start = toy_objective(np.full((3, 2), 0.5), horizon=150, gamma=1.0, beta=self.beta,
                              reward=self.env_kwargs["reward"])
        return start, TOY_GAME[self.env_kwargs["reward"]]["best_undiscounted"]


#: the two studies: ``--problem four-rooms`` (default) and ``--problem toy``
STUDIES: dict[str, Study] = {
    "four-rooms": Study(ENV, {}, BETA, METHODS, FOLLOWERS, "objective", 10_000, 1000, 10, True),
    "toy": Study("toy_game_v0", {"reward": 2}, 0.05,
                 {"BC-HG": ("bchg", {}), "Bi-AC": ("biac", {})},
                 ("exact", "kstep:1:carry", "kstep:1:reset", "kstep:5:reset", "kstep:20:reset",
                  "soft-q-learning:steps=450,epsilon=0.2",
                  "soft-q-learning:steps=4500,epsilon=0.2"),
                 "return_150", 500, 200, 10, False),
}


def _study(problem: str | Study) -> Study:
    if isinstance(problem, Study):
        return problem
    if problem not in STUDIES:
        raise ValueError(f"problem must be one of {sorted(STUDIES)}, got {problem!r}")
    return STUDIES[problem]


def _root(out: str | Path, study: Study, batch: int | None) -> Path:
    return Path(out) / (f"batch{batch}" if study.batched else "toy")


def followers_specs(*, out: str | Path, batches: Sequence[int] = (100, 1000),
                    seeds: int | Sequence[int] = 10,
                    iterations: int | None = None, methods: Sequence[str] | None = None,
                    followers: Sequence[str] | None = None, tail: int | None = None,
                    eval_every: int | None = None,
                    problem: str | Study = "four-rooms") -> list[RunSpec]:
    """The run specs of the study of ``problem`` (one folder per batch size on Four-Rooms;
    ``batches`` does not apply to the toy game, which has its documented protocol)."""
    study = _study(problem)
    iterations = study.iterations if iterations is None else iterations
    tail = study.tail if tail is None else tail
    methods = list(methods or study.methods)
    unknown = sorted(set(methods) - set(study.methods))
    if unknown:
        raise ValueError(f"unknown methods {unknown}; known: {list(study.methods)}")
    specs = []
    for batch in (batches if study.batched else (None,)):
        root = _root(out, study, batch)
        for method in methods:
            name, kwargs = study.methods[method]
            if batch is not None:
                kwargs = {**kwargs, "batch_size": batch, "n_envs": max(1, batch // 200)}
            for follower in followers or study.followers:
                for seed in seed_list(seeds):
                    specs.append(RunSpec(
                        env=study.env, env_kwargs=dict(study.env_kwargs), leader=name,
                        beta=study.beta, seed=seed, iterations=iterations,
                        leader_kwargs=dict(kwargs), out=str(root), tail=min(tail, iterations),
                        follower=follower, eval_every=eval_every or study.eval_every))
    return specs


def _run_metrics(run: Path, tail: int, metric: str) -> dict[str, float] | None:
    import csv

    path = run / "metrics.csv"
    if not (run / "summary.json").exists() or not path.exists():
        return None
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    last = float(rows[-1]["iteration"])
    rows = [r for r in rows if float(r["iteration"]) > last - tail]  # the last `tail` iterations
    out = {}
    for key, name in ((metric, "objective"), (metric + "_actual", "objective_actual"),
                      ("follower_gap", "follower_gap")):
        vals = np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")])
        vals = vals[np.isfinite(vals)]
        if vals.size:
            out[name] = float(vals.mean())
    return out


def followers_report(*, out: str | Path, batches: Sequence[int] = (100, 1000),
                     tail: int | None = None, figure: str | Path | None = None,
                     problem: str | Study = "four-rooms") -> str:
    """Markdown tables (one per batch size) and the figure of J vs the follower's gap."""
    from bilevel_agents.leaders import get_leader

    study = _study(problem)
    tail = study.tail if tail is None else tail
    start, best = study.reference()
    lines: list[str] = []
    points: dict[tuple[Any, str], list[tuple[float, float, float]]] = {}
    what = "150-step return" if study.metric != "objective" else "J"
    share_head = "share of gap" if study.batched else "below the best"
    for batch in (batches if study.batched else (None,)):
        root = _root(out, study, batch)
        specs_found = [(r, json.loads((r / "config.json").read_text()).get("run_spec", {}))
                       for r in sorted(root.glob("*/seed*")) if (r / "config.json").exists()]
        title = (f"Batch {batch} (β = {study.beta}" if batch is not None
                 else f"Toy game R = {study.env_kwargs['reward']} (β = {study.beta}")
        lines += [f"### {title}, start {what} = {start:.3f}, best known {best})", "",
                  f"| method | follower | seeds | {what} under the best response ± SE | "
                  f"{share_head} | {what} under the actual follower ± SE | "
                  "follower gap (start) |",
                  "|---|---|---|---|---|---|---|"]
        for method, (name, _) in study.methods.items():
            for follower in study.followers:
                runs = [r for r, spec in specs_found if spec.get("follower") == follower
                        and spec.get("leader") == get_leader(name).name]
                rows = [m for m in (_run_metrics(r, tail, study.metric) for r in runs) if m]
                if not rows:
                    continue
                obj = np.array([r["objective"] for r in rows])
                act = np.array([r.get("objective_actual", r["objective"]) for r in rows])
                gap = np.array([r.get("follower_gap", 0.0) for r in rows])
                se = (lambda x: x.std(ddof=1) / np.sqrt(len(x)) if len(x) > 1 else float("nan"))
                score = (f"{gap_share(obj.mean(), start, best):.0%}" if study.batched
                         else f"{best - obj.mean():.2f}")
                lines.append(f"| {method} | `{follower}` | {len(rows)} | {obj.mean():.3f} ± "
                             f"{se(obj):.3f} | {score} | {act.mean():.3f} ± {se(act):.3f} | "
                             f"{gap.mean():.3g} |")
                points.setdefault((batch, method), []).append(
                    (float(gap.mean()), float(obj.mean()), float(act.mean())))
        lines.append("")
    if figure is not None and points:
        _figure(points, Path(figure), start, best, study)
    return "\n".join(lines)


def _figure(points, path: Path, start: float, best: float, study: Study) -> None:
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
            line, = ax.plot(gap, [p[1] for p in pts], "o-", label=f"{method}: under g*")
            ax.plot(gap, [p[2] for p in pts], "x--", color=line.get_color(),
                    label=f"{method}: under the actual follower")
        ax.axhline(best, color="k", lw=1, ls=":", label=f"best known ({best:.3f})")
        ax.axhline(start, color="grey", lw=1, ls=":", label=f"start ({start:.3f})")
        ax.set_xscale("log")
        ax.set_xlabel("follower's soft-value gap to the best response at S (log; exact = 1e-6)")
        ax.set_ylabel("final exact leader objective J" if study.batched
                      else "final exact 150-step leader return")
        ax.set_title(f"Four-Rooms β = {study.beta}, batch {batch}" if study.batched
                     else f"Toy game R = {study.env_kwargs['reward']}, β = {study.beta}")
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
    p.add_argument("--problem", choices=sorted(STUDIES), default="four-rooms",
                   help="the study: Four-Rooms (batch axis) or the toy Markov game")
    p.add_argument("--batches", type=number(int, low=1), nargs="+", default=[100, 1000],
                   help="Four-Rooms batch sizes (the toy game has its documented protocol)")
    p.add_argument("--seeds", type=seeds_type, default=list(range(10)),
                   help="the seeds of every cell, e.g. 0-9 or 0,3,5")
    p.add_argument("--iterations", type=number(int, low=1),
                   help="outer iterations per run (default: the study's, 10000 / 500)")
    p.add_argument("--methods", help="comma list among the study's methods: "
                   + "; ".join(f"{k}: " + ",".join(v.methods) for k, v in STUDIES.items()))
    p.add_argument("--followers", help="comma list of follower specs (default: the study's); "
                                       "a comma inside a spec's options is kept")
    p.add_argument("--eval-every", type=number(int, low=1), default=10)
    p.add_argument("--tail", type=number(int, low=1),
                   help="score = mean of the last TAIL iterations (default: the study's, 1000 / 200)")
    p.add_argument("--workers", type=number(int, low=1), default=1)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="results/followers")
    p.add_argument("--report", help="Markdown report (default: OUT/followers.md, "
                                    "OUT/followers_toy.md for the toy game)")
    p.add_argument("--no-run", action="store_true", help="only write the report")
    args = p.parse_args(argv)
    study = STUDIES[args.problem]
    methods = args.methods.split(",") if args.methods else None
    followers = split_follower_list(args.followers) if args.followers else None
    if methods and set(methods) - set(study.methods):
        p.error(f"--methods: unknown {sorted(set(methods) - set(study.methods))} for "
                f"--problem {args.problem}; known: {','.join(study.methods)}")
    iterations = args.iterations or study.iterations
    tail = min(args.tail or study.tail, iterations)
    specs = followers_specs(out=args.out, batches=args.batches, seeds=args.seeds,
                            iterations=iterations, methods=methods, followers=followers,
                            eval_every=args.eval_every, problem=study, tail=tail)
    print(f"{len(specs)} runs under {args.out}")
    if not args.no_run:
        run_sweep(specs, workers=args.workers, backend=args.backend)
    report = Path(args.report) if args.report else Path(args.out) / (
        "followers.md" if study.batched else "followers_toy.md")
    text = followers_report(out=args.out, batches=args.batches, tail=tail, problem=study,
                            figure=report.with_name(report.stem + "_gap.png"))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text("# Followers that are not oracles (`bilevel reproduce followers`)\n\n"
                      + text + "\n")
    print(text)
    print(f"wrote {report}")
    return 0
