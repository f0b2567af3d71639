"""Grids × seeds of training runs: local processes by default, Ray on request; resumable.

A run is a :class:`RunSpec` (env, β, leader and its keyword arguments, seed, iterations). Each
run owns a folder; a finished run leaves ``summary.json`` and is skipped when the sweep is
started again, and an interrupted one resumes from its checkpoint
(:func:`bilevel_agents.trainer.train`).
"""

from __future__ import annotations

import functools
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

    The run is identified by everything but ``out``, ``checkpoint_every``, ``tail`` and
    ``tensorboard`` (which do not change its results): :meth:`identity` is stored in the run
    folder, and a folder of another identity is refused
    (:class:`~bilevel_agents.runs.RunMismatch`). ``tensorboard=True`` also writes TensorBoard
    events to ``run_dir/tb`` (needs the ``tensorboard`` extra).
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
    eval_every: int = 1  # exact evaluation every k iterations (NaN rows between)
    tensorboard: bool = False  # also log TensorBoard events in the run folder (``tb/``)

    def __post_init__(self) -> None:
        check_int("iterations", self.iterations, 1)
        check_int("eval_every", self.eval_every, 1)
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
                             "iterations": int(self.iterations),
                             **({} if self.eval_every == 1 else
                                {"eval_every": int(self.eval_every)})}}

    @property
    def run_dir(self) -> Path:
        """``out/<leader>_<kwargs>/seed<seed>`` (plus the follower when it is not exact; a list
        value joins its items with ``-``, e.g. ``clip_groups3-1``)."""
        def flat(key: str, val: Any) -> list[str]:
            if isinstance(val, dict):
                return [p for k, v in sorted(val.items()) for p in flat(k, v)]
            if isinstance(val, (list, tuple)):  # no brackets or spaces in folder names
                return [f"{key}{'-'.join(str(v) for v in val)}"]
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


def build_leader(spec: RunSpec) -> Any:
    """The leader of a run, as the run starts (its best response solved at θ0)."""
    from bilevel_agents.leaders import get_leader

    leader_cls = get_leader(spec.leader)
    br = make_best_response(spec.env, spec.beta, spec.env_kwargs, spec.follower, spec.seed)
    return leader_cls(br, seed=spec.seed, **spec.leader_kwargs)


def run_one(spec: RunSpec, progress: bool = False) -> dict[str, Any]:
    """Train one run (resuming from its folder; a finished run is read back); its summary.

    Raises:
        ValueError: bad settings, or a folder holding a run of another specification.
    """
    leader = build_leader(spec)
    leader.learn(spec.iterations, run_dir=spec.run_dir, progress=progress,
                 checkpoint_every=spec.checkpoint_every, spec=spec.identity(), tail=spec.tail,
                 eval_every=spec.eval_every, tensorboard=spec.tensorboard)
    summary = json.loads((spec.run_dir / "summary.json").read_text())
    return {**asdict(spec), **summary}


def _run_quiet(spec: RunSpec) -> dict[str, Any]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return run_one(spec)


def _run_batch(specs: list[RunSpec], progress: bool = False) -> list[dict[str, Any]]:
    """Train runs of one batch with the batched engine (:mod:`bilevel_agents.batched`)."""
    from bilevel_agents.batched import BatchedRun, train_batched

    jobs = [BatchedRun(make_leader=functools.partial(build_leader, spec),
                       iterations=spec.iterations, run_dir=spec.run_dir, spec=spec.identity(),
                       checkpoint_every=spec.checkpoint_every, tail=spec.tail)
            for spec in specs]
    out = train_batched(jobs, progress=progress)
    return [{**asdict(spec), **o["summary"]} for spec, o in zip(specs, out)]


def _group_key(spec: RunSpec) -> str:
    from bilevel_agents.batched import PER_RUN

    kwargs = {k: v for k, v in spec.leader_kwargs.items() if k not in PER_RUN}
    # eval_every too: the engine evaluates every iteration, so a group's first run decides
    return json.dumps([spec.env, spec.env_kwargs, spec.beta, spec.follower, spec.leader,
                       kwargs, spec.tensorboard, spec.eval_every], sort_keys=True, default=str)


def plan_batches(specs: list[RunSpec], *, workers: int = 1, max_batch: int = 256
                 ) -> tuple[list[list[RunSpec]], list[tuple[RunSpec, str]]]:
    """Group runs for the batched engine: ``(batches, fallbacks)``.

    Runs that differ only in seed, ``lr`` and ``sarsa_alpha`` share a batch; each group is cut
    into ``workers`` batches of at most ``max_batch`` runs (so that ``workers`` processes share
    it). A group the engine does not support (:func:`bilevel_agents.batched.unsupported_reason`
    of its first run's leader, or runs that log TensorBoard events) falls back to one process
    per run, with the reason.
    """
    from bilevel_agents.batched import unsupported_reason

    groups: dict[str, list[RunSpec]] = {}
    for spec in specs:
        groups.setdefault(_group_key(spec), []).append(spec)
    batches: list[list[RunSpec]] = []
    fallbacks: list[tuple[RunSpec, str]] = []
    for group in groups.values():
        try:
            if group[0].tensorboard:  # the batched engine writes no TensorBoard events
                reason = "TensorBoard events are written by the one-run trainer"
            else:  # what the method needs first: it says more than the evaluation period
                reason = unsupported_reason(build_leader(group[0]))
                if reason is None and group[0].eval_every != 1:
                    reason = "the engine evaluates every iteration"
        except Exception as err:  # noqa: BLE001  (the run itself reports it, in a process)
            reason = f"its leader could not be built here ({err})"
        if reason is not None:
            fallbacks += [(spec, reason) for spec in group]
            continue
        parts = max(int(workers), -(-len(group) // int(max_batch)))
        size = -(-len(group) // parts)
        batches += [group[i:i + size] for i in range(0, len(group), size)]
    return batches, fallbacks


def _run_batch_quiet(specs: list[RunSpec]) -> list[dict[str, Any]]:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _run_batch(specs)


def run_sweep(specs: list[RunSpec], *, workers: int = 1, backend: str = "local",
              progress: bool = True, engine: str = "auto") -> list[dict[str, Any]]:
    """Run every spec (finished ones are read back, not redone).

    Args:
        specs: the runs.
        workers: parallel processes (``backend="local"``).
        backend: ``"local"`` (process pool) or ``"ray"`` (an existing or local Ray cluster;
            ``pip install bilevel[ray]``).
        progress: progress bar over runs.
        engine: ``"auto"`` (default): runs the batched engine supports
            (:mod:`bilevel_agents.batched`; tabular problems with exact followers) are trained
            in batches (:func:`plan_batches`: ``workers`` batches per group; with Ray, one task
            per batch), the others one process per run (printed, with the reason);
            ``"processes"``: one process per run for all.

    Results are the same either way (the batched engine reproduces single runs bit for bit).
    """
    from tqdm.auto import tqdm

    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    if engine not in ("auto", "processes"):
        raise ValueError(f"engine must be 'auto' or 'processes', got {engine!r}")
    if int(workers) < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if engine == "auto":
        batches, fallbacks = plan_batches(specs, workers=workers)
    else:
        batches, fallbacks = [], [(s, "engine='processes'") for s in specs]
    if fallbacks and engine == "auto":
        reasons: dict[str, list[RunSpec]] = {}
        for spec, reason in fallbacks:
            reasons.setdefault(reason, []).append(spec)
        for reason, group in reasons.items():
            print(f"{len(group)} run(s) not batched ({reason}): "
                  + ", ".join(str(s.run_dir) for s in group[:3])
                  + (", ..." if len(group) > 3 else ""), flush=True)
    singles = [spec for spec, _ in fallbacks]
    results: list[dict[str, Any]] = []
    bar = tqdm(total=len(specs), disable=not progress, desc="runs")
    if backend == "ray":
        import ray

        if not ray.is_initialized():
            ray.init(address=os.environ.get("RAY_ADDRESS"), include_dashboard=False,
                     log_to_driver=False)
        batch_remote, one_remote = ray.remote(_run_batch_quiet), ray.remote(_run_quiet)
        pending = ([batch_remote.remote(b) for b in batches]
                   + [one_remote.remote(s) for s in singles])
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            got = ray.get(ready[0])
            got = got if isinstance(got, list) else [got]
            results += got
            bar.update(len(got))
    elif workers == 1:
        for batch in batches:
            results += _run_batch(batch, progress=progress)
            bar.update(len(batch))
        for spec in singles:
            results.append(_run_quiet(spec))
            bar.update(1)
    else:
        with ProcessPoolExecutor(max_workers=int(workers)) as pool:
            futures = ([pool.submit(_run_batch_quiet, b) for b in batches]
                       + [pool.submit(_run_quiet, s) for s in singles])
            for fut in as_completed(futures):
                got = fut.result()
                got = got if isinstance(got, list) else [got]
                results += got
                bar.update(len(got))
    bar.close()
    return results
