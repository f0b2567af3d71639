"""bilevel_agents: leaders for decentralized bi-level RL (BC-HG and baselines).

One class per method, for every problem family where it is defined, all trained by one loop::

    from bilevel_agents import BCHG
    leader = BCHG(br, batch_size=100, lr=0.1, seed=0)     # Four-Rooms, building or a game
    history = leader.learn(10_000)

The parts (``docs/developer.md`` draws the map): :mod:`~bilevel_agents.leader` (θ and the one
step), :mod:`~bilevel_agents.leaders` (the methods), :mod:`~bilevel_agents.families` (what
differs per kind of problem), :mod:`~bilevel_agents.estimators` (the equations),
:mod:`~bilevel_agents.critics`, :mod:`~bilevel_agents.exact` (ground truth),
:mod:`~bilevel_agents.trainer`, :mod:`~bilevel_agents.experiments` (sweeps, tables, plots) and
:mod:`~bilevel_agents.cli`. ``LEADERS`` maps the CLI names to the classes.
"""

from __future__ import annotations

import importlib
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the public names, imported on first use (PEP 562, ``__getattr__`` below)
    from bilevel_agents.critics import Critic, ExactCritic, MonteCarloCritic, SarsaCritic
    from bilevel_agents.leader import Leader, clip_by_global_norm
    from bilevel_agents.leaders import (
        AMD,
        BCHG,
        HPGD,
        LEADERS,
        BiAC,
        ExactAscent,
        NaivePGD,
        SoBiRL,
        ZeroOrder,
        get_leader,
    )
    from bilevel_agents.trainer import train

__all__ = [
    "AMD",
    "BCHG",
    "HPGD",
    "LEADERS",
    "BiAC",
    "Critic",
    "ExactAscent",
    "ExactCritic",
    "Leader",
    "MonteCarloCritic",
    "NaivePGD",
    "SarsaCritic",
    "SoBiRL",
    "ZeroOrder",
    "clip_by_global_norm",
    "get_leader",
    "train",
]

# Public name -> the module that defines it. Importing ``bilevel_agents`` (e.g. for the CLI's
# ``--help``) imports none of them, hence not torch; the first access imports the module.
_LAZY = {
    **dict.fromkeys(("Critic", "ExactCritic", "MonteCarloCritic", "SarsaCritic"),
                    "bilevel_agents.critics"),
    **dict.fromkeys(("Leader", "clip_by_global_norm"), "bilevel_agents.leader"),
    **dict.fromkeys(("AMD", "BCHG", "HPGD", "LEADERS", "BiAC", "ExactAscent", "NaivePGD",
                     "SoBiRL", "ZeroOrder", "get_leader"), "bilevel_agents.leaders"),
    "train": "bilevel_agents.trainer",
}

# Names of the previous release: one class per method now serves every problem family.
_DEPRECATED = {
    "GameBCHG": "BCHG", "ContinuousBCHG": "BCHG", "GameNaivePGD": "NaivePGD",
    "ContinuousNaivePGD": "NaivePGD", "GameBiAC": "BiAC", "ContinuousHPGD": "HPGD",
    "GameLeader": "Leader", "ConfigurableLeader": "Leader",
    "HPGDMonteCarlo": "HPGD(critic='mc')", "HPGDSarsa": "HPGD(critic='sarsa')",
    "HPGDOracle": "HPGD(oracle_batch_size=10_000)",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later accesses are plain attribute look-ups
        return value
    if name not in _DEPRECATED:
        raise AttributeError(f"module 'bilevel_agents' has no attribute {name!r}")
    warnings.warn(f"bilevel_agents.{name} is deprecated; use {_DEPRECATED[name]}",
                  DeprecationWarning, stacklevel=2)
    from bilevel_agents.leaders import hpgd

    if name in ("HPGDMonteCarlo", "HPGDSarsa", "HPGDOracle"):
        return getattr(hpgd, name)
    if name == "ContinuousHPGD":
        return _continuous_hpgd
    return __getattr__(_DEPRECATED[name])


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def _continuous_hpgd(br: Any, *, leader_value: str = "td", **kwargs: Any) -> HPGD:
    """The previous ``ContinuousHPGD``: ``leader_value`` ``"td"`` → ``"q"``, ``"mc"`` →
    ``"return"``."""
    from bilevel_agents.leaders import HPGD

    return HPGD(br, leader_value={"td": "q", "mc": "return"}.get(leader_value, leader_value),
                **kwargs)
