"""Which best-response wrapper a given environment needs (by type, never by name)."""

from __future__ import annotations

from typing import Any


def game_best_response_class(env: Any) -> type | None:
    """The game wrapper class if ``env`` is a PettingZoo leader-follower game, else ``None``."""
    from pettingzoo.utils.env import AECEnv, ParallelEnv

    if isinstance(env, (AECEnv, ParallelEnv)):
        from bilevel_envs.wrappers.game_best_response import GameBestResponse

        return GameBestResponse
    return None
