"""Exact leader objective and exact hypergradient: the ground truth every estimator is tested on.

``leader_objective(br, θ)`` and ``hypergradient(br, θ)`` (:mod:`~bilevel_agents.exact.dispatch`)
dispatch on the problem's type to one module per problem family:

* :mod:`~bilevel_agents.exact.tabular`: tabular configurable MDPs (implicit differentiation of
  the soft Bellman fixed point);
* :mod:`~bilevel_agents.exact.building`: building thermal control (Gaussian state propagation,
  autograd through the DARE);
* :mod:`~bilevel_agents.exact.games`: the toy and LQR Markov games.

Importing this package registers all of them. Nothing here imports a leader.
"""

from bilevel_agents.exact import building, games, tabular
from bilevel_agents.exact.dispatch import (
    at_config,
    follower_metrics,
    follower_metrics_impl,
    has_exact_objective,
    hypergradient,
    hypergradient_impl,
    leader_objective,
    leader_objective_impl,
    problem_of,
    report_metrics,
    report_metrics_impl,
)
from bilevel_agents.exact.tabular import leader_values, tabular_hypergradient

__all__ = [
    "at_config",
    "building",
    "follower_metrics",
    "follower_metrics_impl",
    "games",
    "has_exact_objective",
    "hypergradient",
    "hypergradient_impl",
    "leader_objective",
    "leader_objective_impl",
    "leader_values",
    "problem_of",
    "report_metrics",
    "report_metrics_impl",
    "tabular",
    "tabular_hypergradient",
]
