"""Re-run the paper's Four-Rooms comparison (paper §5.1, Fig. 2 and App. C.2 Fig. 6) in one command.

    bilevel reproduce four-rooms                 # the full study, consistent model (hours)
    bilevel reproduce four-rooms --quick         # authors' best grid points, batch 100, 3 seeds
    bilevel reproduce four-rooms --backend ray   # on an existing Ray cluster (RAY_ADDRESS)
    bilevel reproduce four-rooms --slips 0.44 --simulator-slip-prob 0.3333333333333333
                                                 # the authors' dynamics (their numbers' setting)
    bilevel reproduce four-rooms --methods hpgd_oracle --oracle-unvisited zero --grid best
                                                 # the oracle as the authors' numbers suggest

Every method (BC-HG, HPGD (MC / SA / oracle), SoBiRL, NAIVE-PGD, and exact ascent as a
reference), β ∈ {0.001, 0.003, 0.005}, batch ∈ {100, 200, 400, 1000}, the paper's grids
(lr ∈ {0.5, 0.1, 0.05, 0.01}, α_SA ∈ {0.1, 0.3, 0.5, 0.7, 0.9, 1.0} for the SARSA critics),
10 seeds, 10,000 iterations, with the consistent model (slip 1/3 for the samples, the follower
and the score); ``--slips 0.44 --simulator-slip-prob 1/3`` runs the same study with the authors'
mismatched simulator (samples drawn with slip 1/3, follower and score on slip 0.44), the setting
in which their published numbers were obtained, and ``--slips 0.44`` alone the consistent model
of the authors' solver matrix. The score of a grid point is the seed mean of the
last-1000-iteration mean exact objective; the best grid point per method is reported with its
standard error over seeds, the share of the gap closed from the start value to the best known
value (docs/known_optima.md) and the authors' published numbers
(obtained with their dynamics, i.e. slip 0.44).

Runs go through :func:`bilevel_agents.sweep.run_sweep`: finished runs are read back, interrupted
ones resume. The folder layout is the one of ``examples/four_rooms_sweep.py``
(``OUT/beta{β}_slip{slip}/<leader>_batch_size100_lr.../seed{k}``; batches other than 100 get a
``_batch{n}`` suffix on the cell folder, a mismatched simulator ``_sim{slip}``), so runs made by
either are shared.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from bilevel_agents.cli_types import Parser, number, seed_list
from bilevel_agents.cli_types import seeds as seeds_type
from bilevel_agents.experiments.references import FOUR_ROOMS, FOUR_ROOMS_AUTHORS
from bilevel_agents.experiments.sweep import RunSpec, grid, run_sweep
from bilevel_agents.leaders.hpgd import ORACLE_STARTS, UNVISITED

__all__ = ["AUTHORS", "BEST_POINTS", "REFERENCE", "four_rooms_report", "four_rooms_specs",
           "main", "stream_layout"]

ENV = "BiLevel/FourRooms-v0"
LRS = (0.5, 0.1, 0.05, 0.01)
ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
METHODS = ("bchg", "hpgd_mc", "hpgd_sa", "hpgd_oracle", "sobirl", "naive_pgd", "exact")
LABELS = {"bchg": "BC-HG", "hpgd_mc": "HPGD (MC)", "hpgd_sa": "HPGD (SA)",
          "hpgd_oracle": "HPGD (oracle)", "sobirl": "SoBiRL", "naive_pgd": "NAIVE-PGD",
          "exact": "exact ascent"}
_SARSA = {"bchg", "hpgd_sa"}


def stream_layout(batch: int) -> int:
    """The authors' streams of a batch (``n_envs``, as in the authors' code):
    one stream up to 200 transitions, else ``batch / 200`` streams of 200 steps (400 = 2 × 200,
    1000 = 5 × 200), each starting at S; other sizes one stream."""
    batch = int(batch)
    return batch // 200 if batch > 200 and batch % 200 == 0 else 1

#: (β, model slip) → (J at the start θ, best known J) (``references.FOUR_ROOMS``)
REFERENCE = FOUR_ROOMS
#: the authors' published values (``references.FOUR_ROOMS_AUTHORS``)
AUTHORS = FOUR_ROOMS_AUTHORS

#: the authors' best grid points at batch 100 (facts §4.2, cross-check from their checkpoints):
#: β → method → leader kwargs (used by ``--quick``)
BEST_POINTS: dict[float, dict[str, dict[str, float]]] = {
    0.001: {"bchg": {"lr": 0.1, "sarsa_alpha": 0.3}, "hpgd_oracle": {"lr": 0.05},
            "hpgd_mc": {"lr": 0.1}, "hpgd_sa": {"lr": 0.5, "sarsa_alpha": 0.9},
            "sobirl": {"lr": 0.5}, "naive_pgd": {"lr": 0.5}, "exact": {"lr": 0.1}},
    0.003: {"bchg": {"lr": 0.05, "sarsa_alpha": 0.5}, "hpgd_oracle": {"lr": 0.05},
            "hpgd_mc": {"lr": 0.01}, "hpgd_sa": {"lr": 0.05, "sarsa_alpha": 0.9},
            "sobirl": {"lr": 0.5}, "naive_pgd": {"lr": 0.5}, "exact": {"lr": 0.1}},
    0.005: {"bchg": {"lr": 0.1, "sarsa_alpha": 0.5}, "hpgd_oracle": {"lr": 0.5},
            "hpgd_mc": {"lr": 0.05}, "hpgd_sa": {"lr": 0.05, "sarsa_alpha": 0.7},
            "sobirl": {"lr": 0.5}, "naive_pgd": {"lr": 0.5}, "exact": {"lr": 0.1}},
}


def cell_dir(out: str | Path, beta: float, slip: float, batch: int,
             simulator_slip_prob: float | None = None) -> Path:
    """Folder of one (β, slip, batch) cell (batch 100 shares the examples' layout; a simulator
    with another slip than the model gets a suffix of its own)."""
    suffix = "" if batch == 100 else f"_batch{batch}"
    if simulator_slip_prob is not None:
        suffix += f"_sim{simulator_slip_prob:.2f}"
    return Path(out) / f"beta{beta}_slip{slip:.2f}{suffix}"


def _points(method: str, beta: float, full_grid: bool) -> list[dict[str, Any]]:
    if not full_grid:
        return [dict(BEST_POINTS[beta][method])]
    if method == "exact":
        return [{"lr": 0.1}]
    if method in _SARSA:
        return grid(lr=LRS, sarsa_alpha=ALPHAS)
    return grid(lr=LRS)


def four_rooms_specs(*, out: str | Path, betas: Sequence[float], batches: Sequence[int],
                     slips: Sequence[float], seeds: int | Sequence[int], iterations: int,
                     methods: Sequence[str] = METHODS, full_grid: bool = True,
                     exact_seeds: int = 3, oracle_starts: str = "first",
                     oracle_unvisited: str = "drop",
                     simulator_slip_prob: float | None = None) -> list[RunSpec]:
    """Every run of the study (exact ascent: ``exact_seeds`` seeds, batch-independent).

    ``simulator_slip_prob`` samples every run's transitions with another slip than the model of
    each ``slips`` entry (the follower and the exact score keep the model's): the authors'
    dynamics are ``slips=[0.44], simulator_slip_prob=1/3``.

    ``oracle_starts="every"`` gives HPGD (oracle) the authors' oracle batches (every episode
    from a uniform start; ~10× the cost of the default, see :mod:`bilevel_agents.hpgd`);
    ``oracle_unvisited="zero"`` reads its empty averages as 0 (ibid.).

    Raises:
        ValueError: an unknown method, β without reference values, bad counts.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be among {METHODS}, got {unknown}")
    if oracle_starts not in ORACLE_STARTS or oracle_unvisited not in UNVISITED:
        raise ValueError(f"oracle_starts must be in {ORACLE_STARTS} and oracle_unvisited in "
                         f"{UNVISITED}, got {oracle_starts!r}, {oracle_unvisited!r}")
    # non-default oracle options only, so default runs keep their folder names
    oracle_kw = {k: v for k, v, default in (("oracle_starts", oracle_starts, ORACLE_STARTS[0]),
                                            ("unvisited", oracle_unvisited, UNVISITED[0]))
                 if v != default}
    for beta in betas:
        if beta not in BEST_POINTS:
            raise ValueError(f"betas must be among {sorted(BEST_POINTS)}, got {beta!r}")
    seeds = seed_list(seeds)
    if not seeds or iterations < 1 or any(int(b) < 1 for b in batches):
        raise ValueError(f"seeds must be non-empty, iterations and batches >= 1, got "
                         f"seeds={seeds}, "
                         f"iterations={iterations}, batches={list(batches)}")
    specs = []
    for slip in slips:
        env_kwargs = {} if abs(slip - 1 / 3) < 1e-12 else {"slip_prob": slip}
        if simulator_slip_prob is not None:
            env_kwargs = {**env_kwargs, "simulator_slip_prob": float(simulator_slip_prob)}
        for beta in betas:
            for batch in batches:
                streams = stream_layout(batch)  # the authors' layout: n_envs only when > 1
                layout = {"batch_size": batch, **({"n_envs": streams} if streams > 1 else {})}
                common = dict(env=ENV, beta=beta, iterations=iterations, env_kwargs=env_kwargs,
                              out=str(cell_dir(out, beta, slip, batch, simulator_slip_prob)))
                for method in methods:
                    if method == "exact" and batch != batches[0]:
                        continue
                    run_seeds = seeds[:exact_seeds] if method == "exact" else seeds
                    for point in _points(method, beta, full_grid):
                        kw = point if method == "exact" else {**layout, **point}
                        if method == "hpgd_oracle":
                            kw = {**kw, **oracle_kw}
                        specs += [RunSpec(leader=method, seed=s, leader_kwargs=kw, **common)
                                  for s in run_seeds]
    return specs


#: options that make a different estimator or schedule (with their defaults): such runs get a
#: row of their own instead of competing with the published method as a "grid point"
_VARIANT_DEFAULTS = {"unvisited": UNVISITED[0], "oracle_starts": ORACLE_STARTS[0],
                     "refine_after": None,
                     "optimizer": "sgd", "lr_final": None, "partial": "mc", "n_envs": 1}


def _variant(config: dict[str, Any]) -> str:
    """``"unvisited=zero"``, ``"refine_after=9000"``, ... or ``""`` for the published method
    (whose streams are the authors' layout of its batch, :func:`stream_layout`)."""
    defaults = {**_VARIANT_DEFAULTS,
                "n_envs": stream_layout(config.get("batch_size", 100) or 100)}
    return ", ".join(f"{k}={config[k]}" for k, default in defaults.items()
                     if k in config and config[k] != default)


def _label(row: dict[str, Any]) -> str:
    variant = _variant(row["config"])
    return LABELS.get(row["leader"], row["leader"]) + (f" [{variant}]" if variant else "")


def _order(method: str) -> int:
    return METHODS.index(method) if method in METHODS else len(METHODS)


def best_points(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (method, variant)'s best :func:`~bilevel_agents.experiments.results.score_table`
    row. Only the grid points with the most scored seeds of their method compete, so that a
    point with one seed (a study still running) never beats a point with ten."""
    from bilevel_agents.experiments.results import outranks

    best: dict[tuple[str, str], dict[str, Any]] = {}
    for row in rows:
        key = (row["leader"], _variant(row["config"]))
        if outranks(row, best.get(key)):
            best[key] = row
    return best


def four_rooms_report(*, out: str | Path, betas: Sequence[float], batches: Sequence[int],
                      slips: Sequence[float], tail: int = 1000,
                      plots: str | Path | None = None,
                      simulator_slip_prob: float | None = None) -> str:
    """Markdown tables: best grid point per method, last-``tail`` mean ± SE, the interquartile
    mean over seeds with its 95% stratified-bootstrap interval
    (:func:`~bilevel_agents.experiments.results.aggregate`), share of the gap, the authors'
    numbers (and their share of *their* gap: slip-0.44 reference values; only shares compare
    across the two dynamics) and the best known value; learning curves into ``plots``."""
    from bilevel_agents.experiments.results import aggregate, plot_results, score_table

    lines: list[str] = []
    sim = "" if simulator_slip_prob is None else f", simulator slip {simulator_slip_prob:.2f}"
    for slip in slips:
        for beta in betas:
            start, best = next((v for (b, sl), v in REFERENCE.items()
                                if abs(b - beta) < 1e-9 and abs(sl - slip) < 5e-3), (None, None))
            a_start, a_best = REFERENCE[(beta, 0.44)]  # the authors' dynamics
            heading = f"### β = {beta}, slip = {slip:.2f}{sim} (start {start}, best known {best})"
            lines += [heading, "",
                      "| method | batch | best grid point | seeds | iterations | "
                      f"last-{tail} mean J ± SE | IQM [95% CI] | share of gap | "
                      "authors' J (slip 0.44) | authors' share |",
                      "|---|---|---|---|---|---|---|---|---|---|"]
            for batch in batches:
                root = cell_dir(out, beta, slip, batch, simulator_slip_prob)
                if not root.exists():
                    continue
                seen = best_points(score_table(root, tail))
                for (method, variant), row in sorted(
                        seen.items(), key=lambda kv: (_order(kv[0][0]), kv[0][1])):
                    share = ((row["mean"] - start) / (best - start)) if best is not None \
                        else float("nan")
                    ref = AUTHORS.get((beta, batch), {}).get(method)
                    a_share = "–" if ref is None else f"{(ref - a_start) / (a_best - a_start):.0%}"
                    q = aggregate(row["scores"])
                    lines.append(
                        f"| {_label(row)} | "
                        f"{batch} | `{row['point']}` | {row['seeds']} | "
                        f"{row['iterations']} | {row['mean']:.3f} ± {row['se']:.3f} | "
                        f"{q['iqm']:.3f} [{q['low']:.3f}, {q['high']:.3f}] | {share:.0%} | "
                        f"{'–' if ref is None else f'{ref:.3f}'} | {a_share} |")
                if plots is not None:
                    plot_results(root, Path(plots) / root.name, tail=tail, best_known=best,
                                 title=f"Four-Rooms β={beta}, slip={slip:.2f}{sim}, "
                                       f"batch {batch}",
                                 label=_label)
            lines.append("")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``bilevel reproduce four-rooms [options]`` (see the module docstring); ``hpgd-table1``
    goes to :mod:`bilevel_agents.experiments.reproduce_hpgd`, ``followers`` to
    :mod:`bilevel_agents.experiments.reproduce_followers`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["hpgd-table1"]:
        from bilevel_agents.experiments.reproduce_hpgd import main as hpgd_table1

        return hpgd_table1(argv)
    if argv[:1] == ["followers"]:
        from bilevel_agents.experiments.reproduce_followers import main as followers

        return followers(argv)
    p = Parser(prog="bilevel reproduce", description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("task", choices=["four-rooms"])
    p.add_argument("--quick", action="store_true",
                   help="authors' best grid points only, batch 100, slip 1/3, 3 seeds, "
                        "2000 iterations (overridable by the options below)")
    p.add_argument("--betas", type=number(float, low=0.0, low_open=True), nargs="+")
    p.add_argument("--batches", type=number(int, low=1), nargs="+")
    p.add_argument("--slips", type=number(float, low=0.0, high=1.0), nargs="+")
    p.add_argument("--simulator-slip-prob", type=number(float, low=0.0, high=1.0),
                   help="sample with another slip than the model (the authors' simulator: "
                        "1/3 with --slips 0.44)")
    p.add_argument("--seeds", type=seeds_type,
                   help="the seeds of every grid point, e.g. 0-9 or 0,3,5 (default: 0-9; 0-2 "
                        "with --quick)")
    p.add_argument("--iterations", type=number(int, low=1))
    p.add_argument("--methods", help="comma list among " + ",".join(METHODS))
    p.add_argument("--grid", choices=["full", "best"], help="the paper's grids or the "
                   "authors' best points (default: full, best with --quick)")
    p.add_argument("--oracle-starts", default=ORACLE_STARTS[0], choices=ORACLE_STARTS,
                   help="HPGD (oracle) batches: 'every' = the authors' (each episode from a "
                        "uniform start, ~10x costlier), 'first' = first episode per stream")
    p.add_argument("--oracle-unvisited", default=UNVISITED[0], choices=UNVISITED,
                   help="HPGD (oracle): on-policy pairs its batch missed are dropped, or their "
                        "empty averages read as 0 (see bilevel_agents.leaders.hpgd)")
    p.add_argument("--workers", type=number(int, low=1), default=1)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="results/four_rooms")
    p.add_argument("--report", help="where the Markdown report goes (default: "
                   "OUT/four_rooms_reproduction.md; a file under docs/ only with --write-docs)")
    p.add_argument("--write-docs", action="store_true",
                   help="allow --report to replace a file under docs/ (the shipped results)")
    p.add_argument("--no-run", action="store_true", help="only write the report")
    args = p.parse_args(argv)
    quick = args.quick
    betas = args.betas or [0.001, 0.003, 0.005]
    batches = args.batches or ([100] if quick else [100, 200, 400, 1000])
    slips = args.slips or [1 / 3]
    seeds = args.seeds or list(range(3 if quick else 10))
    iterations = args.iterations or (2000 if quick else 10_000)
    full_grid = (args.grid or ("best" if quick else "full")) == "full"
    methods = tuple(args.methods.split(",")) if args.methods else METHODS
    specs = four_rooms_specs(out=args.out, betas=betas, batches=batches, slips=slips,
                             seeds=seeds, iterations=iterations, methods=methods,
                             full_grid=full_grid, oracle_starts=args.oracle_starts,
                             oracle_unvisited=args.oracle_unvisited,
                             simulator_slip_prob=args.simulator_slip_prob)
    print(f"{len(specs)} runs under {args.out} ({'quick' if quick else 'full'} study)")
    if not args.no_run:
        run_sweep(specs, workers=args.workers, backend=args.backend)
    report = Path(args.report) if args.report else Path(args.out) / "four_rooms_reproduction.md"
    if "docs" in report.resolve().parts and not args.write_docs:
        raise ValueError(f"--report {str(report)!r} is under docs/ (the shipped results); pass "
                         "--write-docs to replace it")
    report.parent.mkdir(parents=True, exist_ok=True)
    text = four_rooms_report(out=args.out, betas=betas, batches=batches, slips=slips,
                             tail=min(1000, iterations),
                             plots=report.parent / (report.stem + "_plots"),
                             simulator_slip_prob=args.simulator_slip_prob)
    header = ("# Four-Rooms reproduction (`bilevel reproduce four-rooms"
              + (" --quick" if quick else "") + "`)\n\n"
              f"Seeds and iterations per row (the command's target: {len(seeds)} seeds, "
              f"{iterations} iterations); share of gap = (J − J_start) / (J_best known − J_start). "
              + ("Authors' numbers are for their dynamics (slip 0.44); compare shares.\n\n"
                 if args.simulator_slip_prob is None else
                 f"Samples are drawn with slip {args.simulator_slip_prob:.2f}, the follower and "
                 "the score use the model's slip.\n\n"))
    report.write_text(header + text + "\n")
    print(text)
    print(f"wrote {report}")
    return 0
