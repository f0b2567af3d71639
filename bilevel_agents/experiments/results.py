"""Reading, scoring and plotting a results folder written by the trainer / sweeps.

Layout: ``ROOT/<grid point>/seed<k>/{config.json, metrics.csv, summary.json}``. The score of a
grid point is the seed mean of each run's mean objective over its last ``tail`` iterations (the
paper's protocol); bands are standard errors over seeds.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["load_runs", "plot_results", "score_table", "smooth"]


def _read_metrics(path: Path) -> dict[str, np.ndarray]:
    """The columns of a ``metrics.csv``.

    Raises:
        ValueError: a damaged file (a value that is not a number), naming the file and row.
    """
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return {}
    out: dict[str, list[float]] = {k: [] for k in rows[0]}
    for i, row in enumerate(rows):
        for k in out:
            value = row.get(k)
            try:
                out[k].append(float(value) if value not in (None, "") else np.nan)
            except ValueError:
                raise ValueError(f"{path} is damaged: row {i + 2}, column {k!r} is "
                                 f"{value!r}") from None
    return {k: np.array(v) for k, v in out.items()}


def load_runs(root: str | Path) -> dict[str, list[dict[str, Any]]]:
    """``{grid point: [{"config", "metrics", "seed"}, ...]}`` for every run below ``root``."""
    root = Path(root)
    if not root.exists():
        raise ValueError(f"results folder {str(root)!r} does not exist")
    groups: dict[str, list[dict[str, Any]]] = {}
    for metrics in sorted(root.rglob("metrics.csv")):
        run = metrics.parent
        cfg_path = run / "config.json"
        config = json.loads(cfg_path.read_text()) if cfg_path.exists() else {}
        point = str(run.parent.relative_to(root)) if run.name.startswith("seed") else run.name
        groups.setdefault(point, []).append(
            {"config": config, "metrics": _read_metrics(metrics), "seed": config.get("seed")})
    return groups


def _tail_mean(m: dict[str, np.ndarray], tail: int) -> float:
    obj = m.get("objective")
    if obj is None:
        return float("nan")
    obj = obj[np.isfinite(obj)]
    return float(obj[-tail:].mean()) if obj.size else float("nan")


def _first(m: dict[str, np.ndarray]) -> float:
    """The run's first evaluated objective (its start value)."""
    obj = m.get("objective")
    if obj is None:
        return float("nan")
    obj = obj[np.isfinite(obj)]
    return float(obj[0]) if obj.size else float("nan")


def score_table(root: str | Path, tail: int = 1000) -> list[dict[str, Any]]:
    """One row per grid point: leader, seeds, mean ± SE of the last-``tail`` mean objective,
    iterations reached; sorted by leader then score (best first)."""
    rows = []
    for point, runs in load_runs(root).items():
        scores = np.array([_tail_mean(r["metrics"], tail) for r in runs])
        starts = np.array([_first(r["metrics"]) for r in runs])
        scores = scores[np.isfinite(scores)]
        if scores.size == 0:
            continue
        iters = min(len(r["metrics"].get("iteration", [])) for r in runs)
        se = scores.std(ddof=1) / np.sqrt(scores.size) if scores.size > 1 else float("nan")
        rows.append({"point": point, "leader": runs[0]["config"].get("leader", "?"),
                     "seeds": int(scores.size), "mean": float(scores.mean()), "se": float(se),
                     "start": float(np.nanmean(starts)) if np.isfinite(starts).any() else None,
                     "iterations": int(iters), "config": runs[0]["config"]})
    rows.sort(key=lambda r: (r["leader"], -r["mean"]))
    return rows


def smooth(y: np.ndarray, window: int = 100) -> np.ndarray:
    """Trailing moving average, expanding at the start (as in the paper's figures)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.arange(1, y.size + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def plot_results(root: str | Path, out: str | Path | None = None, tail: int = 1000,
                 best_known: float | None = None, title: str | None = None,
                 label: Any = None) -> list[Path]:
    """Learning curves (best grid point per leader, mean ± SE over seeds, 100-iteration moving
    average) and, for Four-Rooms, the incentive heat map of the best run's final θ.

    ``label(row) -> str`` names the curves (default: the leader); rows with the same label
    compete, so a label that includes an estimator variant keeps variants apart.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root = Path(root)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    groups = load_runs(root)
    table = score_table(root, tail)
    best: dict[str, dict[str, Any]] = {}
    for row in table:
        best.setdefault(label(row) if label is not None else row["leader"], row)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for leader, row in best.items():
        curves = [r["metrics"]["objective"] for r in groups[row["point"]]
                  if "objective" in r["metrics"]]
        n = min(c.size for c in curves)
        ys = np.stack([smooth(np.nan_to_num(c[:n], nan=np.nanmean(c[:n]))) for c in curves])
        mean = ys.mean(0)
        se = ys.std(0, ddof=1) / np.sqrt(len(ys)) if len(ys) > 1 else np.zeros_like(mean)
        x = np.arange(n)
        ax.plot(x, mean, label=f"{leader} ({row['mean']:.3f})")
        ax.fill_between(x, mean - se, mean + se, alpha=0.25)
    if best_known is not None:
        ax.axhline(best_known, color="k", ls="--", lw=1, label=f"best known ({best_known:.3f})")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("exact leader objective $J_L$")
    ax.set_title(title or root.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    paths = [out / "learning_curves.png"]
    fig.savefig(paths[0], dpi=120)
    plt.close(fig)
    heat = _plot_incentive(root, best, out)
    return paths + ([heat] if heat else [])


def _plot_incentive(root: Path, best: dict[str, dict[str, Any]], out: Path) -> Path | None:
    """Heat map of the best leader's final incentive on the Four-Rooms map (if applicable)."""
    import matplotlib.pyplot as plt

    if not best:
        return None
    row = max(best.values(), key=lambda r: r["mean"])
    summaries = sorted((root / row["point"]).glob("seed*/summary.json"))
    if not summaries:
        return None
    summary = json.loads(summaries[0].read_text())
    config = json.loads((summaries[0].parent / "config.json").read_text())
    if "FourRooms" not in config.get("env", ""):
        return None
    from bilevel_agents.experiments.sweep import make_best_response

    br = make_best_response(config["env"], config["beta"], config.get("env_kwargs"))
    br.set_config(np.asarray(summary["final_theta"]))
    img = br.problem.render_rgb(br.problem.incentive, policy=br.policy)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.imshow(img)
    ax.set_axis_off()
    ax.set_title(f"{row['leader']}: incentive (red) and follower's greedy moves", fontsize=9)
    path = out / "incentive_map.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
