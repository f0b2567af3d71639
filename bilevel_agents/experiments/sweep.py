"""Grids × seeds of training runs: local processes by default, Ray on request; resumable.

A run is a :class:`RunSpec` (env, β, leader and its keyword arguments, seed, iterations). Each
run owns a folder; a finished run leaves ``summary.json`` and is skipped when the sweep is
started again, and an interrupted one resumes from its checkpoint
(:func:`bilevel_agents.trainer.train`).
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np

__all__ = ["RunSpec", "grid", "make_best_response", "run_one", "run_sweep", "summarize_run"]


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``leader_kwargs`` go to the leader class (lr, batch_size, ...)."""

    env: str
    leader: str
    beta: float
    seed: int
    iterations: int
    leader_kwargs: dict[str, Any] = field(default_factory=dict)
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    out: str = "results"
    checkpoint_every: int = 500
    tail: int = 1000  # the score is the mean objective over the last `tail` iterations

    @property
    def run_dir(self) -> Path:
        def flat(key: str, val: Any) -> list[str]:
            if isinstance(val, dict):
                return [p for k, v in sorted(val.items()) for p in flat(k, v)]
            return [f"{key}{val}"]

        parts = [self.leader] + [p for k, v in sorted(self.leader_kwargs.items())
                                 for p in flat(k, v)]
        return Path(self.out) / "_".join(parts) / f"seed{self.seed}"


def grid(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of keyword axes: ``grid(lr=[.1, .5], sarsa_alpha=[.3])``."""
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))]


def make_best_response(env: str, beta: float, env_kwargs: dict[str, Any] | None = None) -> Any:
    """``BestResponse`` over a registered Gymnasium id or a ``bilevel_envs.games`` module."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from bilevel_envs.wrappers import BestResponse, GameBestResponse

    env_kwargs = dict(env_kwargs or {})
    if env in gym.registry:
        return BestResponse(gym.make(env, **env_kwargs), beta=beta)
    try:
        module = importlib.import_module(f"bilevel_envs.games.{env}")
    except ModuleNotFoundError:
        raise ValueError(f"unknown env {env!r}: not a registered Gymnasium id nor a game of "
                         f"bilevel_envs.games") from None
    return GameBestResponse(module.env(**env_kwargs), beta=beta)


def summarize_run(history: list[dict[str, float]], tail: int) -> dict[str, float]:
    """Final and last-``tail`` mean objective of one run."""
    obj = np.array([r.get("objective", np.nan) for r in history], dtype=float)
    obj = obj[np.isfinite(obj)]
    if obj.size == 0:
        return {"iterations": len(history)}
    return {"iterations": len(history), "final_objective": float(obj[-1]),
            "tail_mean_objective": float(obj[-tail:].mean())}


def run_one(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train one run (resuming if its folder has a checkpoint); returns its summary."""
    from bilevel_agents.leaders import get_leader

    run_dir = spec.run_dir
    done = run_dir / "summary.json"
    if done.exists():
        return json.loads(done.read_text())
    leader_cls = get_leader(spec.leader)
    br = make_best_response(spec.env, spec.beta, spec.env_kwargs)
    leader = leader_cls(br, seed=spec.seed, **spec.leader_kwargs)
    history = leader.learn(spec.iterations, run_dir=run_dir, progress=progress,
                           checkpoint_every=spec.checkpoint_every)
    summary = {**asdict(spec), **summarize_run(history, spec.tail),
               "final_theta": leader.theta.tolist()}
    tmp = done.with_suffix(".tmp")
    tmp.write_text(json.dumps(summary, indent=1))
    os.replace(tmp, done)
    return summary


def _run_quiet(spec: RunSpec) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_one(spec)


def run_sweep(specs: list[RunSpec], *, workers: int = 1, backend: str = "local",
              progress: bool = True) -> list[dict[str, Any]]:
    """Run every spec (finished ones are read back, not redone).

    Args:
        specs: the runs.
        workers: parallel processes (``backend="local"``).
        backend: ``"local"`` (process pool) or ``"ray"`` (an existing or local Ray cluster;
            ``pip install bilevel[ray]``).
        progress: progress bar over runs.
    """
    from tqdm.auto import tqdm

    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), disable=not progress, desc="runs")
    if backend == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     log_to_driver=False)
        remote = ray.remote(_run_quiet)
        pending = [remote.remote(s) for s in specs]
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(ready[0]))
            bar.update(1)
    elif workers == 1:
        for spec in specs:
            results.append(_run_quiet(spec))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            for fut in as_completed([pool.submit(_run_quiet, s) for s in specs]):
                results.append(fut.result())
                bar.update(1)
    bar.close()
    return results
