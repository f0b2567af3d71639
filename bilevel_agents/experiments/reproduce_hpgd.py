"""HPGD's benchmark (Thoma et al. 2024, README Table 1) on the contextual Four-Rooms, in one command.

    bilevel reproduce hpgd-table1                       # the full study (the lead schedules it)
    bilevel reproduce hpgd-table1 --quick               # one grid point per method, 3 seeds
    bilevel reproduce hpgd-table1 --cells 0.003:3 --methods amd,zero_order --seeds 0-1
    bilevel reproduce hpgd-table1 --no-run              # only the report of what is there

The study: β ∈ {0.001, 0.003, 0.005} × λ ∈ {1, 3, 5} (the env's ``penalty_weight``) on
``BiLevel/ContextualFourRooms-v0`` with HPGD's matrix (the env's default, slip 0.44 for the
model and the simulator; ``--simulator-slip-prob 0.33`` adds HPGD's mismatched simulator),
10 seeds × 10,000 outer iterations, every method with one context per outer iteration:

* **HPGD** (its protocol): MC critic, 5 streams × 2000 steps = 10,000 transitions per
  iteration, ``contexts="per_iteration"``; lr grid;
* **AMD** (:class:`~bilevel_agents.leaders.amd.AMD`): 100 backups per iteration; lr grid;
* **zero-order** (:class:`~bilevel_agents.leaders.zero_order.ZeroOrder`): lr × c grid;
* **BC-HG**: batch 100, SARSA critic, its usual grid (lr × α_SA), ``contexts="per_iteration"``.

Grids (HPGD's): lr ∈ {0.5, 0.1, 0.05, 0.01}; zero-order c ∈ {0.01, 0.1, 0.5, 1.0}; BC-HG
α_SA ∈ {0.1, 0.3, 0.5, 0.7, 0.9, 1.0}. Clip 1 + SGD for all (the shared step).

Score (HPGD's README protocol): per run, the mean exact objective ``J = ½(J_G1 + J_G2)`` over
iterations 9000–9999 (the last 1000; the last ``min(1000, iterations)`` of shorter runs); per
(β, λ) and method, the grid point with the highest seed mean; mean ± SE with ``ddof = 0`` as
HPGD. Our ``J`` is the exact fixed point (HPGD: a 500-backup evaluation, up to 0.003 low at the
β = 0.005 optima) and always the context average (HPGD and zero-order log the drawn context's
value in HPGD's code, which adds context-draw noise to their scores). Beside each score: the
published value (:data:`~bilevel_agents.experiments.references.HPGD_TABLE1`), and per cell the
start, no-incentive and best known values
(:data:`~bilevel_agents.experiments.references.CONTEXTUAL_FOUR_ROOMS`) and the share of the
gap start → best known closed.

Layout: ``OUT/beta{β}_lambda{λ}[_sim{slip}]/<leader>_<kwargs>/seed{k}`` through
:func:`~bilevel_agents.experiments.sweep.run_sweep` (finished runs are read back, interrupted
ones resume).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bilevel_agents.cli_types import Parser, number, seed_list
from bilevel_agents.cli_types import seeds as seeds_type
from bilevel_agents.experiments.references import CONTEXTUAL_FOUR_ROOMS, HPGD_TABLE1, gap_share
from bilevel_agents.experiments.sweep import RunSpec, grid, run_sweep

__all__ = ["CELLS", "METHODS", "QUICK_POINTS", "cell_dir", "hpgd_table1_report",
           "hpgd_table1_scores", "hpgd_table1_specs", "main", "parse_cells"]

ENV = "BiLevel/ContextualFourRooms-v0"
BETAS = (0.001, 0.003, 0.005)
LAMBDAS = (1, 3, 5)
#: the (β, λ) cells of HPGD's Table 1
CELLS: tuple[tuple[float, int], ...] = tuple((b, lam) for b in BETAS for lam in LAMBDAS)
#: the methods of the study (CLI names), in the table's column order
METHODS = ("hpgd", "amd", "zero_order", "bchg")
LABELS = {"hpgd": "HPGD", "amd": "AMD", "zero_order": "Zero-Order", "bchg": "BC-HG"}
LRS = (0.5, 0.1, 0.05, 0.01)
C_VALUES = (0.01, 0.1, 0.5, 1.0)
ALPHAS = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
TAIL = 1000

#: the fixed part of each method's protocol (leader kwargs besides the grid)
PROTOCOL: dict[str, dict[str, Any]] = {
    "hpgd": {"batch_size": 10_000, "n_envs": 5, "contexts": "per_iteration"},  # MC critic
    "amd": {},  # 100 backups, one context per iteration (its defaults)
    "zero_order": {},  # one context per iteration (its default)
    "bchg": {"batch_size": 100, "contexts": "per_iteration"},
}

#: one grid point per method for ``--quick``. HPGD's README does not record its winning
#: hyper-parameters: AMD's lr 0.5 is the best lr of AMD's loop on the exact gradient in every
#: cell (HPGD's code); the others are our middle-of-the-grid choices.
QUICK_POINTS: dict[str, dict[str, Any]] = {
    "hpgd": {"lr": 0.1}, "amd": {"lr": 0.5}, "zero_order": {"lr": 0.1, "c": 0.5},
    "bchg": {"lr": 0.1, "sarsa_alpha": 0.5},
}


def _points(method: str, full_grid: bool) -> list[dict[str, Any]]:
    if not full_grid:
        return [dict(QUICK_POINTS[method])]
    if method == "zero_order":
        return grid(lr=LRS, c=C_VALUES)
    if method == "bchg":
        return grid(lr=LRS, sarsa_alpha=ALPHAS)
    return grid(lr=LRS)


def cell_dir(out: str | Path, beta: float, lam: float,
             simulator_slip_prob: float | None = None) -> Path:
    """Folder of one (β, λ) cell (a suffix for a mismatched simulator)."""
    suffix = "" if simulator_slip_prob is None else f"_sim{simulator_slip_prob:g}"
    return Path(out) / f"beta{beta:g}_lambda{lam:g}{suffix}"


def parse_cells(text: str | None) -> list[tuple[float, int]]:
    """``"0.003:3,0.001:1"`` (β:λ pairs) or ``"all"``/``None`` → the cells.

    Raises:
        ValueError: a malformed pair or a cell outside Table 1.
    """
    if text is None or text.strip() == "all":
        return list(CELLS)
    cells = []
    for part in text.split(","):
        try:
            b, lam = part.split(":")
            cell = (float(b), int(float(lam)))
        except ValueError:
            raise ValueError(f"--cells takes β:λ pairs like '0.003:3,0.001:1', got "
                             f"{part!r}") from None
        match = next((c for c in CELLS if abs(c[0] - cell[0]) < 1e-12 and c[1] == cell[1]),
                     None)
        if match is None:
            raise ValueError(f"cell {part!r} is not in HPGD's Table 1 (β in {BETAS}, λ in "
                             f"{LAMBDAS})")
        cells.append(match)
    return cells


def hpgd_table1_specs(*, out: str | Path, cells: Sequence[tuple[float, int]] = CELLS,
                      methods: Sequence[str] = METHODS, seeds: int | Sequence[int] = 10,
                      iterations: int = 10_000, full_grid: bool = True,
                      simulator_slip_prob: float | None = None) -> list[RunSpec]:
    """Every run of the study (module docstring): cells × methods × grid points × seeds.

    Raises:
        ValueError: an unknown method, a cell outside Table 1, bad counts.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(f"methods must be among {list(METHODS)}, got {unknown}")
    for cell in cells:
        if cell not in CELLS:
            raise ValueError(f"cells must be among {list(CELLS)}, got {cell!r}")
    seeds = seed_list(seeds)
    if not seeds or int(iterations) < 1:
        raise ValueError(f"seeds must be non-empty and iterations >= 1, got seeds={seeds}, "
                         f"iterations={iterations}")
    specs = []
    for beta, lam in cells:
        env_kwargs: dict[str, Any] = {"penalty_weight": float(lam)}
        if simulator_slip_prob is not None:
            env_kwargs["simulator_slip_prob"] = float(simulator_slip_prob)
        root = str(cell_dir(out, beta, lam, simulator_slip_prob))
        for method in methods:
            for point in _points(method, full_grid):
                kw = {**PROTOCOL[method], **point}
                specs += [RunSpec(env=ENV, leader=method, beta=beta, seed=s,
                                  iterations=int(iterations), leader_kwargs=kw,
                                  env_kwargs=env_kwargs, out=root, tail=TAIL)
                          for s in seeds]
    return specs


# ---------------------------------------------------------------------- scores
def _run_score(run: dict[str, Any], tail: int) -> tuple[float, int, int]:
    """(mean objective over the last ``min(tail, target)`` iterations, iterations logged,
    target iterations); NaN for an unfinished run."""
    obj = run["metrics"].get("objective")
    target = int(run["config"].get("iterations", 0) or 0)
    n = 0 if obj is None else int(obj.size)
    if obj is None or n == 0 or (target and n < target):
        return math.nan, n, target
    window = obj[-min(tail, n):]
    window = window[np.isfinite(window)]
    return (float(window.mean()) if window.size else math.nan), n, target


def _variant(config: dict[str, Any]) -> str:
    """A run that departs from the study's protocol (per-episode contexts) gets its own row."""
    contexts = config.get("contexts", "per_episode")
    return "" if contexts == "per_iteration" else f"contexts={contexts}"


def hpgd_table1_scores(root: str | Path, tail: int = TAIL) -> dict[tuple[str, str], dict]:
    """Best grid point per (method, variant) under one cell folder.

    Grid points are compared at equal footing: only the points with the most finished seeds
    of their method compete (a point run with one seed does not beat one run with ten).

    Returns ``{(leader, variant): {"point", "mean", "se", "seeds", "unfinished",
    "iterations", "points"}}``: the seed mean of the per-run scores, its standard error with
    ``ddof = 0`` (as HPGD), the finished seeds, the unfinished runs of that point, the
    iterations per run and the number of grid points compared.
    """
    from bilevel_agents.experiments.results import load_runs, outranks

    best: dict[tuple[str, str], dict[str, Any]] = {}
    counts: dict[tuple[str, str], int] = {}
    for point, runs in sorted(load_runs(root).items()):
        config = runs[0]["config"]
        key = (str(config.get("leader", "?")), _variant(config))
        scored = [_run_score(r, tail) for r in runs]
        scores = np.array([s for s, _, _ in scored if math.isfinite(s)])
        counts[key] = counts.get(key, 0) + 1
        if scores.size == 0:
            continue
        row = {"point": point, "mean": float(scores.mean()),
               "se": float(scores.std(ddof=0) / np.sqrt(scores.size)),
               "seeds": int(scores.size), "unfinished": len(runs) - int(scores.size),
               "iterations": min(n for s, n, _ in scored if math.isfinite(s))}
        if outranks(row, best.get(key)):
            best[key] = row
    for key, row in best.items():
        row["points"] = counts[key]
    return best


def _order(key: tuple[str, str]) -> tuple[int, str]:
    leader, variant = key
    return (METHODS.index(leader) if leader in METHODS else len(METHODS), variant)


def _fmt_score(r: dict[str, Any]) -> str:
    """``mean ± SE``, or ``mean (1 seed)`` where one seed gives no standard error."""
    if r["seeds"] < 2:
        return f"{r['mean']:.3f} (1 seed)"
    return f"{r['mean']:.3f} ± {r['se']:.3f}"


def _fmt_share(value: float, start: float, best: float) -> str:
    text = f"{gap_share(value, start, best):.0%}"
    return "0%" if text == "-0%" else text


def hpgd_table1_report(*, out: str | Path, cells: Sequence[tuple[float, int]] = CELLS,
                       methods: Sequence[str] = METHODS, tail: int = TAIL,
                       simulator_slip_prob: float | None = None) -> str:
    """The Markdown report: Table 1's layout (one row per (β, λ), one column per method: ours
    ± SE and share of the gap, beside the published value and its share), then the winning
    grid points. Cells without results show "–"."""
    lines = ["| β | λ | start | no-inc | best known | "
             + " | ".join(f"{LABELS.get(m, m)}: ours (share) | published (share)"
                          for m in methods) + " |",
             "|---|---|---|---|---|" + "---|---|" * len(methods)]
    details = [("| β | λ | method | best grid point | grid points | seeds | unfinished runs | "
                "iterations | ours |"), "|---|---|---|---|---|---|---|---|---|"]
    extra: list[str] = []
    for beta, lam in cells:
        start, no_inc, best_known = CONTEXTUAL_FOUR_ROOMS[(beta, lam)]
        root = cell_dir(out, beta, lam, simulator_slip_prob)
        scores = hpgd_table1_scores(root, tail) if root.exists() else {}
        row = [f"{beta:g}", f"{lam:g}", f"{start:.3f}", f"{no_inc:.3f}", f"{best_known:.3f}"]
        for method in methods:
            ours = scores.get((method, ""))
            pub = HPGD_TABLE1[(beta, lam)].get(method)
            row.append("–" if ours is None else
                       f"{_fmt_score(ours)} ({_fmt_share(ours['mean'], start, best_known)})")
            row.append("–" if pub is None else
                       f"{pub[0]:.2f} ± {pub[1]:.3f} ({_fmt_share(pub[0], start, best_known)})")
        lines.append("| " + " | ".join(row) + " |")
        for key in sorted(scores, key=_order):
            r = scores[key]
            label = LABELS.get(key[0], key[0]) + (f" [{key[1]}]" if key[1] else "")
            details.append(f"| {beta:g} | {lam:g} | {label} | `{r['point']}` | {r['points']} | "
                           f"{r['seeds']} | {r['unfinished']} | {r['iterations']} | "
                           f"{_fmt_score(r)} |")
            if key[0] not in methods or key[1]:
                extra.append(f"| {beta:g} | {lam:g} | {label} | {_fmt_score(r)} "
                             f"({_fmt_share(r['mean'], start, best_known)}) |")
    text = lines + ["", (f"Winning grid points (highest seed mean of the last-{tail} mean "
                         "exact J among the points with the most finished seeds; SE with "
                         "ddof 0):"), ""] + details
    if extra:
        text += ["", "Other rows (variants and methods outside the table):", "",
                 "| β | λ | method | ours (share) |", "|---|---|---|---|"] + extra
    return "\n".join(text)


# ---------------------------------------------------------------------- command
def main(argv: Sequence[str] | None = None) -> int:
    """``bilevel reproduce hpgd-table1 [options]`` (see the module docstring)."""
    p = Parser(prog="bilevel reproduce hpgd-table1", description=__doc__.split("\n")[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("task", choices=["hpgd-table1"])
    p.add_argument("--quick", action="store_true",
                   help="one grid point per method (QUICK_POINTS), 3 seeds, 2000 iterations "
                        "(overridable by the options below)")
    p.add_argument("--cells", help="β:λ pairs, e.g. 0.003:3,0.001:1 (default: all 9)")
    p.add_argument("--methods", help="comma list among " + ",".join(METHODS))
    p.add_argument("--seeds", type=seeds_type,
                   help="the seeds of every grid point, e.g. 0-9 or 0,3,5 (default: 0-9; 0-2 "
                        "with --quick)")
    p.add_argument("--iterations", type=number(int, low=1))
    p.add_argument("--grid", choices=["full", "best"],
                   help="HPGD's grids or one point per method (default: full; best with "
                        "--quick)")
    p.add_argument("--simulator-slip-prob", type=number(float, low=0.0, high=1.0),
                   help="sample with another slip than the model (HPGD's simulator: 0.33)")
    p.add_argument("--workers", type=number(int, low=1), default=1)
    p.add_argument("--backend", default="local", choices=["local", "ray"])
    p.add_argument("--out", default="results/hpgd_table1")
    p.add_argument("--report", help="where the Markdown report goes (default: "
                   "OUT/hpgd_table1.md; a file under docs/ only with --write-docs)")
    p.add_argument("--write-docs", action="store_true",
                   help="allow --report to replace a file under docs/")
    p.add_argument("--no-run", action="store_true", help="only write the report")
    args = p.parse_args(list(argv) if argv is not None else None)
    quick = args.quick
    cells = parse_cells(args.cells)
    methods = tuple(m.strip().replace("-", "_") for m in args.methods.split(",")) \
        if args.methods else METHODS
    seeds = args.seeds or list(range(3 if quick else 10))
    iterations = args.iterations or (2000 if quick else 10_000)
    full_grid = (args.grid or ("best" if quick else "full")) == "full"
    specs = hpgd_table1_specs(out=args.out, cells=cells, methods=methods, seeds=seeds,
                              iterations=iterations, full_grid=full_grid,
                              simulator_slip_prob=args.simulator_slip_prob)
    report = Path(args.report) if args.report else Path(args.out) / "hpgd_table1.md"
    if "docs" in report.resolve().parts and not args.write_docs:
        raise ValueError(f"--report {str(report)!r} is under docs/ (the shipped results); pass "
                         "--write-docs to replace it")
    print(f"{len(specs)} runs under {args.out} ({'quick' if quick else 'full'} study)")
    if not args.no_run:
        run_sweep(specs, workers=args.workers, backend=args.backend)
    text = hpgd_table1_report(out=args.out, cells=cells, methods=methods,
                              tail=min(TAIL, iterations),
                              simulator_slip_prob=args.simulator_slip_prob)
    header = ("# HPGD Table 1 on the contextual Four-Rooms (`bilevel reproduce hpgd-table1"
              + (" --quick" if quick else "") + "`)\n\n"
              f"Target: {len(seeds)} seeds × {iterations} iterations per grid point; score = mean "
              f"exact J = ½(J_G1 + J_G2) over the last {min(TAIL, iterations)} iterations, best "
              "grid point by seed mean, mean ± SE (ddof 0); share = (J − J_start) / "
              "(J_best known − J_start). Published values: HPGD's README Table 1 (their code's "
              "500-backup J; HPGD's and zero-order's include context-draw noise)."
              + ("" if args.simulator_slip_prob is None else
                 f" Simulator slip {args.simulator_slip_prob:g} (model 0.44).") + "\n\n")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(header + text + "\n")
    print(text)
    print(f"wrote {report}")
    return 0
