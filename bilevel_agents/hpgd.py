"""HPGD (Thoma et al. 2024) as a configurable-MDP leader: paper App. C.1, eq. 37, Alg. 8 line 31.

HPGD writes the guiding term of Theorem 1 with the follower's *advantage* gradient::

    Γ̂ = (1 / (β N)) Σ_τ Σ_t γ_L^t B̂_L(s_t, b_t) [∇̂Q_F(s_t, b_t) − ∇̂V_F(s_t)]     (Alg. 8 l. 31)

with ``∇̂Q_F`` / ``∇̂V_F`` every-visit Monte Carlo averages over the trajectory segments that start
at ``(s, b)`` / at ``s`` (Alg. 8 lines 19–22) and ``B̂_L = Q̂_L − V̂_L`` the leader's Benefit (the
authors' implementation replaces eq. 37's ``Q_L`` by the Benefit; App. C.1). Because
``E_{b~g}[∇Q_F(s, b)] = ∇V_F(s)`` (eq. 38) and ``E_{b~g} B_L(s, b) = 0``, the target is the same as
BC-HG's (Theorem 1, eq. 5/7); the estimators differ. HPGD needs *several actions at the same
state* in the batch: with one visit of ``s``, ``∇̂Q_F(s, b) − ∇̂V_F(s) = 0`` exactly, which is why
it degrades at small β (paper §5.1).

Variants (paper §5.1, App. C.1; reference/official_code_facts.md §3.1):

* **HPGD (MC)** — ``critic="mc"``: ``Q̂_L`` and ``V̂_L`` are every-visit Monte Carlo averages of the
  leader's discounted return-to-go over the same batch (Alg. 9).
  ``Q̂_L`` and ``∇̂Q_F`` then average the *same* segments, so their product carries a covariance
  term of order 1/visits: a bias at small batches that shrinks with the batch
  (``tests/test_baselines.py``, ``docs/results/estimator_accuracy.md``).
* **HPGD (SA)** — ``critic="sarsa"``: the tabular SARSA critic of BC-HG (Alg. 10), carried across
  iterations; ``V_L = Σ_b g Q_L``.
* **HPGD (oracle)** — ``oracle_batch_size=10_000``: each iteration draws an *extra* batch from
  uniform start states (Alg. 8 line 7, App. D). ``∇̂Q_F``, ``∇̂V_F`` and the critic (MC: ``Q̂_L``,
  ``V̂_L``) come from that batch and are looked up at the on-policy batch's ``(s_k, b_k)``; the
  outer sum, its ``γ_L^t`` weights and the normaliser ``N`` (finished episodes) stay on the
  on-policy batch, and so does the partial derivative ``∂̂J``.

Coefficient form (see :mod:`bilevel_agents.estimators`): the weights
``w_j = γ_L^{t_j} B̂_j / (β N)`` are spread onto the statistics transitions by
``every_visit_spread`` on ``(s, b)`` keys minus ``every_visit_spread`` on ``s`` keys; one
discounted forward sum (γ_F) turns them into coefficients of ``r_F`` (and of ``log p`` with
``γ_F V_F(s')`` for θ-dependent dynamics, eq. 39).

Oracle batch. The wrapper's ``rollout(initial_states=...)`` sets the start state of the *first*
episode of each stream; later episodes restart from the problem's start distribution. Two
layouts are offered (``oracle_starts``):

* ``"every"`` — every episode starts uniformly over all states (the goal included), as in the
  authors' code: streams as long as the time limit are rolled out and only their first, complete
  episodes are kept, in order, until ``oracle_batch_size`` transitions (the last one cut). It
  simulates ~20× the transitions it keeps (~10× the cost of ``"first"`` per iteration).
* ``"first"`` (cheap) — ``oracle_n_envs`` streams (default ``oracle_batch_size // 100``, i.e.
  100 streams of 100 steps for 10^4) whose first episodes start uniformly and whose later
  episodes start at S (~500 episodes per 10^4 transitions, ~100 from uniform starts).

Every-visit averages are consistent estimates of the same ``∇Q_F``, ``∇V_F``, ``Q_L``, ``V_L``
under both (Markov property); the coverage differs: ``"first"`` puts more visits on the S-paths,
where the on-policy keys are; ``"every"`` spreads them over the map.

An on-policy ``(s, b)`` that the statistics batch never visited has no estimate. By default
(``unvisited="drop"``) its term is dropped (weight 0). ``unvisited="zero"`` reads the empty
averages as 0, as a sum / max(count, 1) does: the term becomes
``γ_L^t (0 − V̂_L(s)) (0 − ∇̂V_F(s)) / (β N) = γ_L^t V̂_L(s) ∇̂V_F(s) / (β N)``, a bias with no
counterpart in Theorem 1 that is large at small β (1/β) and points, where ``V̂_L < 0``, towards
*lower* follower values on the visited states, i.e. away from the no-incentive optimum.
(The authors' layout of this case is not documented; ``"zero"`` is what the arithmetic gives
without a guard; docs/results/four_rooms_reproduction.md measures both.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel_agents.configurable import ConfigurableLeader
from bilevel_agents.estimators import (
    Coefficients,
    benefit,
    discounted_forward_sum,
    every_visit_spread,
    guiding_weights,
    surrogate_gradient,
)
from bilevel_envs.core import Batch

ORACLE_STARTS = ("first", "every")
UNVISITED = ("drop", "zero")

__all__ = ["HPGD", "HPGDMonteCarlo", "HPGDOracle", "HPGDSarsa", "ORACLE_STARTS", "UNVISITED",
           "advantage_grad_coefficients"]


def advantage_grad_coefficients(batch: Batch, weights: np.ndarray, sb_keys: np.ndarray,
                                n_sb: int, s_keys: np.ndarray, n_s: int, gamma_follower: float,
                                next_soft_v: np.ndarray, stats: Batch | None = None,
                                stat_sb_keys: np.ndarray | None = None,
                                stat_s_keys: np.ndarray | None = None) -> Coefficients:
    """Coefficients of ``Σ_j w_j [∇̂Q_F(s_j, b_j) − ∇̂V_F(s_j)]`` (Alg. 8 lines 19–22, 31).

    ``∇̂Q_F(s, b)`` (``∇̂V_F(s)``) is the every-visit average, over the statistics transitions ``k``
    with key ``(s, b)`` (``s``), of ``G_F(k) = Σ_{m≥k} γ_F^{m−k} [∇r_F(s_m, b_m) + γ_F V_F(s_{m+1})
    ∇log p(s_{m+1}|s_m, b_m)]`` (paper eq. 39). By linearity the whole sum is
    ``Σ_m c_m ∇r_F(m) + c^p_m ∇log p(m)`` with ``c = forward_sum_γF(u_Q − u_V)`` and
    ``u = every_visit_spread(w, ...)``.

    Args:
        batch: transitions carrying the weights (the on-policy batch).
        weights: ``w_j`` on ``batch``.
        sb_keys, n_sb: ``(s, b)`` keys of ``batch`` and their number.
        s_keys, n_s: state keys of ``batch`` and their number.
        gamma_follower: γ_F.
        next_soft_v: ``V_F(s'_k)`` on the statistics batch.
        stats: the batch the averages come from (an oracle's); default ``batch``.
        stat_sb_keys, stat_s_keys: keys of ``stats`` (required with ``stats``).
    Returns:
        Coefficients on the transitions of ``stats``.
    Raises:
        ValueError: mismatched lengths or missing statistics keys.
    """
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (len(batch),):
        raise ValueError(f"weights must have shape ({len(batch)},), got {weights.shape}")
    if stats is None:
        stats, stat_sb_keys, stat_s_keys = batch, sb_keys, s_keys
    elif stat_sb_keys is None or stat_s_keys is None:
        raise ValueError("stat_sb_keys and stat_s_keys are required with stats")
    u = (every_visit_spread(weights, sb_keys, n_sb, stat_sb_keys)
         - every_visit_spread(weights, s_keys, n_s, stat_s_keys))
    c = discounted_forward_sum(u, gamma_follower, stats.episode_end)
    c_logp = np.where(stats.terminated, 0.0, gamma_follower * np.asarray(next_soft_v) * c)
    return Coefficients(c, np.zeros_like(c), c_logp)


class HPGD(ConfigurableLeader):
    """HPGD leader (paper App. C.1 eq. 37, Alg. 8 lines 19–22, 25/26, 31) on tabular problems.

    Args:
        br: the follower's best response over a *tabular* configurable MDP (the every-visit
            averages pool visits of the same state).
        critic: ``"mc"`` (Alg. 9, HPGD (MC); the default), ``"sarsa"`` (Alg. 10, HPGD (SA)),
            ``"exact"`` (tests) or a :class:`~bilevel_agents.critics.Critic`.
        oracle_batch_size: ``None`` (on-policy statistics) or the size of the extra batch from
            uniform start states per iteration (HPGD (oracle): 10^4, App. D).
        oracle_starts: ``"every"`` (each oracle episode starts uniformly, as the authors) or
            ``"first"`` (only each stream's first episode; cheaper); module docstring.
        oracle_n_envs: streams of a ``"first"`` oracle batch (default
            ``oracle_batch_size // 100``, at least 1).
        unvisited: an on-policy ``(s, b)`` absent from the oracle batch: ``"drop"`` its term
            (default) or ``"zero"`` (empty averages read as 0; module docstring).
        **kwargs: :class:`~bilevel_agents.configurable.ConfigurableLeader` arguments
            (``batch_size``, ``sarsa_alpha``, ``lr``, ``seed``, ...).

    Raises:
        ValueError: a non-tabular problem, a bad ``oracle_batch_size``, ``oracle_starts``,
            ``oracle_n_envs`` or ``unvisited``.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> from bilevel_agents import HPGD
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
        >>> HPGD(br, critic="mc", batch_size=100, lr=0.05, seed=0).estimate_gradient().shape
        (105,)
    """

    name = "hpgd"
    default_critic = "mc"

    def __init__(self, br: Any, *, oracle_batch_size: int | None = None,
                 oracle_starts: str = "first", oracle_n_envs: int | None = None,
                 unvisited: str = "drop", **kwargs: Any):
        super().__init__(br, **kwargs)
        if not self.tabular:
            raise ValueError(f"HPGD needs a tabular problem (every-visit averages per state), "
                             f"got {type(br.problem).__name__}")
        if oracle_starts not in ORACLE_STARTS:
            raise ValueError(f"oracle_starts must be one of {ORACLE_STARTS}, "
                             f"got {oracle_starts!r}")
        if unvisited not in UNVISITED:
            raise ValueError(f"unvisited must be one of {UNVISITED}, got {unvisited!r}")
        if oracle_batch_size is not None:
            if isinstance(oracle_batch_size, (bool, np.bool_)) or not isinstance(
                    oracle_batch_size, (int, np.integer)) or oracle_batch_size < 1:
                raise ValueError(f"oracle_batch_size must be a positive integer or None, "
                                 f"got {oracle_batch_size!r}")
            oracle_batch_size = int(oracle_batch_size)
            if oracle_n_envs is None:
                oracle_n_envs = max(oracle_batch_size // 100, 1)
            if isinstance(oracle_n_envs, (bool, np.bool_)) or not isinstance(
                    oracle_n_envs, (int, np.integer)) or not 1 <= oracle_n_envs <= \
                    oracle_batch_size or oracle_batch_size % oracle_n_envs:
                raise ValueError(f"oracle_n_envs must be a positive integer dividing "
                                 f"oracle_batch_size={oracle_batch_size}, got {oracle_n_envs!r}")
            oracle_n_envs = int(oracle_n_envs)
        elif oracle_n_envs is not None:
            raise ValueError(f"oracle_n_envs={oracle_n_envs!r} needs an oracle_batch_size")
        self.oracle_batch_size, self.oracle_n_envs = oracle_batch_size, oracle_n_envs
        self.oracle_starts, self.unvisited = oracle_starts, unvisited
        self.last_stats_batch: Batch | None = None

    # ------------------------------------------------------------------ batches
    def collect_oracle(self) -> Batch:
        """The oracle's extra batch (Alg. 8 line 7) from uniform start states."""
        S = self.problem.n_states
        if self.oracle_starts == "first":
            starts = self.rng.integers(0, S, size=self.oracle_n_envs)
            return self.br.rollout(self.oracle_batch_size, self.oracle_n_envs, rng=self.rng,
                                   initial_states=starts)
        need, length = self.oracle_batch_size, self.br.max_episode_steps
        parts: list[Batch] = []
        total = streams = 0
        while total < need:  # one rollout, rarely two
            # cost is per time step (streams are stepped together): be generous with streams
            n = max(1, -(-(need - total) // 10))
            batch = self.br.rollout(n * length, n, rng=self.rng,
                                    initial_states=self.rng.integers(0, S, size=n))
            # keep each stream's first episode (complete: the stream is as long as the limit)
            first = (np.cumsum((batch.time == 0).reshape(n, length), axis=1) == 1).ravel()
            fields = {k: np.asarray(v)[first] for k, v in batch._asdict().items()}
            fields["env_id"] = fields["env_id"] + streams  # unique stream ids across rollouts
            kept = Batch(**fields)
            parts.append(kept)
            streams += n
            total += len(kept)
        fields = [np.concatenate(cols)[:need] for cols in zip(*parts)]
        out = Batch(*fields)
        out.batch_end[-1] = not (out.terminated[-1] or out.truncated[-1])
        return out

    def _keys(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        return batch.obs * self.problem.n_actions + batch.actions, batch.obs

    # ------------------------------------------------------------------ the estimate
    def guiding_coefficients(self, batch: Batch, stats: Batch | None = None) -> Coefficients:
        """Γ̂ of Alg. 8 line 31 as coefficients on ``stats`` (default: ``batch``).

        The critic must already have been updated on ``stats``.
        """
        stats = batch if stats is None else stats
        problem = self.problem
        S, B = problem.n_states, problem.n_actions
        sb, s = self._keys(batch)
        stat_sb, stat_s = self._keys(stats)
        ben = benefit(self.critic.q(batch.obs, batch.actions), self.critic.v(batch.obs, self.br))
        if self.unvisited == "drop":
            ben = np.where(np.bincount(stat_sb, minlength=S * B)[sb] > 0, ben, 0.0)
        w = guiding_weights(batch, ben, self.br.beta,
                            problem.gamma_leader, self.normaliser(batch))
        return advantage_grad_coefficients(batch, w, sb, S * B, s, S, problem.gamma_follower,
                                           self.soft_v(stats.next_obs), stats, stat_sb, stat_s)

    def gradient_from_batch(self, batch: Batch) -> np.ndarray:
        """``∂̂J`` (on-policy batch) ``+ Γ̂`` (statistics from the oracle batch if any)."""
        if self.oracle_batch_size is None:
            self.last_stats_batch = batch
            return super().gradient_from_batch(batch)
        stats = self.collect_oracle()
        self.last_stats_batch = stats
        metrics: dict[str, float] = {"episodes": float(batch.n_finished_episodes),
                                     "oracle_episodes": float((stats.time == 0).sum())}
        metrics.update(self.critic.update(stats, self.br))
        self.last_metrics = metrics
        theta = self.theta
        return (surrogate_gradient(self.problem, theta, batch, self.partial_coefficients(batch))
                + surrogate_gradient(self.problem, theta, stats,
                                     self.guiding_coefficients(batch, stats)))

    def hparams(self) -> dict[str, Any]:
        return {**super().hparams(), "oracle_batch_size": self.oracle_batch_size,
                "oracle_starts": self.oracle_starts, "oracle_n_envs": self.oracle_n_envs,
                "unvisited": self.unvisited}


class HPGDMonteCarlo(HPGD):
    """HPGD (MC): Monte Carlo leader values from the same batch (Alg. 9); CLI ``hpgd_mc``."""

    name = "hpgd_mc"
    default_critic = "mc"


class HPGDSarsa(HPGD):
    """HPGD (SA): the SARSA Benefit of BC-HG (Alg. 10) times ``∇̂Q_F − ∇̂V_F``; CLI ``hpgd_sa``."""

    name = "hpgd_sa"
    default_critic = "sarsa"


class HPGDOracle(HPGD):
    """HPGD (oracle): MC statistics from an extra 10^4-transition batch from uniform starts
    every iteration (App. D); CLI ``hpgd_oracle``. About 100× the rollout cost per iteration."""

    name = "hpgd_oracle"
    default_critic = "mc"

    def __init__(self, br: Any, *, oracle_batch_size: int | None = 10_000, **kwargs: Any):
        super().__init__(br, oracle_batch_size=oracle_batch_size, **kwargs)
