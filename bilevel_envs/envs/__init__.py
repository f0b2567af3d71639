"""Configurable MDPs, one problem per module."""

from bilevel_envs.envs.four_rooms import FourRoomsEnv

__all__ = ["FourRoomsEnv"]
