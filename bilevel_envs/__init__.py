"""bilevel_envs: configurable MDPs and leader-follower Markov games with exact best responses.

Importing the package registers the Gymnasium ids::

    import gymnasium as gym, bilevel_envs
    env = gym.make("BiLevel/FourRooms-v0")
"""

import gymnasium

from bilevel_envs.core import Batch, ConfigurableEnv, TabularConfigurableEnv, TabularModel

__all__ = ["Batch", "ConfigurableEnv", "TabularConfigurableEnv", "TabularModel"]
__version__ = "0.1.0"

_ENVS = {
    "BiLevel/FourRooms-v0": ("bilevel_envs.envs.four_rooms:FourRoomsEnv", 200),
    "BiLevel/BuildingThermal-v0": ("bilevel_envs.envs.building_thermal:BuildingThermalEnv", 100),
}

for _id, (_entry, _steps) in _ENVS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=_steps)
