"""Closing the LQR game's gap with sample-based leaders (docs/results/closing_the_gaps.md).

Runs one method over seeds in one process (single-threaded BLAS) and prints, per seed, the
final exact 100-step return ``J`` (``bilevel_agents.exact.games.lqr_objective``, computed for
the report only, every 10 iterations; nothing exact enters training), then the median,
mean ± SE, quartiles and the cost per run::

    python -m bilevel_agents.experiments.lqr_gap --seeds 20 --iterations 500
    python -m bilevel_agents.experiments.lqr_gap --method bchg-model-critic --seeds 20
    python -m bilevel_agents.experiments.lqr_gap --plot curves.jsonl --out-png curves.png
    python -m bilevel_agents.experiments.lqr_gap --estimators 30   # estimate quality at fixed K

Methods (:data:`METHODS`): ``model-expected`` (default: :class:`~bilevel_agents.leaders.ModelBCHG`,
the plug-in model critic with the conditional-expectation estimator and Adam 0.1 → 0.01),
its ablations (``model-expected-constant-lr``, ``model-pathwise``, ``model-score``,
``model-expected-fit``: follower fitted from samples instead of read from its published
policy) and ``bchg-model-critic`` (the published ``BCHG`` with ``critic="model"``, every other
default as published). Every run starts from the LQR game's default ``K0 ~ N(0, I)`` seeded
by the seed, with the family's 10 exploration iterations and 4 episodes of 100 steps per
iteration. ``--csv`` appends one row per seed and skips seeds already there; ``--curves``
appends the learning curve (exact ``J`` every 10 iterations) as JSON lines.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BEST_KNOWN", "METHODS", "estimator_table", "main", "plot_curves", "run_seed",
           "summarize_finals"]

#: the best known 100-step return of the LQR game (docs/known_optima.md)
BEST_KNOWN = 18.43
#: start value J(K = 0)
START = 0.0149
#: method name → (leader name, keyword arguments)
METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "model-expected": ("bchg_model", {}),
    "model-expected-constant-lr": ("bchg_model", {"lr_final": None,
                                                  "lr_decay_iterations": None}),
    "model-pathwise": ("bchg_model", {"estimator": "pathwise"}),
    "model-score": ("bchg_model", {"estimator": "score"}),
    "model-expected-fit": ("bchg_model", {"critic_kwargs": {"follower": "fit"},
                                          "critic_exploration": 1.0}),
    "bchg-model-critic": ("bchg", {"critic": "model"}),
}


def run_seed(method: str, seed: int, iterations: int, eval_every: int = 10,
             **overrides: Any) -> dict[str, Any]:
    """Train one seed of ``method``; return its final ``J``, curve and cost."""
    from threadpoolctl import threadpool_limits

    from bilevel_agents.exact.games import lqr_objective
    from bilevel_agents.leaders import get_leader
    from bilevel_envs.games import lqr_game_v0
    from bilevel_envs.wrappers import GameBestResponse

    name, kwargs = METHODS[method]
    kwargs = {**kwargs, **overrides}
    with threadpool_limits(limits=1, user_api="blas"):
        br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
        leader = get_leader(name)(br, seed=seed, **kwargs)
        K0 = br.leader_gain.copy()
        curve: list[tuple[int, float]] = []

        def evaluate() -> dict[str, float]:  # the report's exact J (never seen by the leader)
            J = lqr_objective(br.leader_gain)
            curve.append((leader.iteration, J))
            return {"return_100": J}

        wall, cpu = time.perf_counter(), time.process_time()
        history = leader.learn(iterations, evaluate=evaluate, eval_every=eval_every,
                               progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        episodes = leader.family.options.episodes
        extra = episodes if getattr(leader.family.options, "critic_exploration", None) else 0
        transitions = iterations * (episodes + extra) * br.max_episode_steps
        K = br.leader_gain
        final = lqr_objective(K)
    if curve[-1][0] != iterations:
        curve.append((iterations, final))
    return {"method": method, "seed": seed, "iterations": iterations,
            "K0_1": float(K0[0, 0]), "K0_2": float(K0[0, 1]),
            "K_1": float(K[0, 0]), "K_2": float(K[0, 1]), "final_J": float(final),
            "max_J": float(max(J for _, J in curve)),
            "rejected_steps": int(sum(r.get("rejected_step", 0.0) for r in history)),
            "wall_seconds": wall, "cpu_seconds": cpu, "transitions": transitions,
            "curve": curve}


def summarize_finals(finals: list[float]) -> dict[str, float]:
    """Median, mean ± SE, quartiles and the count above half the gap to the best known J."""
    x = np.asarray(finals, dtype=np.float64)
    half = START + 0.5 * (BEST_KNOWN - START)
    return {"n": len(x), "median": float(np.median(x)), "mean": float(x.mean()),
            "se": float(x.std(ddof=1) / np.sqrt(len(x))) if len(x) > 1 else math.nan,
            "q25": float(np.quantile(x, 0.25)), "q75": float(np.quantile(x, 0.75)),
            "min": float(x.min()), "max": float(x.max()),
            "above_half_gap": int((x >= half).sum())}


#: the gains of the estimator table: the plateau, the climb, the basin, the ridge
TABLE_POINTS = ((0.0, 0.0), (-5.0, -5.0), (-9.0, -5.0), (-9.0, -9.5), (-9.9, -9.0),
                (-9.95, -10.5), (-9.985, -10.0))


def estimator_table(batches: int = 30) -> None:
    """Per-batch mean and SD of each estimator at fixed gains, beside the exact gradient of the
    discounted objective (γ_L = 0.99, what Theorem 2 differentiates) and of the 100-step
    return; prints a Markdown table."""
    from threadpoolctl import threadpool_limits

    from bilevel_agents.exact.games import lqr_objective_and_grad
    from bilevel_agents.leaders import ModelBCHG
    from bilevel_envs.games import lqr_game_v0
    from bilevel_envs.wrappers import GameBestResponse

    def fmt(v):
        return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"

    print("| K | exact ∇J (γ_L = 0.99) | exact ∇J (100 steps) | estimator | mean of "
          f"{batches} batches | SD per batch | batches with both signs right |")
    print("|---|---|---|---|---|---|---|")
    with threadpool_limits(limits=1, user_api="blas"):
        for K in TABLE_POINTS:
            K_arr = np.array([K])
            disc = lqr_objective_and_grad(K_arr, horizon=2292, gamma=0.99)[1].ravel()
            und = lqr_objective_and_grad(K_arr)[1].ravel()
            for est in ("score", "pathwise", "expected"):
                br = GameBestResponse(lqr_game_v0.env(), beta=0.1)
                leader = ModelBCHG(br, seed=0, estimator=est, explore_iterations=0,
                                   theta0=np.array(K))
                g = np.array([leader.estimate_gradient() for _ in range(batches)])
                right = np.mean(np.all(np.sign(g) == np.sign(disc), axis=1))
                print(f"| {K} | {fmt(disc)} | {fmt(und)} | {est} | {fmt(g.mean(0))} | "
                      f"{fmt(g.std(0, ddof=1))} | {right:.0%} |", flush=True)


def _done(path: Path | None, method: str) -> dict[int, dict[str, str]]:
    if path is None or not path.exists():
        return {}
    with open(path) as fh:
        return {int(r["seed"]): r for r in csv.DictReader(fh) if r["method"] == method}


def plot_curves(paths: list[Path], out: Path) -> None:
    """Median and quartiles over seeds of the exact ``J`` per method (from ``--curves``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, dict[int, np.ndarray]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            r = json.loads(line)
            runs.setdefault(r["method"], {})[int(r["seed"])] = np.asarray(r["curve"], float)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for method, by_seed in sorted(runs.items()):
        curves = list(by_seed.values())
        n = min(len(c) for c in curves)
        x = curves[0][:n, 0]
        y = np.stack([c[:n, 1] for c in curves])
        med = np.median(y, axis=0)
        ax.plot(x, med, label=f"{method} (median of {len(curves)} seeds)")
        ax.fill_between(x, np.quantile(y, 0.25, axis=0), np.quantile(y, 0.75, axis=0),
                        alpha=0.2)
    ax.axhline(BEST_KNOWN, color="k", ls="--", lw=0.8, label=f"best known {BEST_KNOWN}")
    ax.axhline(START + 0.5 * (BEST_KNOWN - START), color="gray", ls=":", lw=0.8,
               label="half the gap (9.22)")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("exact 100-step leader return J")
    ax.set_title("LQR Markov game: sample-based leaders (median, quartiles over seeds)")
    ax.legend(fontsize=7, loc="center right")
    fig.tight_layout()
    fig.savefig(out, dpi=130)
    print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    """Command line (module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m bilevel_agents.experiments.lqr_gap",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--method", default="model-expected", choices=sorted(METHODS))
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--seed-start", type=int, default=0)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--lr", type=float, default=None, help="override the method's lr")
    ap.add_argument("--csv", type=Path, default=None, help="append one row per seed")
    ap.add_argument("--curves", type=Path, default=None, help="append curves (JSON lines)")
    ap.add_argument("--plot", type=Path, nargs="*", default=None,
                    help="only plot these curve files (to --out-png)")
    ap.add_argument("--out-png", type=Path, default=Path("lqr_gap_curves.png"))
    ap.add_argument("--estimators", type=int, default=None, metavar="BATCHES",
                    help="only print the estimator table (BATCHES estimates per gain)")
    args = ap.parse_args(argv)
    if args.estimators:
        estimator_table(args.estimators)
        return 0
    if args.plot:
        plot_curves(args.plot, args.out_png)
        return 0
    overrides = {} if args.lr is None else {"lr": args.lr}
    done = _done(args.csv, args.method)
    finals, walls, cpus, trans = [], [], [], []
    for seed in range(args.seed_start, args.seed_start + args.seeds):
        if seed in done:
            row = done[seed]
            print(f"seed {seed:2d}: final J {float(row['final_J']):7.3f} (from {args.csv})")
        else:
            row = run_seed(args.method, seed, args.iterations, **overrides)
            curve = row.pop("curve")
            if args.curves is not None:
                with open(args.curves, "a") as fh:
                    fh.write(json.dumps({"method": args.method, "seed": seed,
                                         "curve": curve}) + "\n")
            if args.csv is not None:
                new = not args.csv.exists()
                with open(args.csv, "a", newline="") as fh:
                    writer = csv.DictWriter(fh, fieldnames=list(row))
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
            print(f"seed {seed:2d}: final J {row['final_J']:7.3f}  max {row['max_J']:7.3f}  "
                  f"K {row['K_1']:8.4f} {row['K_2']:8.4f}  K0 {row['K0_1']:6.3f} "
                  f"{row['K0_2']:6.3f}  {row['wall_seconds']:6.1f} s wall, "
                  f"{row['cpu_seconds']:6.1f} s CPU", flush=True)
        finals.append(float(row["final_J"]))
        walls.append(float(row["wall_seconds"]))
        cpus.append(float(row["cpu_seconds"]))
        trans.append(float(row["transitions"]))
    s = summarize_finals(finals)
    print(f"\n{args.method}, {s['n']} seeds, {args.iterations} iterations: final J median "
          f"{s['median']:.3f}, mean {s['mean']:.3f} ± {s['se']:.3f} (SE), quartiles "
          f"[{s['q25']:.3f}, {s['q75']:.3f}], range [{s['min']:.3f}, {s['max']:.3f}], "
          f"{s['above_half_gap']}/{s['n']} seeds ≥ 9.22 (half the gap to {BEST_KNOWN})")
    print(f"cost per run: {np.mean(walls):.1f} s wall (median {np.median(walls):.1f}), "
          f"{np.mean(cpus):.1f} s CPU, {np.mean(trans):,.0f} sampled transitions "
          f"({args.iterations} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
