"""Command-line argument types: numbers in a range, comma lists, seed lists, one-line errors.

Shared by ``bilevel`` and its sub-commands (``bilevel reproduce``), so that every command
parses ``--seeds`` the same way and reports a bad value in one line with exit code 2.
"""

from __future__ import annotations

import argparse
import operator
from typing import Any, Callable, NoReturn

__all__ = ["Parser", "apply_config", "number", "number_list", "parse_seeds", "seed_list", "seeds"]


class Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``bilevel train: error: ...``) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``<prog>: error: <message>`` on one line and exit with code 2."""
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


def seed_list(seeds: Any) -> list[int]:
    """Seeds given as a count ``n`` (seeds ``0 … n−1``) or as the seeds themselves."""
    try:
        count = operator.index(seeds)  # an int (numpy's too)
    except TypeError:
        return [int(s) for s in seeds]
    return list(range(count))


def seeds(text: str) -> list[int]:
    """An argparse ``type``: :func:`parse_seeds` with argparse's error."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err).replace("--seeds ", "")) from None


def _flat(message: str) -> str:
    return " ".join(str(message).split())


def _config_value(action: argparse.Action, key: str, value: Any) -> Any:
    """A value of a ``--config`` file as the flag ``action`` would have parsed it.

    Raises:
        ValueError: a value the flag does not take (the message names the key).
    """
    flag = action.option_strings[0] if action.option_strings else action.dest
    if action.nargs == 0:  # a switch: store_true / --x/--no-x
        if not isinstance(value, bool):
            raise ValueError(f"{key}: {flag} is a switch, expected true or false, got {value!r}")
        return value
    if action.nargs in ("*", "+"):  # KEY=VALUE lists: a mapping or a list of "k=v" strings
        if isinstance(value, dict):
            return {str(k): v for k, v in value.items()}
        if isinstance(value, str):
            value = value.split()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"{key}: expected a mapping or a list of KEY=VALUE strings, got "
                             f"{value!r}")
        return value
    if isinstance(value, bool) or value is None or isinstance(value, dict):
        raise ValueError(f"{key}: {flag} does not take {value!r}")
    if isinstance(value, (list, tuple)):  # a grid axis or a seed list
        text = ",".join(str(v) for v in value)
    else:
        text = str(value)
    if action.type is not None:
        try:
            parsed = action.type(text)
        except (argparse.ArgumentTypeError, ValueError) as err:
            raise ValueError(f"{key}: {_flat(err)}") from None
    else:
        parsed = text
    if action.choices is not None and parsed not in action.choices:
        raise ValueError(f"{key}: {parsed!r} is not one of {list(action.choices)}")
    return parsed


def apply_config(parser: argparse.ArgumentParser, path: str, *, skip: tuple[str, ...] = (
        "help", "config")) -> dict[str, Any]:
    """Read a YAML file of flag values and make them ``parser``'s defaults.

    As rl-zoo's hyperparameter files: a mapping whose keys are the parser's flag names, spelt
    with ``_`` or ``-`` (``batch_size`` or ``batch-size``); values are what the flag takes
    (``lr: [0.1, 0.05]`` or ``lr: 0.1,0.05``; ``seeds: 0-9``; ``env_kwargs: {reward: 2}``;
    switches ``true``/``false``). Flags given on the command line override the file, since
    the file's values are only defaults.

    Args:
        parser: the (sub-)parser whose flags the file sets.
        path: the YAML file.
        skip: destinations a file may not set.

    Returns:
        The defaults set, by destination.

    Raises:
        SystemExit: (code 2, one line, through ``parser.error``) an unreadable file, invalid
            YAML, a file that is not a mapping, an unknown key or a bad value.
    """
    import yaml

    try:
        with open(path) as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        parser.error(f"--config {path}: cannot read it ({err.strerror or err})")
    except yaml.YAMLError as err:
        parser.error(f"--config {path}: not valid YAML ({_flat(err)})")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        parser.error(f"--config {path}: expected a mapping of flag names to values, got "
                     f"{type(data).__name__}")
    actions = {a.dest: a for a in parser._actions if a.dest not in skip and a.option_strings}
    values: dict[str, Any] = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            parser.error(f"--config {path}: unknown key {key!r}; the keys are the flags: "
                         + ", ".join(sorted(actions)))
        try:
            values[dest] = _config_value(actions[dest], str(key), value)
        except ValueError as err:
            parser.error(f"--config {path}: {err}")
    parser.set_defaults(**values)
    return values
