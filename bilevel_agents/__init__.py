"""bilevel_agents: leaders for decentralized bi-level RL (BC-HG and baselines).

Every leader subclasses :class:`Leader` and trains through :func:`train`::

    from bilevel_agents import BCHG
    leader = BCHG(br, batch_size=100, lr=0.1, seed=0)
    history = leader.learn(10_000)

``LEADERS`` maps the CLI names to the classes (add your own leader to it to use the CLI).
"""

from bilevel_agents.base import Leader, clip_by_global_norm
from bilevel_agents.bchg import BCHG
from bilevel_agents.configurable import ConfigurableLeader
from bilevel_agents.continuous import ContinuousBCHG, ContinuousHPGD, ContinuousNaivePGD
from bilevel_agents.critics import Critic, ExactCritic, MonteCarloCritic, SarsaCritic
from bilevel_agents.exact_ascent import ExactAscent
from bilevel_agents.game_leaders import GameBCHG, GameBiAC, GameLeader, GameNaivePGD
from bilevel_agents.hpgd import HPGD, HPGDMonteCarlo, HPGDOracle, HPGDSarsa
from bilevel_agents.naive_pgd import NaivePGD
from bilevel_agents.sobirl import SoBiRL
from bilevel_agents.trainer import train

LEADERS: dict[str, type[Leader]] = {cls.name: cls for cls in (BCHG, NaivePGD, ExactAscent)}
LEADERS.update({cls.name: cls for cls in (HPGDMonteCarlo, HPGDSarsa, HPGDOracle, SoBiRL)})
LEADERS.update({cls.name: cls for cls in (GameBCHG, GameNaivePGD, GameBiAC)})
LEADERS.update({cls.name: cls for cls in (ContinuousBCHG, ContinuousNaivePGD, ContinuousHPGD)})

__all__ = [
    "BCHG",
    "LEADERS",
    "ConfigurableLeader",
    "ContinuousBCHG",
    "ContinuousHPGD",
    "ContinuousNaivePGD",
    "Critic",
    "ExactAscent",
    "ExactCritic",
    "GameBCHG",
    "GameBiAC",
    "GameLeader",
    "GameNaivePGD",
    "HPGD",
    "HPGDMonteCarlo",
    "HPGDOracle",
    "HPGDSarsa",
    "Leader",
    "MonteCarloCritic",
    "NaivePGD",
    "SarsaCritic",
    "SoBiRL",
    "clip_by_global_norm",
    "train",
]
