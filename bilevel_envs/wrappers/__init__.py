"""Wrappers: the follower's best response, for configurable MDPs and leader-follower games.

* :class:`BestResponse` wraps a configurable MDP (a Gymnasium env of :mod:`bilevel_envs.envs`).
* :class:`GameBestResponse` turns a PettingZoo leader-follower game of :mod:`bilevel_envs.games`
  into a single-agent Gymnasium env for the leader.
* :func:`best_response` picks the right one for any problem of the suite.
"""

from __future__ import annotations

from typing import Any

from pettingzoo.utils.env import AECEnv, ParallelEnv

from bilevel_envs.wrappers.best_response import BestResponse
from bilevel_envs.wrappers.game_best_response import GameBatch, GameBestResponse

__all__ = ["BestResponse", "GameBatch", "GameBestResponse", "best_response"]


def best_response(env: Any, beta: float, **kwargs: Any) -> BestResponse | GameBestResponse:
    """The follower's best response to the leader of ``env``, whatever kind of problem it is.

    Args:
        env: a configurable MDP (``gym.make("BiLevel/FourRooms-v0")``) or a leader-follower
            game (``toy_game_v0.env()``, AEC or parallel).
        beta: the follower's entropy temperature β > 0.
        **kwargs: options of :class:`BestResponse` or :class:`GameBestResponse`.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.games import toy_game_v0
        >>> type(best_response(gym.make("BiLevel/FourRooms-v0"), beta=0.005)).__name__
        'BestResponse'
        >>> type(best_response(toy_game_v0.env(), beta=0.05)).__name__
        'GameBestResponse'
    """
    if isinstance(env, (AECEnv, ParallelEnv)):
        return GameBestResponse(env, beta, **kwargs)
    return BestResponse(env, beta, **kwargs)
