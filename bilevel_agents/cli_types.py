"""Command-line argument types: numbers in a range, comma lists, seed lists, one-line errors.

Shared by ``bilevel`` and its sub-commands (``bilevel reproduce``), so that every command
parses ``--seeds`` the same way and reports a bad value in one line with exit code 2.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, NoReturn

__all__ = ["Parser", "number", "number_list", "parse_seeds", "seeds"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``bilevel train: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"2"`` → list of non-negative ints (the same in every command).

    Raises:
        ValueError: anything else.
    """
    seeds: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part[1:]:
                lo, hi = part.split("-", 1)
                if int(hi) < int(lo):
                    raise ValueError
                seeds.extend(range(int(lo), int(hi) + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds must look like '0-9' or '0,3,5', got {text!r}") from None
    if not seeds or min(seeds) < 0:
        raise ValueError(f"--seeds must be non-negative integers, got {text!r}")
    return seeds


def number(kind: type, *, low: float | None = None, high: float | None = None,
            low_open: bool = False) -> Callable[[str], Any]:
    """An argparse ``type``: a number of ``kind`` in a range, with a one-line message."""
    rng = (f" in {'(' if low_open else '['}{low}, {high if high is not None else 'inf'}"
           f"{']' if high is not None else ')'}" if low is not None else "")
    name = "an integer" if kind is int else "a number"

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {name}{rng}, got {text!r}") from None
        if kind is float and value != value:  # NaN
            raise argparse.ArgumentTypeError(f"expected {name}{rng}, got {text!r}")
        if (low is not None and (value < low or (low_open and value == low))) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"expected {name}{rng}, got {text!r}")
        return value

    parse.__name__ = kind.__name__
    return parse


def number_list(kind: type, **bounds: Any) -> Callable[[str], list[Any]]:
    """An argparse ``type``: a comma list of numbers (a grid axis)."""
    one = number(kind, **bounds)

    def parse(text: str) -> list[Any]:
        return [one(t) for t in text.split(",")]

    parse.__name__ = f"{kind.__name__} list"
    return parse


def seeds(text: str) -> list[int]:
    """An argparse ``type``: :func:`parse_seeds` with argparse's error."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--seeds ", "")) from None
