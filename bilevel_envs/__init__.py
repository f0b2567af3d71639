"""bilevel_envs: configurable MDPs and leader-follower Markov games with exact best responses.

Importing the package registers the Gymnasium ids::

    import gymnasium as gym, bilevel_envs
    env = gym.make("BiLevel/FourRooms-v0")
"""

import gymnasium

from bilevel_envs.core import (Batch, ConfigurableEnv, ContextualMixin, TabularConfigurableEnv,
                               TabularModel)

__all__ = ["Batch", "ConfigurableEnv", "ContextualMixin", "TabularConfigurableEnv", "TabularModel"]
__version__ = "0.1.0"

#: id -> (entry point, max_episode_steps[, kwargs]): variants are kwargs of one class
_ENVS = {
    "BiLevel/FourRooms-v0": ("bilevel_envs.envs.four_rooms:FourRoomsEnv", 200),
    "BiLevel/ContextualFourRooms-v0": (
        "bilevel_envs.envs.four_rooms:FourRoomsEnv", 200,
        # HPGD's task (Thoma et al. 2024): two goal contexts, λ = 1, its solver matrix
        {"goals": [[1, 9], [11, 11]], "penalty_weight": 1.0, "slip_prob": 0.44}),
    "BiLevel/BuildingThermal-v0": ("bilevel_envs.envs.building_thermal:BuildingThermalEnv", 100),
    "BiLevel/TaxDesign-v0": ("bilevel_envs.envs.tax_design:TaxDesignEnv", 200),
    "BiLevel/TaxDesignTabular-v0": ("bilevel_envs.envs.tax_design:TaxDesignTabularEnv", 200),
}

for _id, (_entry, _steps, *_kwargs) in _ENVS.items():
    if _id not in gymnasium.registry:
        gymnasium.register(id=_id, entry_point=_entry, max_episode_steps=_steps,
                           kwargs=dict(_kwargs[0]) if _kwargs else {})
