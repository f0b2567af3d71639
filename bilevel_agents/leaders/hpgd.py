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

Variants (paper §5.1, App. C.1):

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

Coefficient form: :func:`~bilevel_agents.estimators.theorem1.follower_advantage_grad_coefficients`.
On continuous problems (App. C.1 eq. 37, the authors' building HPGD) ``∇̂V_F(s)`` is the
cross-fitted least-squares fit of the ``∇̂Q_F`` suffixes on quadratic features of ``s``
(:mod:`bilevel_agents.families.continuous`, device 3): for an LQR follower ``∇θ V_F(s) =
−sᵀ(∂P)s − ∂v`` is exactly quadratic in ``s``, so the fit is consistent (the authors train an
8-output MLP by TD instead), and the leader factor is the critic's ``Q_L`` (``leader_value="q"``,
HPGD (TD)) or the discounted leader return-to-go (``"return"``, HPGD (MC), as in the authors'
code, not a Benefit).

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

HPGD's tax-design estimator differs from its Four-Rooms one in two ways, both
options here: each transition's score ``∇log p`` is clipped to ±1 before it is weighted
(``score_clip=1.0``), and the follower-response term is kept for the VAT rates only, not for the
income tax that moves the dynamics (``response_coordinates=(0, 1, 2)``). Both bias the estimate
(the clip changes large scores; the dropped response is part of Theorem 1's gradient); they are
off by default and on in ``examples/tax_design/hpgd_tax_code.yaml``.

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

from collections.abc import Sequence
from typing import Any

import numpy as np

from bilevel_agents.families import ContinuousFamily, TabularFamily
from bilevel_agents.leader import Leader, preset
from bilevel_envs.core import Batch
from bilevel_envs.utils import check_choice, check_float, check_int

__all__ = ["HPGD", "HPGDMonteCarlo", "HPGDOracle", "HPGDSarsa", "LEADER_VALUES", "ORACLE_STARTS",
           "UNVISITED"]

#: layouts of the oracle batch (``oracle_starts``; module docstring)
ORACLE_STARTS = ("first", "every")
#: what an on-policy ``(s, b)`` absent from the oracle batch contributes (``unvisited``)
UNVISITED = ("drop", "zero")
#: the leader factor of the guiding term (``leader_value``)
LEADER_VALUES = ("benefit", "q", "return")


class HPGD(Leader):
    """HPGD (Thoma et al. 2024; paper App. C.1 eq. 37, Alg. 8 lines 19–22, 25/26, 31).

    Args:
        br: the follower's best response over a configurable MDP (tabular or continuous).
        critic: ``"mc"`` (Alg. 9, HPGD (MC); the tabular default), ``"sarsa"`` (Alg. 10,
            HPGD (SA)), ``"td"`` (the MLP critic, the continuous default), ``"exact"`` or a
            critic object.
        leader_value: the leader factor of the guiding term: ``"benefit"`` (``Q̂_L − V̂_L``
            from the critic, the authors' tabular form; tabular default), ``"q"`` (the critic's
            ``Q_L``, eq. 37; continuous default) or ``"return"`` (the discounted leader
            return-to-go).
        oracle_batch_size: ``None`` (on-policy statistics) or the size of the extra batch from
            uniform start states per iteration (HPGD (oracle): 10^4, App. D; tabular only).
        oracle_starts: ``"first"`` (only each stream's first episode starts uniformly; cheap)
            or ``"every"`` (each oracle episode starts uniformly, as the authors); module
            docstring.
        oracle_n_envs: streams of a ``"first"`` oracle batch (default
            ``oracle_batch_size // 100``, at least 1).
        unvisited: an on-policy ``(s, b)`` absent from the oracle batch: ``"drop"`` its term
            (default) or ``"zero"`` (empty averages read as 0; module docstring).
        score_clip: clip every transition's ``∇θ log p`` to ``±score_clip`` coordinate-wise
            (HPGD's tax code: 1.0); ``None`` (default): unclipped, as Theorem 1.
        response_coordinates: the coordinates of θ that get the follower-response term
            (HPGD's tax code: the VAT rates ``(0, 1, 2)``); ``None`` (default): all of them.
        **kwargs: :class:`~bilevel_agents.leader.Leader` arguments (``batch_size``,
            ``sarsa_alpha``, ``lr``, ``seed``, ...).

    Raises:
        ValueError: a Markov game, an oracle on a continuous problem, a bad option.

    Example:
        >>> import gymnasium as gym, bilevel_envs
        >>> from bilevel_envs.wrappers import BestResponse
        >>> from bilevel_agents import HPGD
        >>> br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)
        >>> HPGD(br, critic="mc", batch_size=100, lr=0.05, seed=0).estimate_gradient().shape
        (105,)
    """

    name = "hpgd"
    families = (TabularFamily, ContinuousFamily)
    default_critic = {TabularFamily: "mc", ContinuousFamily: "td"}

    def __init__(self, br: Any, *, leader_value: str | None = None,
                 oracle_batch_size: int | None = None, oracle_starts: str = "first",
                 oracle_n_envs: int | None = None, unvisited: str = "drop",
                 score_clip: float | None = None,
                 response_coordinates: Sequence[int] | None = None, **kwargs: Any):
        super().__init__(br, **kwargs)
        tabular = isinstance(self.family, TabularFamily)
        self.score_clip = check_float("score_clip", score_clip, low=0.0, low_open=True,
                                      allow_none=True)
        self.response_coordinates = _coordinates(response_coordinates,
                                                 int(np.prod(br.config_space.shape)))
        if leader_value is None:
            leader_value = "benefit" if tabular else "q"
        self.leader_value = check_choice("leader_value", leader_value, LEADER_VALUES)
        self.oracle_starts = check_choice("oracle_starts", oracle_starts, ORACLE_STARTS)
        self.unvisited = check_choice("unvisited", unvisited, UNVISITED)
        self.oracle_batch_size = check_int("oracle_batch_size", oracle_batch_size, 1,
                                           allow_none=True)
        if self.oracle_batch_size is not None:
            if not tabular:
                raise ValueError("oracle_batch_size needs a tabular problem (every-visit "
                                 f"averages per state), got {type(br.problem).__name__}")
            if oracle_n_envs is None:
                oracle_n_envs = max(self.oracle_batch_size // 100, 1)
            oracle_n_envs = check_int("oracle_n_envs", oracle_n_envs, 1)
            if oracle_n_envs > self.oracle_batch_size or self.oracle_batch_size % oracle_n_envs:
                raise ValueError(f"oracle_n_envs must be a positive integer dividing "
                                 f"oracle_batch_size={self.oracle_batch_size}, "
                                 f"got {oracle_n_envs!r}")
        elif oracle_n_envs is not None:
            raise ValueError(f"oracle_n_envs={oracle_n_envs!r} needs an oracle_batch_size")
        self.oracle_n_envs = oracle_n_envs
        #: the statistics batch of the last estimate (the oracle's, or the on-policy one)
        self.last_stats_batch: Batch | None = None

    # ------------------------------------------------------------------ the oracle batch
    def collect_oracle(self) -> Batch:
        """The oracle's extra batch (Alg. 8 line 7) from uniform start states."""
        S = self.br.problem.n_states
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

    def statistics_batch(self, batch: Batch) -> Batch:
        """The oracle's extra batch (HPGD (oracle)), else the on-policy batch."""
        self.last_stats_batch = batch if self.oracle_batch_size is None else self.collect_oracle()
        return self.last_stats_batch

    def method_metrics(self, batch: Batch, stats: Batch) -> dict[str, float]:
        """The oracle batch's number of episodes."""
        if stats is batch:
            return {}
        return {"oracle_episodes": float((stats.time == 0).sum())}

    # ------------------------------------------------------------------ the guiding term
    def guiding_term(self, batch: Any, stats: Any) -> Any:
        """``(1/(βN)) Σ_t γ_L^t factor_t [∇̂Q_F − ∇̂V_F](s_t, b_t)`` (Alg. 8 line 31)."""
        family = self.family
        if self.leader_value == "benefit":
            factor = family.benefit(self, batch)
        elif self.leader_value == "q":
            factor = family.leader_q(self, batch)
        else:
            factor = family.leader_return(self, batch)
        if stats is not batch and self.unvisited == "drop":
            keys, n_keys = family.keys(batch)
            seen = np.bincount(family.keys(stats)[0], minlength=n_keys)[keys] > 0
            factor = np.where(seen, factor, 0.0)
        return family.response_term(self, batch, stats, factor, advantage=True)

    def combine(self, batch: Any, partial: Any, guide: Any) -> np.ndarray:
        """Partial + guide; with the tax-code options, scores clipped and the guide kept on
        ``response_coordinates`` only (then one autograd pass per term)."""
        if self.score_clip is None and self.response_coordinates is None:
            return super().combine(batch, partial, guide)
        family = self.family
        grad = family.gradient(self, batch, partial, score_clip=self.score_clip)
        response = family.gradient(self, batch, guide, score_clip=self.score_clip)
        if self.response_coordinates is not None:
            keep = np.zeros(response.size, dtype=bool)
            keep[list(self.response_coordinates)] = True
            response = np.where(keep.reshape(response.shape), response, 0.0)
        return grad + response

    def hparams(self) -> dict[str, Any]:
        """Leader settings plus HPGD's own options (the tax-code options only when set, so
        that earlier run folders keep their identity)."""
        out = {**super().hparams(), "leader_value": self.leader_value,
               "oracle_batch_size": self.oracle_batch_size,
               "oracle_starts": self.oracle_starts, "oracle_n_envs": self.oracle_n_envs,
               "unvisited": self.unvisited}
        if self.score_clip is not None:
            out["score_clip"] = self.score_clip
        if self.response_coordinates is not None:
            out["response_coordinates"] = list(self.response_coordinates)
        return out


def _coordinates(value: Sequence[int] | None, size: int) -> tuple[int, ...] | None:
    """``response_coordinates`` checked: distinct indices of θ in ``[0, size)``."""
    if value is None:
        return None
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ValueError(f"response_coordinates must be a list of distinct integers in "
                         f"[0, {size - 1}], got {value!r}")
    out = tuple(check_int("response_coordinates entries", v, 0) for v in value)
    if not out or len(set(out)) != len(out) or max(out) >= size:
        raise ValueError(f"response_coordinates must be a non-empty list of distinct integers "
                         f"in [0, {size - 1}], got {list(value)!r}")
    return out


HPGDMonteCarlo = preset(HPGD, "hpgd_mc", "HPGD (MC): Monte Carlo leader values from the same "
                        "batch (Alg. 9).", critic="mc")
HPGDSarsa = preset(HPGD, "hpgd_sa", "HPGD (SA): the SARSA Benefit of BC-HG (Alg. 10) times "
                   "``∇̂Q_F − ∇̂V_F``.", critic="sarsa")
HPGDOracle = preset(HPGD, "hpgd_oracle", "HPGD (oracle): MC statistics from an extra "
                    "10^4-transition batch from uniform starts every iteration (App. D); about "
                    "100× the rollout cost per iteration.", oracle_batch_size=10_000)
