"""Reading, scoring and plotting a results folder written by the trainer / sweeps.

Layout: ``ROOT/<grid point>/seed<k>/{config.json, metrics.csv, summary.json}``. The score of a
grid point is the seed mean of each run's mean objective over its last ``tail`` iterations (the
paper's protocol); bands are standard errors over seeds (or bootstrap confidence intervals).
Tables that compare methods also give the interquartile mean (IQM) over seeds with a
stratified-bootstrap confidence interval (:func:`aggregate`, rliable's estimator).

The figures (:func:`plot_results`) are meant to be read without the code: every curve names
its method and settings, the band says what it is, the start and best known values are drawn
(looked up in :mod:`~bilevel_agents.experiments.references` when the problem is a known one,
:func:`reference_values`), and the Four-Rooms incentive map has a colour bar, arrows for the
follower's greedy moves and a legend.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["aggregate", "load_runs", "plot_incentive_map", "plot_learning_curves",
           "outranks", "plot_results", "reference_values", "score_table", "smooth"]


#: parsed ``metrics.csv`` files by (path, modification time, size): a report reads each run of
#: a cell several times (scores, bootstrap, curves); a changed file is read again
_METRICS_CACHE: OrderedDict[tuple[str, int, int], dict[str, np.ndarray]] = OrderedDict()
_METRICS_CACHE_SIZE = 1024


def _read_metrics(path: Path) -> dict[str, np.ndarray]:
    """The columns of a ``metrics.csv`` (copies of a cached parse when the file is unchanged).

    Raises:
        ValueError: a damaged file (a value that is not a number), naming the file and row.
    """
    stat = Path(path).stat()
    key = (str(Path(path).resolve()), stat.st_mtime_ns, stat.st_size)
    cached = _METRICS_CACHE.get(key)
    if cached is None:
        cached = _parse_metrics(path)
        _METRICS_CACHE[key] = cached
        if len(_METRICS_CACHE) > _METRICS_CACHE_SIZE:
            _METRICS_CACHE.popitem(last=False)
    else:
        _METRICS_CACHE.move_to_end(key)
    return {k: v.copy() for k, v in cached.items()}


def _parse_metrics(path: Path) -> dict[str, np.ndarray]:
    with open(path, newline="") as fh:
        header = fh.readline().strip()
        if header:
            try:  # numpy's C parser (the same correctly rounded floats as float()), ~10x faster
                table = np.loadtxt(fh, delimiter=",", ndmin=2, dtype=np.float64)
            except ValueError:  # an empty field or a damaged value: the row-by-row reader
                table = None
            if table is not None:
                names = next(csv.reader([header]))
                if table.size == 0:
                    return {}
                if table.shape[1] == len(names):
                    return {k: table[:, j].copy() for j, k in enumerate(names)}
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
    """``{grid point: [{"config", "metrics", "seed", "path"}, ...]}`` for every run below
    ``root``."""
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
            {"config": config, "metrics": _read_metrics(metrics), "seed": config.get("seed"),
             "path": run})
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
    the per-seed scores (``scores``, for :func:`aggregate`), iterations reached; sorted by
    leader then score (best first)."""
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
                     "scores": [float(s) for s in scores],
                     "start": float(np.nanmean(starts)) if np.isfinite(starts).any() else None,
                     "iterations": int(iters), "config": runs[0]["config"]})
    rows.sort(key=lambda r: (r["leader"], -r["mean"]))
    return rows


def outranks(row: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether grid point ``row`` replaces ``current`` as its method's best: more scored seeds
    first (a point with one seed of a study still running never beats one with ten), then the
    higher mean."""
    return (current is None or row["seeds"] > current["seeds"]
            or (row["seeds"] == current["seeds"] and row["mean"] > current["mean"]))


# ---------------------------------------------------------------------- aggregate statistics
def _iqm(x: np.ndarray) -> float:
    """Interquartile mean of all entries: the mean of the middle 50% (rliable's
    ``aggregate_iqm``, i.e. ``scipy.stats.trim_mean(x, 0.25, axis=None)``)."""
    from scipy.stats import trim_mean

    return float(trim_mean(np.asarray(x, dtype=np.float64), 0.25, axis=None))


def aggregate(scores: Any, *, confidence: float = 0.95, reps: int = 2000, seed: int = 0,
              backend: str = "auto") -> dict[str, Any]:
    """The interquartile mean (IQM) of per-run scores and its stratified-bootstrap interval.

    The estimator of rliable (Agarwal et al., *Deep RL at the Edge of the Statistical
    Precipice*, 2021): the IQM is the mean of the middle 50% of all run scores; the interval is
    the percentile bootstrap in which runs are resampled with replacement *within* each task
    (stratified by task), ``reps`` times.

    Args:
        scores: ``(runs,)`` scores of one task (non-finite entries are dropped), or
            ``(runs, tasks)`` (all finite).
        confidence: coverage of the interval, in (0, 1).
        reps: bootstrap replications.
        seed: seeds the bootstrap (the same scores and seed give the same interval).
        backend: ``"rliable"`` (its ``get_interval_estimates``; ``pip install bilevel[stats]``),
            ``"numpy"`` (the same estimator implemented here) or ``"auto"`` (rliable when it is
            installed).

    Returns:
        ``{"iqm", "low", "high", "runs", "confidence", "backend"}`` (NaNs for no finite score;
        a single run gives a zero-width interval).

    Raises:
        ValueError: scores of another shape, NaN in a 2-d array, a bad ``confidence``,
            ``reps`` or ``backend``; ``ImportError`` for ``backend="rliable"`` without rliable.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[np.isfinite(x)][:, None]
    elif x.ndim != 2:
        raise ValueError(f"scores must have shape (runs,) or (runs, tasks), got {x.shape}")
    elif not np.all(np.isfinite(x)):
        raise ValueError("scores of shape (runs, tasks) must all be finite")
    if not 0.0 < float(confidence) < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    if isinstance(reps, bool) or int(reps) != reps or reps < 1:
        raise ValueError(f"reps must be a positive integer, got {reps!r}")
    if backend not in ("auto", "rliable", "numpy"):
        raise ValueError(f"backend must be 'auto', 'rliable' or 'numpy', got {backend!r}")
    if backend == "auto":
        backend = "rliable" if importlib.util.find_spec("rliable") is not None else "numpy"
    out: dict[str, Any] = {"runs": int(x.shape[0]), "confidence": float(confidence),
                           "backend": backend}
    if x.shape[0] == 0:
        return {**out, "iqm": math.nan, "low": math.nan, "high": math.nan}
    if backend == "rliable":
        import warnings

        from rliable import library as rly
        from rliable import metrics

        # rliable's StratifiedBootstrap draws its resamples from numpy's global generator
        # (np.random.choice in update_indices), not from the random_state it is given: seed the
        # global generator for the call and restore it, so that an interval is reproducible
        # and the caller's global state is untouched
        global_state = np.random.get_state()
        try:
            np.random.seed(seed)
            with warnings.catch_warnings():  # arch deprecates the RandomState rliable passes
                warnings.filterwarnings("ignore", message=".*random_state is deprecated",
                                        category=FutureWarning)
                point, interval = rly.get_interval_estimates(
                    {"scores": x}, lambda s: np.array([metrics.aggregate_iqm(s)]),
                    reps=int(reps), confidence_interval_size=float(confidence),
                    random_state=np.random.RandomState(seed))
        finally:
            np.random.set_state(global_state)
        iqm, low, high = point["scores"][0], interval["scores"][0, 0], interval["scores"][1, 0]
    else:
        # rliable is an optional extra (it pulls in pandas, seaborn, arch and statsmodels, and
        # takes seconds to import): without it, the same estimator in numpy/scipy: the trimmed
        # mean and a percentile bootstrap that resamples runs within each task.
        from scipy.stats import trim_mean

        n, tasks = x.shape
        rng = np.random.default_rng(seed)
        idx = rng.integers(0, n, size=(int(reps), n, tasks))
        boot = trim_mean(x[idx, np.arange(tasks)].reshape(int(reps), -1), 0.25, axis=1)
        tail = 50.0 * (1.0 - float(confidence))
        iqm = _iqm(x)
        low, high = np.percentile(boot, [tail, 100.0 - tail])
    return {**out, "iqm": float(iqm), "low": float(low), "high": float(high)}


# ---------------------------------------------------------------------- reference values
def reference_values(config: dict[str, Any]) -> dict[str, float | None]:
    """The start and best known objective of a run's problem, when it is a documented one.

    Looked up in :mod:`~bilevel_agents.experiments.references` from a run's ``config.json``:
    Four-Rooms (β and the model's slip, default map and λ = 5), the contextual Four-Rooms of
    HPGD (β, λ, its slip 0.44) and building thermal control (β = 0.1, default building).

    Returns:
        ``{"start": J or None, "best": J or None}`` (both ``None`` for any other problem or
        setting: games report other metrics than their ``objective`` column).
    """
    from bilevel_agents.experiments import references as ref

    none: dict[str, float | None] = {"start": None, "best": None}
    env, beta = config.get("env"), config.get("beta")
    if not isinstance(env, str) or not isinstance(beta, (int, float)):
        return none
    try:
        import gymnasium as gym

        import bilevel_envs  # noqa: F401  (registers the ids)

        if env not in gym.registry:
            return none
        kwargs = {k: v for k, v in dict(config.get("env_kwargs") or {}).items()
                  if k != "render_mode"}
        problem = gym.make(env, disable_env_checker=True, **kwargs).unwrapped
        default = gym.make(env, disable_env_checker=True).unwrapped
    except Exception:  # noqa: BLE001  (a results folder of a problem this suite cannot make)
        return none

    def same(*names: str) -> bool:
        return all(np.array_equal(np.asarray(getattr(problem, n)), np.asarray(getattr(default, n)))
                   for n in names)

    name = type(problem).__name__
    if name == "FourRoomsEnv" and same("size", "incentive_budget", "gamma_follower",
                                       "gamma_leader", "max_episode_steps", "start_cell",
                                       "target_cell"):
        if problem.n_contexts == 1 and same("goals") and problem.penalty_weight == 5.0:
            for (b, slip), (start, best) in ref.FOUR_ROOMS.items():
                if math.isclose(b, beta) and abs(slip - problem.slip_prob) < 5e-3:
                    return {"start": start, "best": best}
        if problem.n_contexts > 1 and tuple(map(tuple, problem.goals)) == ((1, 9), (11, 11)) \
                and abs(problem.slip_prob - 0.44) < 5e-3:
            for (b, lam), (start, _, best) in ref.CONTEXTUAL_FOUR_ROOMS.items():
                if math.isclose(b, beta) and math.isclose(lam, problem.penalty_weight):
                    return {"start": start, "best": best}
    if name == "BuildingThermalEnv" and math.isclose(beta, 0.1) and same(
            "noise_std", "init_std", "gamma_follower", "max_episode_steps"):
        return {"start": ref.BUILDING["start"], "best": ref.BUILDING["best"]}
    return none


# ---------------------------------------------------------------------- curves
def smooth(y: np.ndarray, window: int = 100) -> np.ndarray:
    """Trailing moving average, expanding at the start (as in the paper's figures)."""
    c = np.cumsum(np.insert(y, 0, 0.0))
    n = np.arange(1, y.size + 1)
    lo = np.maximum(n - window, 0)
    return (c[n] - c[lo]) / (n - lo)


def _fill_gaps(y: np.ndarray) -> np.ndarray:
    """Iterations without an evaluation (``eval_every`` > 1: NaN) carry the last value."""
    y = np.asarray(y, dtype=np.float64)
    ok = np.isfinite(y)
    if ok.all() or not ok.any():
        return np.nan_to_num(y)
    idx = np.where(ok, np.arange(y.size), 0)
    np.maximum.accumulate(idx, out=idx)
    out = y[idx]
    out[: int(np.argmax(ok))] = y[int(np.argmax(ok))]
    return out


def _settings(row: dict[str, Any]) -> str:
    """The settings of a grid point, for a legend: the step size, batch and SARSA step in
    effect, every other leader option of the run and a non-exact follower."""
    config = row["config"]
    spec = config.get("run_spec") or {}
    given = dict(spec.get("leader_kwargs") or {})
    parts = []
    sarsa = "sarsa" in str(config.get("critic") or "").lower()
    for key in ("lr", "batch_size", "sarsa_alpha"):
        if key == "sarsa_alpha" and key not in given and not sarsa:
            continue  # recorded for every method, in effect only for a SARSA critic
        if key in given or config.get(key) is not None:
            parts.append(f"{key}={given.pop(key, config.get(key))}")
    parts += [f"{k}={v}" for k, v in sorted(given.items())]
    follower = spec.get("follower", "exact")
    if follower != "exact":
        parts.append(f"follower={follower}")
    return ", ".join(parts) if parts else row["point"]


def _band(ys: np.ndarray, band: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper edges of the band around the seed mean of ``ys`` (seeds × iterations)."""
    mean = ys.mean(0)
    if len(ys) < 2:
        return mean, mean
    if band == "se":
        se = ys.std(0, ddof=1) / np.sqrt(len(ys))
        return mean - se, mean + se
    idx = rng.integers(0, len(ys), size=(500, len(ys)))  # percentile bootstrap of the mean
    means = ys[idx].mean(1)
    return np.percentile(means, 2.5, axis=0), np.percentile(means, 97.5, axis=0)


_BAND_TEXT = {"se": "shaded: ±1 standard error over seeds",
              "bootstrap": "shaded: 95% bootstrap CI of the seed mean"}


def plot_learning_curves(root: str | Path, path: str | Path, *, tail: int = 1000,
                         best_known: float | None = None, start: float | None = None,
                         title: str | None = None, label: Callable[[dict], str] | None = None,
                         band: str = "se", all_points: bool = False,
                         window: int = 100) -> Path:
    """Learning curves of a results folder: the seed mean of the exact objective (moving
    average over ``window`` iterations) with a band, the start and the best known value.

    Args:
        root: a results folder.
        path: the PNG to write.
        tail: the score in the legend is the seed mean of each run's last-``tail`` mean.
        best_known: the best known objective (default: :func:`reference_values`, if known).
        start: the start objective (default: the known one, else the runs' mean first value).
        title: the figure's title (default: the folder's name, env and β).
        label: ``label(row) -> str`` names the method of a :func:`score_table` row (default:
            the leader); each curve is labelled with it and the grid point's settings.
        band: ``"se"`` (±1 standard error over seeds) or ``"bootstrap"`` (95% percentile
            bootstrap interval of the seed mean).
        all_points: one curve per grid point (default: the best grid point of each method).
        window: moving-average window.

    Raises:
        ValueError: no run with an objective, or a bad ``band``.
    """
    import matplotlib.pyplot as plt

    fig = _curves_figure(Path(root), tail=tail, best_known=best_known, start=start,
                         title=title, label=label, band=band, all_points=all_points,
                         window=window)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _curves_figure(root: Path, *, tail: int, best_known: float | None, start: float | None,
                   title: str | None, label: Callable[[dict], str] | None, band: str,
                   all_points: bool, window: int) -> Any:
    """The figure of :func:`plot_learning_curves`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    if band not in _BAND_TEXT:
        raise ValueError(f"band must be 'se' or 'bootstrap', got {band!r}")
    groups = load_runs(root)
    table = score_table(root, tail)
    if not table:
        raise ValueError(f"no runs with an objective under {str(root)!r}")
    name = label if label is not None else (lambda r: r["leader"])
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for row in table:  # best first within each method
        if all_points or name(row) not in seen:
            rows.append(row)
            seen.add(name(row))
    config = table[0]["config"]
    known = reference_values(config)
    best_known = known["best"] if best_known is None else best_known
    start_label = "start"
    if start is None and known["start"] is not None:
        start = known["start"]
    elif start is None:
        firsts = [r["start"] for r in table if r["start"] is not None]
        start = float(np.mean(firsts)) if firsts else None
        start_label = "start (runs' mean first J)"
    rng = np.random.default_rng(0)
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    for row in rows:
        curves = [r["metrics"]["objective"] for r in groups[row["point"]]
                  if "objective" in r["metrics"]]
        n = min(c.size for c in curves)
        ys = np.stack([smooth(_fill_gaps(c[:n]), window) for c in curves])
        lo, hi = _band(ys, band, rng)
        x = np.arange(n)
        se = "" if not np.isfinite(row["se"]) else f" ± {row['se']:.3f}"
        line, = ax.plot(x, ys.mean(0), lw=1.4,
                        label=f"{name(row)}: {_settings(row)} — last-{tail} J = "
                              f"{row['mean']:.3f}{se and se + ' SE'} ({len(curves)} seed"
                              f"{'s' if len(curves) > 1 else ''})")
        if len(curves) > 1:
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2, lw=0)
    if start is not None:
        ax.axhline(start, color="0.45", ls=":", lw=1.2, label=f"{start_label}: J = {start:.3f}")
    if best_known is not None:
        ax.axhline(best_known, color="k", ls="--", lw=1, label=f"best known J = {best_known:.3f}")
    handles, _ = ax.get_legend_handles_labels()
    if any(len(groups[r["point"]]) > 1 for r in rows):
        handles.append(Patch(color="0.5", alpha=0.3, label=_BAND_TEXT[band]))
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(f"exact leader objective $J_L$ ({window}-iteration moving average)",
                  fontsize=8)
    ax.ticklabel_format(axis="both", useOffset=False)
    env = config.get("env", "?")
    ax.set_title(title or f"{root.name} — {env}, β = {config.get('beta', '?')}", fontsize=10)
    ax.legend(handles=handles, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13),
              ncol=1, frameon=False)
    ax.grid(alpha=0.25)
    return fig


# ---------------------------------------------------------------------- incentive map
def _chosen_run(runs: list[dict[str, Any]], seed: int | None, tail: int,
                point: str) -> tuple[dict[str, Any], str]:
    """The run the map shows: ``seed``'s, else the best finished run; and how it was chosen."""
    finished = [r for r in runs if (r["path"] / "summary.json").exists()]
    if seed is not None:
        chosen = [r for r in finished if r["seed"] == seed]
        if not chosen:
            raise ValueError(f"seed {seed} has no finished run at the grid point {point!r}; "
                             f"finished seeds: {sorted(r['seed'] for r in finished)}")
        return chosen[0], "chosen seed"
    if not finished:
        raise ValueError(f"no finished run at the grid point {point!r}")
    scores = [_tail_mean(r["metrics"], tail) for r in finished]
    best = int(np.nanargmax(scores)) if np.isfinite(scores).any() else 0
    return finished[best], "best run"


def plot_incentive_map(run_dir: str | Path, path: str | Path, *, title: str | None = None
                       ) -> Path | None:
    """The final incentive of a Four-Rooms run and the follower's greedy moves under it.

    One panel per goal context (one for the plain Four-Rooms): the incentive on each cell as a
    colour (with a colour bar), an arrow per cell for the exact best response's most likely
    move, and markers for the start, the goal(s) and the leader's target cell.

    Args:
        run_dir: a finished run folder (``config.json`` and ``summary.json``).
        path: the PNG to write.
        title: the figure's title.

    Returns:
        ``path``, or ``None`` when the run is not a Four-Rooms run.
    """
    import matplotlib.pyplot as plt

    fig = _incentive_figure(Path(run_dir), title)
    if fig is None:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _incentive_figure(run_dir: Path, title: str | None) -> Any:
    """The figure of :func:`plot_incentive_map` (``None`` for a run of another problem)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    config = json.loads((run_dir / "config.json").read_text())
    if "FourRooms" not in str(config.get("env", "")):
        return None
    summary = json.loads((run_dir / "summary.json").read_text())
    from bilevel_agents.experiments.sweep import make_best_response

    br = make_best_response(config["env"], config["beta"], config.get("env_kwargs"))
    br.set_config(np.asarray(summary["final_theta"]))
    problem = br.problem
    n, contexts = problem.n_cells, problem.n_contexts
    budget = max(problem.incentive_budget, 1e-12)
    moves = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])  # the env's actions: up, right, down, left
    policy = np.asarray(br.policy)
    rows, cols = problem.cells[:, 0], problem.cells[:, 1]
    cmap = matplotlib.colormaps["Reds_r"].with_extremes(bad="#3a3a3a")  # walls: masked
    fig, axes = plt.subplots(1, contexts, figsize=(4.4 * contexts + 1.4, 5.4), squeeze=False,
                             layout="constrained")
    image = None
    for k, ax in enumerate(axes[0]):
        block = slice(k * n, (k + 1) * n)
        grid = np.full(problem.wall.shape, np.nan)
        grid[rows, cols] = np.asarray(problem.incentive)[block]
        image = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-budget, vmax=0.0)
        goal = int(problem.goal_cells[k])
        greedy = policy[block].argmax(axis=1)
        keep = np.arange(n) != goal  # the goal is terminal: no move
        d = moves[greedy[keep]]
        ax.quiver(cols[keep], rows[keep], d[:, 1], d[:, 0], angles="xy", scale_units="xy",
                  scale=1 / 0.62, pivot="middle", width=0.006, color="#1f4e9a")
        for j, g in enumerate(problem.goal_cells):
            if j != k:
                ax.plot(cols[g], rows[g], "*", ms=13, mfc="#b8e0c0", mec="#2e7d32")
        ax.plot(cols[goal], rows[goal], "*", ms=15, mfc="#2e9e44", mec="k")
        ax.plot(cols[problem.start_cell], rows[problem.start_cell], "s", ms=10, mfc="#3f6fd8",
                mec="k")
        ax.plot(cols[problem.target_cell], rows[problem.target_cell], "D", ms=9, mfc="#f2c230",
                mec="k")
        ax.set_xticks([])
        ax.set_yticks([])
        if contexts > 1:
            r, c = problem.cells[goal]
            ax.set_title(f"context {k}: goal at (row {r}, col {c})", fontsize=9)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.85, pad=0.02)
    bar.set_label(f"incentive added to the follower's reward in a cell (budget κ = {budget:g})",
                  fontsize=8)
    legend = [Line2D([], [], ls="", marker="s", ms=9, mfc="#3f6fd8", mec="k", label="start S"),
              Line2D([], [], ls="", marker="*", ms=13, mfc="#2e9e44", mec="k",
                     label="goal G (the follower is paid here)"),
              Line2D([], [], ls="", marker="D", ms=8, mfc="#f2c230", mec="k",
                     label="leader's target T (the leader is paid here)"),
              Line2D([], [], ls="", marker=r"$\rightarrow$", ms=12, color="#1f4e9a",
                     label="follower's greedy move (exact best response)"),
              Line2D([], [], ls="", marker="s", ms=9, mfc="#3a3a3a", mec="#3a3a3a",
                     label="wall")]
    if contexts > 1:
        legend.insert(2, Line2D([], [], ls="", marker="*", ms=12, mfc="#b8e0c0", mec="#2e7d32",
                                label="another context's goal"))
    fig.legend(handles=legend, loc="outside lower center", ncol=2 if contexts == 1 else 3,
               fontsize=8, frameon=False)
    fig.suptitle(title or f"final incentive of {run_dir}", fontsize=9)
    return fig


# ---------------------------------------------------------------------- both
def plot_results(root: str | Path, out: str | Path | None = None, tail: int = 1000,
                 best_known: float | None = None, title: str | None = None,
                 label: Callable[[dict], str] | None = None, *, start: float | None = None,
                 seed: int | None = None, band: str = "se",
                 all_points: bool = False) -> list[Path]:
    """``learning_curves.png`` (:func:`plot_learning_curves`) and, for Four-Rooms,
    ``incentive_map.png`` (:func:`plot_incentive_map`) of the best grid point's best run (or of
    its run of ``seed``), into ``out`` (default: ``root``).

    ``label(row) -> str`` names the curves (default: the leader); rows with the same label
    compete, so a label that includes an estimator variant keeps variants apart. ``best_known``
    and ``start`` default to the problem's documented values (:func:`reference_values`).

    Raises:
        ValueError: no run with an objective; a ``seed`` with no finished run at the best grid
            point.
    """
    root = Path(root)
    out = Path(out) if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    paths = [plot_learning_curves(root, out / "learning_curves.png", tail=tail,
                                  best_known=best_known, start=start, title=title, label=label,
                                  band=band, all_points=all_points)]
    table = score_table(root, tail)
    if "FourRooms" not in str(table[0]["config"].get("env", "")):
        return paths
    row = max(table, key=lambda r: r["mean"])
    run, how = _chosen_run(load_runs(root)[row["point"]], seed, tail, row["point"])
    name = label(row) if label is not None else row["leader"]
    score = _tail_mean(run["metrics"], tail)
    heading = (f"{name} ({_settings(row)}): final incentive, {how} = seed {run['seed']} "
               f"(last-{tail} J = {score:.3f})\n{title or root.name} — "
               f"{row['config'].get('env')}, β = {row['config'].get('beta')}")
    heat = plot_incentive_map(run["path"], out / "incentive_map.png", title=heading)
    return paths + ([heat] if heat else [])
