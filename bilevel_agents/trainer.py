"""The one training loop every leader runs through: progress, logs, evaluation, checkpoints.

``train(leader, iterations, run_dir=...)`` calls ``leader.update()`` once per outer iteration
and records a row per iteration: the leader's own diagnostics plus the exact objective
``J_L(θ)`` when the problem has one. With a ``run_dir`` (a :class:`~bilevel_agents.runs.RunFolder`)
it writes

* ``config.json``: the run's whole specification (leader settings, env id and kwargs, β, the
  follower, iterations); a folder of another specification is refused;
* ``metrics.csv``: one row per iteration, append-only, flushed before every checkpoint;
* ``checkpoint.npz``: everything that affects the future (θ, optimiser, critic, generators, the
  follower's warm start, replay buffers) every ``checkpoint_every`` iterations (atomic);
* ``summary.json`` when the run has finished all its iterations;
* TensorBoard events when ``tensorboard=True`` (needs the ``tensorboard`` extra).

Re-running with the same ``run_dir`` resumes from the checkpoint and cuts the log back to it,
so an interrupted run continues exactly (bit for bit) as if it had not stopped; a finished run
is read back, not redone.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bilevel_agents.runs import RunFolder, summarize
from bilevel_envs.utils import check_int

__all__ = ["default_evaluator", "describe_problem", "run_config", "train"]


def default_evaluator(leader: Any) -> Callable[[], dict[str, float]] | None:
    """Exact ``J_L(θ)`` under the exact best response, the problem's documented report metrics
    (:func:`bilevel_agents.exact.report_metrics`) and, for a follower that is not exact, the
    objective under the follower's actual policy and its gap
    (:func:`bilevel_agents.exact.follower_metrics`), if the problem has an exact model."""
    from bilevel_agents.exact import (
        follower_metrics,
        has_exact_objective,
        leader_objective,
        report_metrics,
    )

    if not has_exact_objective(leader.br):
        return None
    br = leader.br
    return lambda: {"objective": leader_objective(br), **report_metrics(br),
                    **follower_metrics(br)}


def describe_problem(br: Any) -> dict[str, Any]:
    """The env id and kwargs, β and the follower behind a best response (for ``config.json``)."""
    from bilevel_envs.followers.base import describe

    out: dict[str, Any] = {"beta": br.beta, "follower": describe(br.follower)}
    spec = getattr(br, "spec", None)
    if spec is not None:
        out["env"] = spec.id
        out["env_kwargs"] = {k: v for k, v in spec.kwargs.items() if k != "render_mode"}
        wrappers = [w for w in spec.additional_wrappers if w.name == type(br).__name__]
        if wrappers:
            out["follower_kwargs"] = {k: v for k, v in wrappers[-1].kwargs.items()
                                      if k not in ("beta", "follower")}
        return out
    problem = br.problem
    out["env"] = problem.metadata.get("name", type(problem).__name__)
    out["env_kwargs"] = dict(getattr(problem, "init_kwargs", {}))
    return out


def run_config(leader: Any, iterations: int, spec: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """A run's whole specification, as stored in its ``config.json`` (leader settings, the
    problem, ``spec``, iterations): what the trainer and the batched engine both write."""
    return {**leader.hparams(), **describe_problem(leader.br), **(spec or {}),
            "iterations": iterations}


def train(leader: Any, iterations: int, *, run_dir: str | os.PathLike | None = None,
          evaluate: Callable[[], dict[str, float]] | None | bool = True, eval_every: int = 1,
          checkpoint_every: int = 500, progress: bool = True, tensorboard: bool = False,
          callback: Callable[[int, dict[str, float]], bool | None] | None = None,
          spec: dict[str, Any] | None = None, tail: int = 1000) -> list[dict[str, float]]:
    """Run ``iterations`` outer iterations of ``leader`` (resuming from ``run_dir`` if possible).

    Args:
        leader: any :class:`~bilevel_agents.leader.Leader`.
        iterations: total outer iterations of the run (not "more iterations"), >= 1.
        run_dir: results folder; ``None`` keeps everything in memory.
        evaluate: ``True`` = exact objective when available; a callable returning a dict of
            metrics; ``False``/``None`` = none.
        eval_every: evaluate every k iterations (and at the last one).
        checkpoint_every: checkpoint period in iterations (with ``run_dir``).
        progress: show a progress bar.
        tensorboard: also log to TensorBoard in ``run_dir``.
        callback: ``callback(iteration, row)``; returning ``False`` stops training.
        spec: more of the run's specification to store and check (e.g. a sweep's follower
            string); merged into ``config.json``.
        tail: the summary's score is the mean objective over the last ``tail`` iterations.

    Returns:
        One dict per iteration: ``iteration``, the leader's diagnostics, ``objective``.

    Raises:
        ValueError: a bad count; :class:`~bilevel_agents.runs.RunMismatch` for a folder of
            another specification; :class:`~bilevel_agents.runs.RunBusy` for a folder another
            process is training in.

    The loop runs with single-threaded BLAS: its linear algebra is small, and multi-threaded
    BLAS on small matrices is up to 20× slower on a loaded machine; parallelism comes from
    running seeds side by side.
    """
    iterations = check_int("iterations", iterations, 1)
    eval_every = check_int("eval_every", eval_every, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 1)
    tail = check_int("tail", tail, 1)
    with threadpool_limits(limits=1, user_api="blas"):
        if run_dir is None:
            return _loop(leader, iterations, None, evaluate, eval_every, checkpoint_every,
                         progress, None, callback)
        with RunFolder(run_dir, run_config(leader, iterations, spec)) as run:
            summary = run.summary()
            if summary is not None:  # finished: read back, not redone
                return run.read_log()
            run.restore(leader)
            history = run.open_log(leader.iteration)
            tb = None
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                tb = SummaryWriter(str(run.path / "tb"))
            try:
                history += _loop(leader, iterations, run, evaluate, eval_every,
                                 checkpoint_every, progress, tb, callback)
            finally:
                if tb is not None:
                    tb.close()
            if leader.iteration == iterations:
                run.write_summary({**summarize(history, tail), "final_theta": leader.theta})
            return history


def _loop(leader, iterations, run, evaluate, eval_every, checkpoint_every, progress, tb,
          callback) -> list[dict[str, float]]:
    evaluator = default_evaluator(leader) if evaluate is True else (evaluate or None)
    history: list[dict[str, float]] = []
    start = leader.iteration
    bar = tqdm(total=iterations, initial=start, disable=not progress, desc=leader.name,
               dynamic_ncols=True, leave=False)
    try:
        for it in range(start, iterations):
            row: dict[str, float] = {"iteration": float(it)}
            if evaluator is not None:  # J at the θ the batch is drawn from (NaN if skipped)
                due = it % eval_every == 0 or it == iterations - 1
                row.update(evaluator() if due else {"objective": math.nan})
            row.update(leader.update())
            history.append(row)
            if run is not None:
                run.append(row)
                if tb is not None:
                    for k, v in row.items():
                        if k != "iteration" and math.isfinite(v):
                            tb.add_scalar(k, v, it)
                if leader.iteration % checkpoint_every == 0 or leader.iteration == iterations:
                    run.save_checkpoint(leader.state_dict())
            if math.isfinite(row.get("objective", math.nan)):
                bar.set_postfix(J=f"{row['objective']:.4f}", refresh=False)
            bar.update(1)
            if callback is not None and callback(it, row) is False:
                break
    finally:
        bar.close()
    return history
