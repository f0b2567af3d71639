"""Wrappers: the follower's best response (configurable MDPs and leader-follower games)."""

from bilevel_envs.wrappers.best_response import BestResponse

__all__ = ["BestResponse"]
