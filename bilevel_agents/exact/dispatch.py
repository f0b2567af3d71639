"""The two ground-truth entry points and how problem families plug into them.

``leader_objective(br, θ)`` is ``J_L(θ) = E_{s0~μ0} V_L^{θ†}(s0)`` under the follower's exact soft
best response, and ``hypergradient(br, θ)`` its total derivative ``∇θ J_L(θ, g^{θ†})`` (paper
eq. 3 and Theorem 1 / 2). Each problem family registers an implementation on the type of the
unwrapped problem (:func:`functools.singledispatch`), so a new problem plugs in without
editing this file::

    from bilevel_agents.exact import leader_objective_impl

    @leader_objective_impl.register
    def _(problem: MyEnv, br, theta): ...
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["at_config", "has_exact_objective", "hypergradient", "hypergradient_impl",
           "leader_objective", "leader_objective_impl", "problem_of", "report_metrics",
           "report_metrics_impl", "follower_metrics", "follower_metrics_impl"]


def problem_of(br: Any) -> Any:
    """The unwrapped problem behind a best-response wrapper (or an env)."""
    return getattr(br, "problem", None) or br.unwrapped


def leader_objective(br: Any, theta: Any = None) -> float:
    """Exact ``J_L(θ)`` under the follower's best response (θ = current config if ``None``).

    The wrapper's θ and its follower are left exactly as they were.
    """
    return float(leader_objective_impl(problem_of(br), br, theta))


def hypergradient(br: Any, theta: Any = None) -> np.ndarray:
    """Exact ``∇θ J_L(θ, g^{θ†})`` (paper Theorem 1 / 2), an array shaped like θ.

    It differentiates the *exact* best response: with a k-step follower
    (``max_iterations=k``) it is the gradient the leader would have if the follower were
    optimal, evaluated at the k-step policy.
    """
    return np.asarray(hypergradient_impl(problem_of(br), br, theta), dtype=np.float64)


@functools.singledispatch
def leader_objective_impl(problem: Any, br: Any, theta: Any) -> float:
    """Exact ``J_L`` of ``problem`` at ``theta`` (registered per problem type)."""
    raise NotImplementedError(f"no exact leader objective for {type(problem).__name__}")


@functools.singledispatch
def hypergradient_impl(problem: Any, br: Any, theta: Any) -> np.ndarray:
    """Exact ``∇θ J_L`` of ``problem`` at ``theta`` (registered per problem type)."""
    raise NotImplementedError(f"no exact hypergradient for {type(problem).__name__}")


@functools.singledispatch
def report_metrics_impl(problem: Any, br: Any) -> dict[str, float]:
    """The exact metrics a problem's documented results use, beside ``J_L`` (default none)."""
    return {}


def report_metrics(br: Any) -> dict[str, float]:
    """Exact metrics of the current θ in the units of the problem's documented results (e.g.
    the toy game's 150-step return, the LQR game's 100-step return); ``{}`` if none."""
    return {k: float(v) for k, v in report_metrics_impl(problem_of(br), br).items()}


@functools.singledispatch
def follower_metrics_impl(problem: Any, br: Any) -> dict[str, float]:
    """Exact metrics of the follower the leader actually faces (default none)."""
    return {}


def follower_metrics(br: Any) -> dict[str, float]:
    """For a follower that is not the exact best response: ``objective_actual`` (the leader's
    exact objective under the follower's actual policy) and ``follower_gap`` (its soft-value
    gap to the best response), where the problem can compute them exactly; else ``{}``."""
    return {k: float(v) for k, v in follower_metrics_impl(problem_of(br), br).items()}


def has_exact_objective(br: Any) -> bool:
    """Whether :func:`leader_objective` has an implementation for this problem."""
    impl = leader_objective_impl.dispatch(type(problem_of(br)))
    return impl is not leader_objective_impl.dispatch(object)


@contextlib.contextmanager
def at_config(br: Any, theta: Any) -> Iterator[Any]:
    """Temporarily set the wrapper's θ (the follower re-solves), then restore it exactly.

    The wrapper's :meth:`state_dict` (θ and the follower's own snapshot) is restored on exit, so
    a warm-started or k-step follower is left as it was (re-solving at the old θ would move a
    k-step follower by k more backups). ``theta=None`` leaves everything as it is.
    """
    if theta is None:
        yield br
        return
    saved = br.state_dict()
    br.set_config(theta)
    try:
        yield br
    finally:
        br.load_state_dict(saved)
