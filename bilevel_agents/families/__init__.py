"""Problem families: what a method needs that depends on the kind of problem.

=============================  =========================================================
family                         problems (by the type of the unwrapped problem)
=============================  =========================================================
:class:`TabularFamily`         :class:`~bilevel_envs.core.TabularConfigurableEnv` (Four-Rooms)
:class:`ContinuousFamily`      other :class:`~bilevel_envs.core.ConfigurableEnv` (building)
:class:`TabularGameFamily`     leader-follower games with discrete leader actions (toy game)
:class:`GaussianGameFamily`    games with a linear-Gaussian leader (LQR game)
=============================  =========================================================

:func:`family_for` picks the family of a best response; a new kind of problem registers its
own with :func:`register_family`.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym

from bilevel_agents.families.base import Family
from bilevel_agents.families.configurable import ConfigurableFamily, ConfigurableOptions
from bilevel_agents.families.continuous import ContinuousFamily, ContinuousOptions
from bilevel_agents.families.game import (
    GameFamily,
    GameOptions,
    GaussianGameFamily,
    TabularGameFamily,
)
from bilevel_agents.families.tabular import TabularFamily, TabularOptions
from bilevel_envs.core import ConfigurableEnv, TabularConfigurableEnv
from bilevel_envs.games.base import LeaderFollowerGame

__all__ = [
    "ConfigurableFamily",
    "ConfigurableOptions",
    "ContinuousFamily",
    "ContinuousOptions",
    "Family",
    "GameFamily",
    "GameOptions",
    "GaussianGameFamily",
    "TabularFamily",
    "TabularGameFamily",
    "TabularOptions",
    "family_for",
    "register_family",
]


@functools.singledispatch
def _family_of(problem: Any) -> type[Family]:
    raise ValueError(f"no leader family for {type(problem).__name__}: wrap a bilevel_envs "
                     f"problem in BestResponse / GameBestResponse, or register a family")


@_family_of.register
def _(problem: ConfigurableEnv) -> type[Family]:
    return ContinuousFamily


@_family_of.register
def _(problem: TabularConfigurableEnv) -> type[Family]:
    return TabularFamily


@_family_of.register
def _(problem: LeaderFollowerGame) -> type[Family]:
    if isinstance(problem.action_space("leader"), gym.spaces.Discrete):
        return TabularGameFamily
    return GaussianGameFamily


def family_for(br: Any) -> type[Family]:
    """The family class of a best-response wrapper's problem."""
    problem = getattr(br, "problem", None)
    if problem is None:
        raise ValueError(f"expected a best-response wrapper (BestResponse or GameBestResponse), "
                         f"got {type(br).__name__}")
    return _family_of(problem)


def register_family(problem_type: type, family: type[Family]) -> None:
    """Use ``family`` for problems of ``problem_type`` (and its subclasses)."""
    _family_of.register(problem_type, lambda problem: family)
