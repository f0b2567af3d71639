"""The methods: one class per method, for every problem family where it is defined.

=================  ===========================================  ==============================
name (CLI)         class                                        defined on
=================  ===========================================  ==============================
``bchg``           :class:`BCHG` (paper Alg. 1)                 every family
``naive_pgd``      :class:`NaivePGD` (App. C.1)                 every family
``hpgd``           :class:`HPGD` (Thoma et al. 2024)            configurable MDPs
``hpgd_mc``        HPGD with ``critic="mc"``                    tabular configurable MDPs
``hpgd_sa``        HPGD with ``critic="sarsa"``                 tabular configurable MDPs
``hpgd_oracle``    HPGD with ``oracle_batch_size=10_000``       tabular configurable MDPs
``sobirl``         :class:`SoBiRL` (Yang et al. 2025)           tabular configurable MDPs
``biac``           :class:`BiAC` (App. C.1)                     tabular Markov games
``bchg_model``     :class:`ModelBCHG` (plug-in model critic)    linear-Gaussian games (LQR)
``exact``          :class:`ExactAscent`                         problems with an exact model
``amd``            :class:`AMD` (Chen et al. 2022, as HPGD)     tabular configurable MDPs
``zero_order``     :class:`ZeroOrder` (HPGD's baseline)         problems with an exact model
=================  ===========================================  ==============================

:data:`LEADERS` maps the CLI names to the classes (add your own leader to it to use the CLI);
:func:`get_leader` also accepts the names of earlier releases (``game-bchg``,
``bchg_continuous``, ...) and either ``-`` or ``_`` in a name.
"""

from __future__ import annotations

from bilevel_agents.leader import Leader
from bilevel_agents.leaders.amd import AMD
from bilevel_agents.leaders.bchg import BCHG
from bilevel_agents.leaders.bchg_model import ModelBCHG
from bilevel_agents.leaders.biac import BiAC
from bilevel_agents.leaders.exact_ascent import ExactAscent
from bilevel_agents.leaders.hpgd import HPGD, HPGDMonteCarlo, HPGDOracle, HPGDSarsa
from bilevel_agents.leaders.naive_pgd import NaivePGD
from bilevel_agents.leaders.sobirl import SoBiRL
from bilevel_agents.leaders.zero_order import ZeroOrder

__all__ = ["ALIASES", "AMD", "BCHG", "HPGD", "LEADERS", "BiAC", "ExactAscent", "ModelBCHG",
           "NaivePGD", "SoBiRL", "ZeroOrder", "get_leader"]

#: CLI name → leader class (add your own leader here to train it with ``bilevel train``)
LEADERS: dict[str, type[Leader]] = {cls.name: cls for cls in (
    BCHG, NaivePGD, HPGD, HPGDMonteCarlo, HPGDSarsa, HPGDOracle, SoBiRL, BiAC, ExactAscent,
    AMD, ZeroOrder, ModelBCHG)}

#: names of earlier releases → current names
ALIASES: dict[str, str] = {
    "game_bchg": "bchg", "bchg_continuous": "bchg",
    "game_naive": "naive_pgd", "naive_pgd_continuous": "naive_pgd", "naive": "naive_pgd",
    "game_biac": "biac", "hpgd_continuous": "hpgd",
}


def get_leader(name: str) -> type[Leader]:
    """The leader class registered as ``name`` (``-`` and ``_`` are interchangeable).

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    key = str(name).replace("-", "_")
    key = ALIASES.get(key, key)
    for registered, cls in LEADERS.items():
        if registered.replace("-", "_") == key:
            return cls
    raise ValueError(f"unknown leader {name!r}; known: {sorted(LEADERS)}")
