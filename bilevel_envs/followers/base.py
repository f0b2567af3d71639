"""The follower protocol: what ``BestResponse`` needs from a follower, and what it may publish.

Required members
----------------
Every follower has these three members:

* ``beta``: its entropy temperature β > 0 (the leader's estimators divide by it; the wrappers
  refuse a follower whose ``beta`` differs from theirs, :func:`check_follower_beta`).
* ``solve(problem)``: θ has changed (the leader's parameters of ``problem``, or, for a game,
  ``solve(game, leader_policy)``). An exact solver re-solves its best response here
  (warm-started); a k-step solver takes its k steps; a learning follower trains here (e.g.
  ``steps_per_leader_update`` transitions of its own experience at the new θ). The wrappers
  call it once at construction, on every ``set_config`` / ``set_leader_policy``, and on
  ``reset(options={"config": θ})``.
* ``act(obs, rng)``: sample the follower's actions for a batch of observations, drawing every
  random number from ``rng`` (so rollouts are reproducible under a seed). Tabular problems:
  ``obs`` are ``(N,)`` int states and the result is ``(N,)`` int64 actions; continuous problems:
  ``(N, n)`` states and ``(N, m)`` float actions; games: follower observations ``(N, 2)`` /
  ``(N, n + k)``.

Optional members
----------------
* ``policy``, ``soft_q``, ``soft_v``: its current policy and soft values (arrays for tabular
  problems: ``(S, B)``, ``(S, B)``, ``(S,)``; callables on batches for continuous ones).
  **A follower that does not publish one of them returns ``None``** (or lacks the attribute):
  exact and k-step solvers publish all three (a k-step solver publishes its own estimates);
  :class:`~bilevel_envs.followers.soft_q_learning.SoftQLearning` publishes its estimates or
  nothing (black-box mode); an SB3 follower publishes at most its policy table, never soft
  values. The wrappers turn ``None`` into :class:`NotPublishedError` (an ``AttributeError``, so
  ``getattr(br, "soft_v", None)`` and ``hasattr`` work) and use :meth:`act` for rollouts when no
  tabular policy is published. Use :func:`published` to read one without an error.
* ``observe(batch)``: learn from transitions the *leader* collected
  (a :class:`~bilevel_envs.core.Batch` of the follower's own actions at the current θ). The
  wrappers never call it on their own; a training loop calls ``br.observe(batch)``, which is a
  no-op for followers without ``observe``.
* ``exact``: ``True`` for an exact best-response solver (the exact ground truth may then read
  its policy); absent or ``False`` otherwise.
* ``policy_readout()``: the policy it acts with, for *evaluation* only (the exact objective under
  the follower the leader actually faces), also for followers that publish nothing; leaders
  never call it.
* ``state_dict()`` / ``load_state_dict(state)``: a snapshot of everything that affects its
  future answers (a warm start, a Q-table, network weights and optimiser moments, a replay
  buffer, the follower's own random generators), as plain arrays, numbers and dicts; used for
  exact resume of training runs and to evaluate the exact objective at another θ and come
  back. Restoring a snapshot and repeating the same calls must reproduce the same numbers.
  Followers without it are re-solved at the stored θ on restore.

Game followers (``GameBestResponse``) also expose the leader policy they answered:
``leader_policy`` (``(S, A)``, tabular games) or ``K`` and ``W`` (LQR game); the wrapper falls
back to the policy it was given when they are absent.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

__all__ = ["PUBLISHED_NAMES", "Follower", "NotPublishedError", "check_follower_beta", "describe",
           "published", "require_published"]

#: the optional values a follower may publish
PUBLISHED_NAMES = ("policy", "soft_q", "soft_v")


@runtime_checkable
class Follower(Protocol):
    """The three members every follower has (module docstring for the optional ones)."""

    beta: float

    def solve(self, problem: Any) -> None:
        """Answer the leader's current θ (re-solve, take k steps, or train).

        Args:
            problem: the unwrapped problem at its current θ (a game follower also receives the
                leader's policy: ``solve(game, leader_policy)``).
        """
        ...

    def act(self, obs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample the follower's actions for a batch of observations.

        Args:
            obs: a batch of follower observations (``(N,)`` tabular states, ``(N, n)`` continuous
                states, or a game's follower observations).
            rng: the generator every random number is drawn from.

        Returns:
            One action per observation (``(N,)`` ints or ``(N, m)`` floats).
        """
        ...


class NotPublishedError(AttributeError):
    """A follower does not publish a value (``policy``, ``soft_q`` or ``soft_v``).

    An ``AttributeError`` on purpose: ``getattr(br, "soft_v", None)`` returns ``None`` and
    ``hasattr(br, "soft_v")`` is ``False`` for a black-box follower.
    """


def published(follower: Any, name: str) -> Any:
    """The follower's published ``name`` (``"policy"``, ``"soft_q"``, ``"soft_v"``) or ``None``.

    ``None`` means "not published" (the attribute is missing or is ``None``). Errors other than
    ``AttributeError`` (e.g. an exact solver's "not solved yet") propagate.
    """
    if name not in PUBLISHED_NAMES:
        raise ValueError(f"name must be one of {PUBLISHED_NAMES}, got {name!r}")
    return getattr(follower, name, None)


def require_published(follower: Any, name: str) -> Any:
    """:func:`published`, raising :class:`NotPublishedError` with a clear message if absent."""
    value = published(follower, name)
    if value is None:
        hint = {"policy": "sample its actions with act() or br.rollout()",
                "soft_q": "estimate it from samples (e.g. Monte-Carlo returns of br.rollout())",
                "soft_v": "estimate it from samples (e.g. Monte-Carlo returns of br.rollout())"}
        raise NotPublishedError(
            f"{describe(follower)} does not publish {name} (a black-box or learning follower); "
            f"{hint[name]}, or use a follower that publishes it (exact, kstep, "
            f"soft-q-learning with publish=true)")
    return value


def check_follower_beta(follower: Any, beta: float) -> None:
    """Raise ``ValueError`` unless ``follower.beta`` equals the wrapper's ``beta``.

    The leader's estimators divide by the wrapper's β (``br.beta``), the follower's policy is
    ``softmax(Q/β_follower)``: they must be the same temperature.
    """
    fb = getattr(follower, "beta", None)
    if fb is None or not np.isclose(float(fb), float(beta), rtol=1e-12, atol=0.0):
        raise ValueError(f"follower.beta={fb!r} differs from beta={beta!r}: build the follower "
                         "with the wrapper's temperature")


def describe(follower: Any) -> str:
    """A short name of a follower for error messages (its ``describe()`` or class name)."""
    fn = getattr(follower, "describe", None)
    if callable(fn):
        return str(fn())
    return type(follower).__name__
