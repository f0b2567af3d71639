"""Benchmarks: speed and accuracy measured on this machine, comparisons as same-run ratios.

=========================  ==========================================================
module                     measures
=========================  ==========================================================
``bench_batched``          the batched engine vs the per-run runner on the paper's BC-HG
                           grid (2 cores), one run, cost vs problem size
``bench_bchg_iteration``   one BC-HG outer iteration on Four-Rooms, ours vs written plainly
``bench_building``         building control: DARE vs Riccati iteration, estimator noise,
                           MLP critic quality vs cost, one BC-HG iteration
``bench_followers``        one BC-HG iteration on Four-Rooms with each kind of follower
                           (exact, k-step, soft Q-learning, Stable-Baselines3 DQN)
``bench_four_rooms``       Four-Rooms follower solves (Newton vs value iteration), exact
                           hypergradient, batched rollouts vs a Gymnasium loop
``bench_games``            Markov games: follower solves, one BC-HG iteration (and the
                           learning runs behind ``docs/results/games.md``)
``bench_sweep``            sweep throughput of the paper's BC-HG grid, 1 vs 2 workers
``estimator_accuracy``     bias, variance and cosine of each method's hypergradient
                           estimate against the exact hypergradient on Four-Rooms
=========================  ==========================================================

Each is a module with a ``main(argv) -> int``, runnable as
``python -m bilevel_agents.benchmarks.<name> [--quick]`` (``-h`` lists its options); all use
the shared :mod:`~bilevel_agents.benchmarks.harness`. :func:`run` runs several of them, each
in its own process (what ``bilevel bench`` does)::

    from bilevel_agents import benchmarks
    benchmarks.available()                                  # the names above
    benchmarks.run(["four_rooms"], quick=True)              # 0 if every benchmark succeeded
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

__all__ = ["BENCHMARKS", "available", "run", "select"]

#: the benchmark modules of this package, in the order :func:`run` runs them
BENCHMARKS: tuple[str, ...] = (
    "bench_batched",
    "bench_bchg_iteration",
    "bench_building",
    "bench_followers",
    "bench_four_rooms",
    "bench_games",
    "bench_sweep",
    "estimator_accuracy",
)


def available() -> list[str]:
    """The names of the benchmarks (modules of :mod:`bilevel_agents.benchmarks`)."""
    return list(BENCHMARKS)


def select(names: Sequence[str] | None) -> list[str]:
    """The benchmarks that ``names`` choose, in :data:`BENCHMARKS` order.

    A name chooses the benchmark of that name, else every benchmark whose name contains it
    (``"games"`` → ``bench_games``). ``None`` or empty: all of them.

    Raises:
        ValueError: a name that chooses no benchmark (the message lists the known ones).
    """
    if not names:
        return available()
    chosen: set[str] = set()
    for name in names:
        hits = [name] if name in BENCHMARKS else [b for b in BENCHMARKS if name in b]
        if not hits:
            raise ValueError(f"no benchmark matches {name!r}; available: {', '.join(BENCHMARKS)}")
        chosen.update(hits)
    return [b for b in BENCHMARKS if b in chosen]


def run(names: Sequence[str] | None = None, quick: bool = False) -> int:
    """Run benchmarks, each in a fresh Python process (``python -m ...``), output streamed.

    Args:
        names: benchmarks to run (see :func:`select`); ``None``: all.
        quick: pass ``--quick`` (the smoke-run sizes; each well under a minute).

    Returns:
        0 if every benchmark exited with 0, else 1.

    Raises:
        ValueError: a name that chooses no benchmark.
    """
    code = 0
    for name in select(names):
        print(f"== {name}", flush=True)
        cmd = [sys.executable, "-m", f"{__name__}.{name}"] + (["--quick"] if quick else [])
        if subprocess.call(cmd) != 0:
            print(f"== {name} failed", flush=True)
            code = 1
    return code
