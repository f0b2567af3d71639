"""SoBiRL (Yang, Gao and Yuan 2025) as a configurable-MDP leader: paper App. C.1 eq. 40–41,
Alg. 8 line 32.

SoBiRL approximates ``∇Q_F`` and ``∇V_F`` by one-step truncations (eq. 41) and weights a whole
trajectory by the leader's value of its first step::

    Γ̂ = (1 / (β N)) Σ_τ Q̂_L(s_0, b_0) Σ_{(s_t,b_t) ∈ τ} [∇r_F(s_t,b_t) − E_{b~g(·|s_t)} ∇r_F(s_t,b)]

(undiscounted inner sum, as in Alg. 8 line 32 and the authors' code), with ``Q̂_L`` the every-visit
Monte Carlo estimate of Alg. 9 (line 25) and ``N`` the number of episodes in the batch (episode
starts, as for the partial derivative). The one-step approximation needs the follower's reward
gradient at *every* action, so SoBiRL needs θ-independent dynamics (App. C.1) and a tabular
reward table; the expectation enters the surrogate through ``surrogate_gradient(...,
extra_follower_table=X)`` with ``X(s, b) = −g(b|s) Σ_{t: s_t = s} c_t``.

**On Four-Rooms the guiding term is exactly zero.** The incentive ``r̃^θ(s, b) = −0.2·softmax(x)_s``
(App. C.2, eq. 46) does not depend on the action ``b``, so ``∇r_F(s_t, b_t) = E_{b~g} ∇r_F(s_t, b)``
for every transition and the bracket vanishes: SoBiRL equals NAIVE-PGD step for step
(same seed ⇒ same θ; ``tests/test_baselines.py``), as the authors' checkpoints and figures show
(as in the authors' code). A meaningful SoBiRL comparison needs action-dependent
incentives.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.estimators.returns import discounted_forward_sum
from bilevel_agents.estimators.theorem1 import Coefficients, SurrogateTerm
from bilevel_agents.families import TabularFamily
from bilevel_agents.leader import Leader
from bilevel_envs.core import Batch
from bilevel_envs.followers.base import require_published

__all__ = ["SoBiRL", "sobirl_coefficients"]


def sobirl_coefficients(batch: Batch, q_start: np.ndarray, policy: np.ndarray,
                        beta: float, normaliser: float | np.ndarray | None = None
                        ) -> tuple[Coefficients, np.ndarray]:
    """SoBiRL's guiding term (Alg. 8 line 32) as surrogate coefficients plus a reward table.

    Args:
        batch: the on-policy batch (tabular states and actions).
        q_start: ``Q̂_L(s_k, b_k)`` per transition; only the values at episode starts
            (``time == 0``) are used.
        policy: the follower's ``g(b|s)``, shape ``(S, B)``.
        beta: the follower's entropy weight β > 0.
        normaliser: ``N``, default the episode starts of the batch (at least 1); or one per
            transition (several runs' batches in one, states numbered ``run·S + s`` and
            ``policy`` their stacked ``(N·S, B)`` tables).
    Returns:
        ``(coef, X)``: per-transition coefficients ``c_t = Q̂_L(s_0, b_0) / (β N)`` of
        ``r_F(s_t, b_t)`` (constant along each episode) and the ``(S, B)`` table
        ``X(s, b) = −g(b|s) Σ_{t: s_t = s} c_t`` carrying ``−E_{b~g} ∇r_F(s_t, b)``; the guiding
        gradient is ``Σ_t c_t ∇r_F(s_t, b_t) + Σ_{s,b} X(s, b) ∇r_F(s, b)``.
    Raises:
        ValueError: a bad β, shapes that do not match, states outside ``policy``.
    """
    if not (np.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a finite number > 0, got {beta!r}")
    policy = np.asarray(policy, dtype=np.float64)
    if policy.ndim != 2:
        raise ValueError(f"policy must be an (S, B) table, got shape {policy.shape}")
    q_start = np.asarray(q_start, dtype=np.float64)
    if q_start.shape != (len(batch),):
        raise ValueError(f"q_start must have shape ({len(batch)},), got {q_start.shape}")
    S = policy.shape[0]
    if len(batch) and (batch.obs.min() < 0 or batch.obs.max() >= S):
        raise ValueError(f"batch states must lie in [0, {S}) to index policy")
    starts = batch.time == 0
    n_episodes = max(int(starts.sum()), 1) if normaliser is None else normaliser
    u = np.where(starts, q_start, 0.0) / (beta * n_episodes)
    c = discounted_forward_sum(u, 1.0, batch.episode_end)  # Q̂_L(s_0, b_0)/(βN) along τ
    table = -np.bincount(batch.obs, weights=c, minlength=S)[:, None] * policy
    return Coefficients(c, np.zeros_like(c), np.zeros_like(c)), table


class SoBiRL(Leader):
    """SoBiRL leader (paper Alg. 8 line 32 with the MC critic of Alg. 9, line 25).

    Identical to :class:`~bilevel_agents.NaivePGD` on Four-Rooms (module docstring): the
    incentive does not depend on the follower's action, so the guiding term is exactly zero.

    Args:
        br: the follower's best response over a tabular configurable MDP with θ-independent
            dynamics.
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments; ``critic``: ``"mc"``
            (default, Alg. 9), ``"sarsa"``, ``"exact"`` or a critic, giving ``Q̂_L(s_0, b_0)``.

    Raises:
        ValueError: a problem that is not a tabular configurable MDP.
    """

    name = "sobirl"
    families = (TabularFamily,)
    default_critic = "mc"

    def __init__(self, br: Any, **kwargs: Any):
        super().__init__(br, **kwargs)
        # the one-step expectation E_{b~g} ∇r_F needs the follower's policy (Assumption 1)
        require_published(br.follower, "policy")

    def guiding_term(self, batch: Batch, stats: Batch) -> SurrogateTerm:
        """SoBiRL's one-step guiding term, sampled and expected parts in one surrogate."""
        coef, table = sobirl_coefficients(batch, self.critic.q(batch.obs, batch.actions),
                                          self.br.policy, self.br.beta)
        return SurrogateTerm.on(batch, coef, follower_table=table)
