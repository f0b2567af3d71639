"""Pure estimator functions: the paper's equations, each with its number in the docstring.

* :mod:`~bilevel_agents.estimators.returns`: discounted within-episode sums (one
  implementation for flat and row layouts).
* :mod:`~bilevel_agents.estimators.theorem1`: configurable MDPs (eq. 5–6, Alg. 4, 6, 8; HPGD's
  advantage form eq. 37–39), in coefficient form with one autograd pass.
* :mod:`~bilevel_agents.estimators.theorem2`: Markov games (eq. 8–9, Alg. 5, 7) as per-step
  weights of the leader's score.

Nothing here imports a leader; leaders, tests and benchmarks call these functions.
"""

from bilevel_agents.estimators import returns, theorem1, theorem2
from bilevel_agents.estimators.returns import discounted_forward_sum, discounted_reverse_sum
from bilevel_agents.estimators.theorem1 import (
    Coefficients,
    SurrogateTerm,
    benefit,
    crossfit_residual,
    every_visit_mean,
    every_visit_spread,
    follower_advantage_grad_coefficients,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_mc,
    partial_derivative_td,
    quadratic_features,
    surrogate_gradient,
    theorem1_coefficients,
)
from bilevel_agents.estimators.theorem2 import theorem2_gradient, theorem2_weights

__all__ = [
    "Coefficients",
    "SurrogateTerm",
    "benefit",
    "crossfit_residual",
    "discounted_forward_sum",
    "discounted_reverse_sum",
    "every_visit_mean",
    "every_visit_spread",
    "follower_advantage_grad_coefficients",
    "follower_q_grad_coefficients",
    "guiding_weights",
    "partial_derivative_mc",
    "partial_derivative_td",
    "quadratic_features",
    "returns",
    "surrogate_gradient",
    "theorem1",
    "theorem1_coefficients",
    "theorem2",
    "theorem2_gradient",
    "theorem2_weights",
]
