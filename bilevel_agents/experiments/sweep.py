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

from bilevel_envs.utils import check_beta, check_int

__all__ = ["RunSpec", "default_beta", "grid", "make_best_response", "run_one", "run_sweep"]


@dataclass(frozen=True)
class RunSpec:
    """One training run. ``leader_kwargs`` go to the leader class (lr, batch_size, ...).

    The run is identified by everything but ``out``, ``checkpoint_every`` and ``tail`` (which
    do not change its results): :meth:`identity` is stored in the run folder, and a folder of
    another identity is refused (:class:`~bilevel_agents.runs.RunMismatch`).
    """

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
    follower: str = "exact"

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, 1)
        check_int("seed", self.seed, 0)
        check_int("checkpoint_every", self.checkpoint_every, 1)
        check_int("tail", self.tail, 1)
        check_beta(self.beta)

    def identity(self) -> dict[str, Any]:
        """What makes the run this run (stored and checked in its folder)."""
        from bilevel_agents.leaders import get_leader

        return {"run_spec": {"env": self.env, "env_kwargs": dict(self.env_kwargs),
                             "beta": float(self.beta), "follower": self.follower,
                             "leader": get_leader(self.leader).name,
                             "leader_kwargs": dict(self.leader_kwargs), "seed": int(self.seed),
                             "iterations": int(self.iterations)}}

    @property
    def run_dir(self) -> Path:
        """``out/<leader>_<kwargs>/seed<seed>`` (plus the follower when it is not exact)."""
        def flat(key: str, val: Any) -> list[str]:
            if isinstance(val, dict):
                return [p for k, v in sorted(val.items()) for p in flat(k, v)]
            return [f"{key}{val}"]

        parts = [self.leader] + [p for k, v in sorted(self.leader_kwargs.items())
                                 for p in flat(k, v)]
        if self.follower != "exact":
            parts.append("follower" + self.follower.replace(":", "-"))
        return Path(self.out) / "_".join(parts) / f"seed{self.seed}"


def grid(**axes: Iterable[Any]) -> list[dict[str, Any]]:
    """Cartesian product of keyword axes: ``grid(lr=[.1, .5], sarsa_alpha=[.3])``."""
    keys = list(axes)
    return [dict(zip(keys, vals)) for vals in itertools.product(*(axes[k] for k in keys))]


def make_best_response(env: str, beta: float, env_kwargs: dict[str, Any] | None = None,
                       follower: str = "exact", seed: int | None = None) -> Any:
    """The follower's best response over a registered Gymnasium id or a ``bilevel_envs.games``
    module, with the follower given by a spec string (``"exact"``, ``"kstep:5:carry"``, ...;
    :func:`bilevel_envs.followers.make_follower`).

    Raises:
        ValueError: an unknown env, an env kwarg it does not take, a bad follower spec.
    """
    import gymnasium as gym

    import bilevel_envs  # noqa: F401  (registers the ids)
    from bilevel_envs.wrappers import BestResponse, GameBestResponse

    env_kwargs = dict(env_kwargs or {})
    if env in gym.registry:
        try:
            made = gym.make(env, **env_kwargs)
        except TypeError as err:  # an unknown keyword argument of the env's constructor
            raise ValueError(f"env {env!r} does not take these kwargs {sorted(env_kwargs)}: "
                             f"{err}") from None
        wrapper = BestResponse
    else:
        try:
            module = importlib.import_module(f"bilevel_envs.games.{env}")
        except ModuleNotFoundError:
            raise ValueError(f"unknown env {env!r}: not a registered Gymnasium id nor a game "
                             f"of bilevel_envs.games") from None
        try:
            made = module.env(**env_kwargs)
        except TypeError as err:
            raise ValueError(f"game {env!r} does not take these kwargs {sorted(env_kwargs)}: "
                             f"{err}") from None
        wrapper = GameBestResponse
    if follower == "exact":
        return wrapper(made, beta=beta)
    from bilevel_envs.followers import make_follower

    return wrapper(made, beta=beta,
                   follower=make_follower(follower, made.unwrapped, beta, seed=seed))


def default_beta(env: str, env_kwargs: dict[str, Any] | None = None) -> float:
    """The follower temperature of a problem's documented experiments (``default_beta``).

    Raises:
        ValueError: an unknown env, or one that documents no default (pass β explicitly).
    """
    import gymnasium as gym

    import bilevel_envs  # noqa: F401

    if env in gym.registry:
        problem = gym.make(env, disable_env_checker=True, **dict(env_kwargs or {})).unwrapped
    else:
        try:
            problem = importlib.import_module(f"bilevel_envs.games.{env}").raw_env(
                **dict(env_kwargs or {}))
        except ModuleNotFoundError:
            raise ValueError(f"unknown env {env!r}: not a registered Gymnasium id nor a game "
                             f"of bilevel_envs.games") from None
    beta = getattr(problem, "default_beta", None)
    if beta is None:
        raise ValueError(f"{env} documents no default beta; pass --beta")
    return float(beta)


def run_one(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train one run (resuming from its folder; a finished run is read back); its summary.

    Raises:
        ValueError: bad settings, or a folder holding a run of another specification.
    """
    from bilevel_agents.leaders import get_leader

    leader_cls = get_leader(spec.leader)
    br = make_best_response(spec.env, spec.beta, spec.env_kwargs, spec.follower, spec.seed)
    leader = leader_cls(br, seed=spec.seed, **spec.leader_kwargs)
    leader.learn(spec.iterations, run_dir=spec.run_dir, progress=progress,
                 checkpoint_every=spec.checkpoint_every, spec=spec.identity(), tail=spec.tail)
    summary = json.loads((spec.run_dir / "summary.json").read_text())
    return {**asdict(spec), **summary}


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
