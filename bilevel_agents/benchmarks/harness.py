"""The timing harness every benchmark uses: one way to time, to limit threads and to print.

A benchmark measures everything it compares *in the same run*, on this machine, and prints
the comparison as a ratio (never a number from another machine or day)::

    from bilevel_agents.benchmarks import harness

    def main(argv=None) -> int:
        args = harness.parser(__doc__).parse_args(argv)      # --quick, --blas-threads, --markdown
        report = harness.Report("bench_mine", args)          # prints the environment line
        with harness.single_threaded(args.blas_threads):
            report.section("solvers")
            t_new, _ = harness.timed(new_solver, repeat=3 if args.quick else 20)
            t_old, _ = harness.timed(old_solver, repeat=3)
            report.time("new solver", t_new)
            report.time("old solver", t_old)
            report.ratio("old / new", t_old, t_new)
        return report.finish()

API:

* :func:`timed` — median wall time (``time.perf_counter``) of a callable over repeats, with
  an untimed ``setup`` before each run;
* :class:`Stopwatch` — a context manager for one long measurement (a training run, a sweep);
* :func:`single_threaded` — BLAS / OpenMP (threadpoolctl) and torch limited to one thread:
  the dense solves here are small, and a multi-threaded BLAS on a busy 2-core machine can be
  100× slower on them;
* :func:`parser` / :func:`add_options` — the common command line (``--quick``,
  ``--blas-threads``, ``--markdown``);
* :class:`Report` — rows printed as they are measured (time, free text, ratio), grouped in
  sections, and optionally the whole report again as a Markdown table at the end;
* :func:`fmt_time`, :func:`environment`, :func:`warm_up_torch`.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "Report",
    "Stopwatch",
    "add_options",
    "environment",
    "fmt_time",
    "parser",
    "single_threaded",
    "timed",
    "warm_up_torch",
]


def timed(fn: Callable[..., Any], repeat: int = 5,
          setup: Callable[[], Any] | None = None) -> tuple[float, Any]:
    """Median wall time of ``fn`` over ``repeat`` runs, and the result of the last run.

    Args:
        fn: the code to time. Called as ``fn()``, or ``fn(setup())`` when ``setup`` is given.
        repeat: number of timed runs (at least 1).
        setup: called before each run, untimed; its result is passed to ``fn``.

    Returns:
        ``(median seconds, result of the last run)``.
    """
    if int(repeat) < 1:
        raise ValueError(f"repeat must be >= 1, got {repeat!r}")
    times, out = [], None
    for _ in range(int(repeat)):
        args = () if setup is None else (setup(),)
        t0 = time.perf_counter()
        out = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


class Stopwatch:
    """Wall time of a ``with`` block (one long measurement)::

        with Stopwatch() as sw:
            run_sweep(...)
        print(sw.seconds)

    ``seconds`` is also readable inside the block (the time elapsed so far). Without ``with``
    the clock runs from construction.
    """

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._stop: float | None = None

    def __enter__(self) -> Stopwatch:
        self._start, self._stop = time.perf_counter(), None
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop = time.perf_counter()

    @property
    def seconds(self) -> float:
        """Seconds from entering the block to leaving it (or to now, inside it)."""
        return (self._stop if self._stop is not None else time.perf_counter()) - self._start


@contextlib.contextmanager
def single_threaded(threads: int = 1) -> Iterator[None]:
    """Limit BLAS / OpenMP thread pools (threadpoolctl) and torch to ``threads`` threads.

    ``threads=0`` keeps the libraries' defaults. The previous torch setting is restored.
    """
    if not threads:
        yield
        return
    import torch
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        with threadpool_limits(limits=int(threads)):
            yield
    finally:
        torch.set_num_threads(before)


QUICK_HELP = "smaller sizes, fewer repeats (a smoke run)"


def add_options(p: argparse.ArgumentParser, quick_help: str = QUICK_HELP
                ) -> argparse.ArgumentParser:
    """Add the common options to ``p`` (e.g. a sub-command's parser) and return it:
    ``--quick`` (``quick_help``), ``--blas-threads N`` (default 1; 0 = the libraries'
    default) and ``--markdown`` (also print the report as a Markdown table at the end)."""
    p.add_argument("--quick", action="store_true", help=quick_help)
    p.add_argument("--blas-threads", type=int, default=1,
                   help="BLAS / torch threads (0 = the libraries' default)")
    p.add_argument("--markdown", action="store_true",
                   help="also print the report as a Markdown table at the end")
    return p


def warm_up_torch() -> None:
    """Pay torch's one-time lazy imports now (the first optimiser imports ``torch._dynamo``,
    seconds), so that no measured row includes them."""
    import torch

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])


def parser(doc: str | None, quick_help: str = QUICK_HELP) -> argparse.ArgumentParser:
    """The benchmarks' common command line (:func:`add_options`), described by the module
    docstring ``doc`` (its first paragraph: the description; the rest: the epilog). Add a
    benchmark's own options to the returned parser."""
    first, _, rest = (doc or "").strip().partition("\n\n")
    p = argparse.ArgumentParser(description=" ".join(first.split()) or None,
                                epilog=rest.strip() or None,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    return add_options(p, quick_help)


def fmt_time(seconds: float) -> str:
    """``12.3 µs``, ``4.56 ms`` or ``7.89 s`` (fixed width)."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:8.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:8.2f} ms"
    return f"{seconds:8.2f} s "


def environment(threads: int | None = None) -> str:
    """One line: Python, numpy and torch versions, CPUs and the thread limit."""
    import torch

    limit = "default" if not threads else str(threads)
    return (f"python {platform.python_version()}, numpy {np.__version__}, torch "
            f"{torch.__version__}, {os.cpu_count()} CPUs, BLAS/torch threads {limit}")


class Report:
    """Rows printed as they are measured, grouped in sections.

    Args:
        name: the benchmark's name (first line of the output).
        args: the parsed :func:`parser` arguments (``quick``, ``blas_threads``, ``markdown``);
            ``None``: a full run with one thread and no Markdown.
        width: width of the row-name column.
    """

    def __init__(self, name: str, args: argparse.Namespace | None = None, width: int = 60):
        self.name = name
        self.quick = bool(getattr(args, "quick", False))
        self.threads = getattr(args, "blas_threads", 1)
        self.markdown = bool(getattr(args, "markdown", False))
        self.width = int(width)
        self.rows: list[tuple[str, str, str, str]] = []  # (section, name, value, note)
        self._section = ""
        self._clock = Stopwatch()
        print(f"{name}: {environment(self.threads)}; {'quick' if self.quick else 'full'} run",
              flush=True)

    def section(self, title: str) -> None:
        """Start a group of rows."""
        self._section = title
        print(f"\n-- {title}", flush=True)

    def value(self, name: str, value: str, note: str = "") -> None:
        """A row with a preformatted value (a count, an accuracy, ...)."""
        self.rows.append((self._section, name, value, note))
        print(f"  {name:<{self.width}} {value:>12}  {note}".rstrip(), flush=True)

    def time(self, name: str, seconds: float, note: str = "") -> float:
        """A row with a time; returns ``seconds``."""
        self.value(name, fmt_time(seconds), note)
        return seconds

    def ratio(self, name: str, numerator: float, denominator: float, note: str = "") -> float:
        """A row with ``numerator / denominator`` (two quantities measured in this run), printed
        as ``12.3×``; returns the ratio."""
        r = float(numerator) / float(denominator) if denominator else float("inf")
        self.value(f"  {name}", f"{r:10.1f}× ", note)
        return r

    def to_markdown(self) -> str:
        """All rows as Markdown: one table per section, under the section's title in bold."""
        out: list[str] = []
        current = None
        for sec, name, value, note in self.rows:
            if sec != current or not out:
                current = sec
                out += ([""] if out else []) + ([f"**{sec}**", ""] if sec else [])
                out += ["| measurement | value | note |", "|---|---|---|"]
            out.append(f"| {name.strip()} | {value.strip()} | {note} |")
        return "\n".join(out)

    def finish(self, code: int = 0) -> int:
        """Print the total time (and the Markdown table with ``--markdown``); returns
        ``code``, the benchmark's exit code."""
        if self.markdown and self.rows:
            print("\n" + self.to_markdown())
        print(f"\n{self.name}: total {self._clock.seconds:.1f} s", flush=True)
        return code
