"""Configurable MDPs, one problem per module."""

from bilevel_envs.envs.four_rooms import FourRoomsEnv
from bilevel_envs.envs.tax_design import TaxDesignEnv, TaxDesignTabularEnv

__all__ = ["FourRoomsEnv", "TaxDesignEnv", "TaxDesignTabularEnv"]
