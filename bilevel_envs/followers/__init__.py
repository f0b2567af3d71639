"""Exact (or k-step) entropy-regularised best responses of the follower."""

from bilevel_envs.followers.base import Follower
from bilevel_envs.followers.soft_value_iteration import (
    SoftVIResult,
    TabularSoftFollower,
    soft_value,
    soft_value_iteration,
)

__all__ = ["Follower", "SoftVIResult", "TabularSoftFollower", "soft_value", "soft_value_iteration"]
