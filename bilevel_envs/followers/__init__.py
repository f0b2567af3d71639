"""Followers: exact, k-step and learning answers of the follower to the leader's θ.

* Exact best responses: :class:`TabularSoftFollower` (soft value iteration / Newton),
  :class:`~bilevel_envs.followers.maxent_lqr.MaxEntLQRFollower` (DARE),
  :class:`~bilevel_envs.followers.soft_q_iteration.SoftQIterationFollower` (toy game),
  :class:`~bilevel_envs.followers.maxent_lqr_game.MaxEntLQRGameFollower` (LQR game).
* Sub-optimal k-step followers (the authors' journal extension): :class:`KStepSoftFollower`,
  :class:`KStepSoftQIterationFollower`, :class:`KStepMaxEntLQRFollower`.
* Learning followers: :class:`SoftQLearning` (tabular soft Q-learning),
  :class:`GameSoftQLearning` (its form for the follower of a tabular game), :class:`SoftDQN`
  (HPGD's factorised soft DQN, also for continuous states) and
  :class:`SB3Follower` (any Stable-Baselines3 model, :func:`make_sb3_follower`).
* :func:`make_follower` builds any of them from a CLI spec (``exact``, ``kstep:K[:carry|reset]``,
  ``soft-q-learning[:k=v,...]``, ``soft-dqn[:k=v,...]``, ``sb3:ALGO[:k=v,...]``).
* :func:`soft_policy_evaluation` / :func:`follower_optimality_gap` (and the game versions) give
  the exact soft value and sub-optimality of any follower policy.

The protocol every follower follows is :mod:`bilevel_envs.followers.base`.
"""

from bilevel_envs.followers.base import (
    Follower,
    NotPublishedError,
    published,
    require_published,
)
from bilevel_envs.followers.game_soft_q_learning import GameSoftQLearning
from bilevel_envs.followers.kstep import (
    KStepMaxEntLQRFollower,
    KStepSoftFollower,
    KStepSoftQIterationFollower,
)
from bilevel_envs.followers.sb3 import FollowerEnv, SB3Follower, make_sb3_follower
from bilevel_envs.followers.soft_q_iteration import (
    GameFollowerGap,
    game_follower_optimality_gap,
    game_soft_policy_evaluation,
)
from bilevel_envs.followers.soft_dqn import SoftDQN
from bilevel_envs.followers.soft_q_learning import SoftQLearning
from bilevel_envs.followers.soft_value_iteration import (
    FollowerGap,
    SoftVIResult,
    TabularSoftFollower,
    follower_optimality_gap,
    soft_policy_evaluation,
    soft_policy_iteration,
    soft_value,
    soft_value_iteration,
)
from bilevel_envs.followers.specs import FollowerSpec, make_follower, parse_follower_spec

__all__ = [
    "Follower", "FollowerEnv", "FollowerGap", "FollowerSpec", "GameFollowerGap",
    "GameSoftQLearning",
    "KStepMaxEntLQRFollower", "KStepSoftFollower", "KStepSoftQIterationFollower",
    "NotPublishedError", "SB3Follower", "SoftDQN", "SoftQLearning", "SoftVIResult",
    "TabularSoftFollower",
    "follower_optimality_gap", "game_follower_optimality_gap", "game_soft_policy_evaluation",
    "make_follower", "make_sb3_follower", "parse_follower_spec", "published",
    "require_published", "soft_policy_evaluation", "soft_policy_iteration", "soft_value",
    "soft_value_iteration",
]
