"""The one training loop every leader runs through: progress, logs, evaluation, checkpoints.

``train(leader, iterations, run_dir=...)`` calls ``leader.update()`` once per outer iteration
and records a row per iteration: the leader's own diagnostics plus the exact objective
``J_L(θ)`` when the problem has one. With a ``run_dir`` it writes

* ``config.json``: the leader's hyper-parameters, the env id and kwargs;
* ``metrics.csv``: one row per iteration (flushed as it goes);
* ``checkpoint.pkl``: the leader's state every ``checkpoint_every`` iterations (atomic write);
* TensorBoard events when ``tensorboard=True`` and tensorboard is installed.

Re-running with the same ``run_dir`` resumes from the checkpoint: θ, critic and random state
are restored and the CSV is cut back to the checkpoint, so an interrupted run continues exactly
as if it had not stopped.
"""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Callable

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

__all__ = ["default_evaluator", "train"]


def default_evaluator(leader: Any) -> Callable[[], dict[str, float]] | None:
    """Exact ``J_L`` at the current θ if the problem has an exact model, else ``None``."""
    from bilevel_agents.exact import has_exact_objective, leader_objective

    if not has_exact_objective(leader.br):
        return None
    return lambda: {"objective": leader_objective(leader.br)}


def _env_description(leader: Any) -> dict[str, Any]:
    spec = getattr(leader.br, "spec", None)
    if spec is None:
        return {"env": type(leader.br.problem).__name__}
    return {"env": spec.id, "env_kwargs": {k: v for k, v in spec.kwargs.items()
                                           if k != "render_mode"}}


def _atomic_pickle(obj: Any, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(obj, fh)
    os.replace(tmp, path)


def _read_rows(path: Path, upto: int) -> list[dict[str, float]]:
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(fh)]
    return [r for r in rows if r["iteration"] < upto]


def train(leader: Any, iterations: int, *, run_dir: str | os.PathLike | None = None,
          evaluate: Callable[[], dict[str, float]] | None | bool = True, eval_every: int = 1,
          checkpoint_every: int = 500, progress: bool = True, tensorboard: bool = False,
          callback: Callable[[int, dict[str, float]], bool | None] | None = None,
          ) -> list[dict[str, float]]:
    """Run ``iterations`` outer iterations of ``leader`` (resuming from ``run_dir`` if possible).

    Args:
        leader: any :class:`~bilevel_agents.base.Leader`.
        iterations: total outer iterations of the run (not "more iterations").
        run_dir: results folder; ``None`` keeps everything in memory.
        evaluate: ``True`` = exact objective when available; a callable returning a dict of
            metrics; ``False``/``None`` = none.
        eval_every: evaluate every k iterations (and at the last one).
        checkpoint_every: checkpoint period in iterations (with ``run_dir``).
        progress: show a progress bar.
        tensorboard: also log to TensorBoard in ``run_dir`` (needs the ``tensorboard`` extra).
        callback: ``callback(iteration, row)``; returning ``False`` stops training.

    Returns:
        One dict per iteration: ``iteration``, the leader's diagnostics, ``objective``.

    The loop runs with single-threaded BLAS: its linear algebra is small, and multi-threaded
    BLAS on small matrices is up to 20× slower on a loaded machine (measured in
    ``benchmarks/bench_bchg_iteration.py``); parallelism comes from running seeds side by side.
    """
    with threadpool_limits(limits=1, user_api="blas"):
        return _train(leader, iterations, run_dir=run_dir, evaluate=evaluate,
                      eval_every=eval_every, checkpoint_every=checkpoint_every,
                      progress=progress, tensorboard=tensorboard, callback=callback)


def _train(leader, iterations, *, run_dir, evaluate, eval_every, checkpoint_every, progress,
           tensorboard, callback):
    if int(iterations) < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations!r}")
    if int(eval_every) < 1 or int(checkpoint_every) < 1:
        raise ValueError("eval_every and checkpoint_every must be >= 1")
    evaluator = default_evaluator(leader) if evaluate is True else (evaluate or None)
    history: list[dict[str, float]] = []
    writer = csv_file = tb = None
    if run_dir is not None:
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        ckpt = run / "checkpoint.pkl"
        if ckpt.exists():
            with open(ckpt, "rb") as fh:
                leader.load_state_dict(pickle.load(fh))
        history = _read_rows(run / "metrics.csv", leader.iteration)
        with open(run / "config.json", "w") as fh:
            json.dump({**leader.hparams(), **_env_description(leader),
                       "iterations": int(iterations)}, fh, indent=2, default=str)
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            tb = SummaryWriter(str(run / "tb"))
    start = leader.iteration
    bar = tqdm(total=int(iterations), initial=start, disable=not progress, desc=leader.name,
               dynamic_ncols=True, leave=False)
    fields: list[str] | None = None
    try:
        for it in range(start, int(iterations)):
            row: dict[str, float] = {"iteration": float(it)}
            if evaluator is not None:  # J at the θ the batch is drawn from (NaN if skipped)
                due = it % eval_every == 0 or it == iterations - 1
                row.update(evaluator() if due else {"objective": math.nan})
            row.update(leader.update())
            history.append(row)
            if run_dir is not None:
                if fields is None:
                    fields = list(row)
                    path = Path(run_dir) / "metrics.csv"
                    # rewrite the kept rows (resume cut the CSV back to the checkpoint)
                    csv_file = open(path, "w", newline="")
                    writer = csv.DictWriter(csv_file, fieldnames=fields, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(history[:-1])
                writer.writerow(row)
                if tb is not None:
                    for k, v in row.items():
                        if k != "iteration" and math.isfinite(v):
                            tb.add_scalar(k, v, it)
                if leader.iteration % checkpoint_every == 0 or it == iterations - 1:
                    csv_file.flush()
                    _atomic_pickle(leader.state_dict(), Path(run_dir) / "checkpoint.pkl")
            if math.isfinite(row.get("objective", math.nan)):
                bar.set_postfix(J=f"{row['objective']:.4f}", refresh=False)
            bar.update(1)
            if callback is not None and callback(it, row) is False:
                break
    finally:
        bar.close()
        if csv_file is not None:
            csv_file.close()
        if tb is not None:
            tb.close()
    return history
