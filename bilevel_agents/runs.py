"""A run folder: one specification, one owner, an append-only log, a checkpoint, a summary.

The rules that make results trustworthy live here, once, for the trainer, sweeps and the CLI:

* **Identity.** ``config.json`` holds the run's whole specification (env id and kwargs, β, the
  follower, the leader and all its settings, iterations, seed). A folder whose stored
  specification differs from the one asked for is refused (:class:`RunMismatch`), never
  resumed or read back as if it were the same run.
* **Ownership.** A run folder is locked (``fcntl.flock`` on ``.lock``, released by the OS if the
  process dies) while a process trains in it; a second process is refused (:class:`RunBusy`).
* **Append-only log.** ``metrics.csv`` is only appended to; on resume it is first cut back to
  the checkpoint's iteration (atomically), and it is flushed to disk before every checkpoint,
  so after any sequence of kills no iteration is lost or duplicated.
* **Checkpoints** are plain ``.npz`` files (:mod:`bilevel_agents.checkpoint`).
* **Summary.** ``summary.json`` is written only when a run has finished all its iterations.
"""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

from bilevel_agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint

__all__ = ["CheckpointError", "RunBusy", "RunFolder", "RunMismatch", "jsonable", "summarize"]

CONFIG, LOG, CHECKPOINT, SUMMARY, LOCK = ("config.json", "metrics.csv", "checkpoint.npz",
                                          "summary.json", ".lock")


class RunMismatch(ValueError):
    """The folder holds a run of another specification."""


class RunBusy(RuntimeError):
    """Another process is training in the folder."""


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values (callables by qualified name, tuples as lists)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if callable(obj):
        return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        return jsonable(obj.tolist())  # numpy arrays and scalars, torch tensors
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    return str(obj)


def _differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    keys = sorted(set(stored) | set(wanted))
    return [f"{k}={stored.get(k, '<unset>')!r} (folder) vs {wanted.get(k, '<unset>')!r} (now)"
            for k in keys if stored.get(k, "<unset>") != wanted.get(k, "<unset>")]


class RunFolder:
    """The files of one run (see the module docstring). Use as a context manager to own it.

    Args:
        path: the folder (created if needed).
        config: the run's specification (made JSON-plain with :func:`jsonable`).
    """

    def __init__(self, path: str | os.PathLike, config: dict[str, Any]):
        self.path = Path(path)
        self.config = jsonable(config)
        self._lock_fh = None
        self._log = None
        self._writer = None
        self._fields: list[str] | None = None

    # ------------------------------------------------------------------ ownership
    def __enter__(self) -> "RunFolder":
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OSError(f"cannot create the run folder {self.path}: {err.strerror}") from None
        self._lock_fh = open(self.path / LOCK, "a")
        try:
            import fcntl

            fcntl.flock(self._lock_fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_fh.close()
            self._lock_fh = None
            raise RunBusy(f"run folder {self.path} is in use by another process") from None
        except ImportError:  # no flock on this platform: ownership is not enforced
            pass
        self.check_identity()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close_log()
        if self._lock_fh is not None:
            self._lock_fh.close()  # releases the flock
            self._lock_fh = None

    # ------------------------------------------------------------------ identity
    def stored_config(self) -> dict[str, Any] | None:
        """The specification stored in the folder, if any."""
        path = self.path / CONFIG
        if not path.exists():
            return None
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise RunMismatch(f"{path} is damaged ({err}); use another folder") from None

    def check_identity(self) -> None:
        """Refuse a folder of another specification; write the specification if new."""
        stored = self.stored_config()
        if stored is None:
            if (self.path / CHECKPOINT).exists() or (self.path / LOG).exists():
                raise RunMismatch(f"run folder {self.path} holds results without a "
                                  f"{CONFIG}; use another folder")
            if (self.path / "checkpoint.pkl").exists():
                raise RunMismatch(f"run folder {self.path} holds a pickle checkpoint of an "
                                  "earlier release, which is not opened; use another folder")
            tmp = self.path / (CONFIG + ".tmp")
            tmp.write_text(json.dumps(self.config, indent=2))
            os.replace(tmp, self.path / CONFIG)
            return
        diff = _differences(stored, self.config)
        if diff:
            raise RunMismatch(f"run folder {self.path} holds a run of another specification ("
                              + "; ".join(diff[:4]) + ("; ..." if len(diff) > 4 else "")
                              + "); use another folder")

    # ------------------------------------------------------------------ checkpoint
    def load_checkpoint(self) -> dict[str, Any] | None:
        """The stored checkpoint, or ``None``."""
        path = self.path / CHECKPOINT
        return load_checkpoint(path) if path.exists() else None

    def restore(self, leader: Any) -> None:
        """Load the stored checkpoint, if any, into ``leader``; a checkpoint the leader refuses
        (e.g. one saved under another sampler revision) is a :class:`RunMismatch`."""
        state = self.load_checkpoint()
        if state is None:
            return
        try:
            leader.load_state_dict(state)
        except ValueError as err:
            raise RunMismatch(f"run folder {self.path} cannot be resumed: {err}") from None

    def save_checkpoint(self, state: dict[str, Any]) -> None:
        """Flush the log to disk, then write the checkpoint atomically (in that order, so the
        log always holds at least the checkpoint's iterations)."""
        if self._log is not None:
            self._log.flush()
            os.fsync(self._log.fileno())
        save_checkpoint(self.path / CHECKPOINT, state)

    # ------------------------------------------------------------------ log
    def read_log(self, upto: int | None = None) -> list[dict[str, float]]:
        """The logged rows (with ``iteration < upto``).

        Raises:
            RunMismatch: a damaged log (a row that is not numbers).
        """
        path = self.path / LOG
        if not path.exists():
            return []
        rows = []
        with open(path, newline="") as fh:
            for i, row in enumerate(csv.DictReader(fh)):
                try:
                    parsed = {k: float(v) for k, v in row.items() if v not in ("", None)}
                    parsed["iteration"]  # noqa: B018  (every row has one)
                except (ValueError, KeyError, TypeError):
                    raise RunMismatch(f"{path} is damaged at row {i + 2}") from None
                rows.append(parsed)
        return rows if upto is None else [r for r in rows if r["iteration"] < upto]

    def open_log(self, upto: int) -> list[dict[str, float]]:
        """Cut the log back to ``iteration < upto`` (atomically) and open it for appending;
        returns the kept rows."""
        path = self.path / LOG
        rows = self.read_log(upto)
        if path.exists():
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), None)
            tmp = path.with_name(LOG + ".tmp")
            with open(tmp, "w", newline="") as fh:
                if header:
                    writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(_format(r) for r in rows)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            self._fields = header or None
        self._log = open(path, "a", newline="")
        if self._fields is not None:
            self._writer = csv.DictWriter(self._log, fieldnames=self._fields,
                                          extrasaction="ignore")
        return rows

    def append(self, row: dict[str, float]) -> None:
        """Append one row (the first row of a new log fixes the columns)."""
        if self._writer is None:
            self._fields = list(row)
            self._writer = csv.DictWriter(self._log, fieldnames=self._fields,
                                          extrasaction="ignore")
            self._writer.writeheader()
        self._writer.writerow(_format(row))

    def close_log(self) -> None:
        """Flush and close the log."""
        if self._log is not None:
            self._log.close()
            self._log = self._writer = None

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any] | None:
        """The summary of a finished run, or ``None``."""
        path = self.path / SUMMARY
        return json.loads(path.read_text()) if path.exists() else None

    def write_summary(self, summary: dict[str, Any]) -> None:
        """Write ``summary.json`` atomically (only for a finished run)."""
        tmp = self.path / (SUMMARY + ".tmp")
        tmp.write_text(json.dumps(jsonable(summary), indent=1))
        os.replace(tmp, self.path / SUMMARY)


def _format(row: dict[str, float]) -> dict[str, str]:
    """Floats with full precision (``repr``), so a resumed log equals an uninterrupted one."""
    return {k: repr(float(v)) for k, v in row.items()}


def summarize(history: Iterable[dict[str, float]], tail: int) -> dict[str, float]:
    """Start, final and last-``tail`` mean objective of one run."""
    obj = [r.get("objective", math.nan) for r in history]
    finite = [v for v in obj if math.isfinite(v)]
    out: dict[str, float] = {"iterations": len(obj)}
    if finite:
        out.update(start_objective=finite[0], final_objective=finite[-1],
                   tail_mean_objective=sum(finite[-tail:]) / len(finite[-tail:]))
    return out
