"""Two-player leader-follower Markov games as PettingZoo AEC envs (paper §2 eq. 4, §5.3–5.4).

``toy_game_v0`` (3-state toy game, App. C.3) and ``lqr_game_v0`` (bi-level LQR, App. C.6),
each with ``env()``, ``raw_env()`` and ``parallel_env()``. ``GameBestResponse(game, beta=...)``
turns either into a single-agent Gymnasium env for the leader.
"""

from bilevel_envs.games import lqr_game_v0, toy_game_v0

__all__ = ["lqr_game_v0", "toy_game_v0"]
