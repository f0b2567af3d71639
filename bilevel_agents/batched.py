"""The batched engine: N independent runs of one method on one tabular problem, trained as one
batched computation, each run with the numbers, files and checkpoints of a single run.

What is batched (one array operation for all N runs per piece of an outer iteration):

* **θ** ``(N, d)``; the gradient step, clipping and projection.
* **The follower**: warm-started soft Newton for all runs at once
  (:func:`~bilevel_envs.followers.soft_value_iteration.stacked_soft_value_iteration`): stacked
  dense solves, converged runs masked out, through a
  :class:`~bilevel_envs.model.StackedTabularModel` (one structure, N reward tables from the
  problem's stacked ``reward_tables``).
* **Rollouts**: every run's streams stepped together
  (:func:`~bilevel_envs.wrappers.best_response.stacked_tabular_walk`: the exact sampler of
  ``_tabular_walk`` with the bisection vectorised across streams and runs, for on-policy and
  oracle batches alike).
* **Critics**: SARSA (:func:`~bilevel_agents.critics.tabular.stacked_sarsa_pass`; the pass is
  sequential by definition, so it loops over the transition index with all runs updated
  together), Monte Carlo (the :class:`~bilevel_agents.critics.tabular.MonteCarloCritic` itself,
  over ``N·S`` states), exact (the leader values of the exact evaluation).
* **Estimators**: the pure functions of :mod:`bilevel_agents.estimators.theorem1` (and
  SoBiRL's), unchanged, on one flat batch: the N runs' batches one after the other with states
  numbered ``run·S + s``, so every-visit keys ``run·S·B + s·B + b`` never mix runs, episodes end
  at run boundaries, and normalisers are per-transition arrays. One stacked reward VJP
  (the problem's ``tabular_rewards_vjp`` with stacked θ) gives all N gradients.
* **Exact evaluation** of ``J_L(θ)`` (and the exact hypergradient of exact ascent):
  :func:`~bilevel_agents.exact.tabular.leader_values` /
  :func:`~bilevel_agents.exact.tabular.tabular_hypergradient` on the stacked model.

Only one thing loops over runs: drawing from each run's own generator, in the single run's
order (the context of the iteration with ``contexts="per_iteration"``, rollout uniforms, oracle
starts and uniforms, the SARSA pass order), and writing each run's log and checkpoint. On a
contextual problem the runs of a batch may be in different contexts: each run's streams start
and restart in its own context's start state.

**Equality.** Run ``r`` of a batch has the history of the single run of the same spec and seed
(:func:`bilevel_agents.trainer.train`), *bit for bit*: θ trajectory, every logged metric and the
exact objective (``tests/agents/test_batched.py`` checks every supported method × both
Four-Rooms dynamics with mixed learning rates, α_SA and seeds). This holds because each run
consumes its own ``np.random.default_rng(seed)`` in the single run's order and every batched
operation performs the single run's floating-point operations in the same order: elementwise
numpy, reductions along the same axis lengths, one BLAS ``gemv``/``dot`` per run (stacked
matmul), LAPACK ``gesv`` per matrix (stacked solve), ``bincount`` accumulations in the same
order (keys offset by run), the SARSA pass as the same scalar recursion. Checkpoints are the
single run's ``Leader.state_dict()``, so a run can be resumed by either path.

**Run integrity.** Every run has its own :class:`~bilevel_agents.runs.RunFolder` (identity,
lock, append-only ``metrics.csv``, ``checkpoint.npz``, ``summary.json``), exactly as a single
run; an interrupted batch resumes each run from its own checkpoint, finished runs are read back.

**What falls back** (:func:`unsupported_reason` says why): methods other than BC-HG, NAIVE-PGD,
HPGD (MC / SA / oracle "first" with Benefit factor), SoBiRL and exact ascent; followers other
than the exact warm-started Newton solver; problems without stacked ``reward_tables`` (every
problem but Four-Rooms and contextual Four-Rooms today) or with θ-dependent dynamics; HPGD's
oracle batch on contextual problems; Adam, per-group clipping,
step-size decay, the TD partial derivative, refinement batches, expected SARSA, HPGD's
``oracle_starts="every"`` or non-Benefit factors. :func:`bilevel_agents.experiments.sweep.run_sweep`
runs those in processes and prints which and why.

**Cost** (``python -m bilevel_agents.benchmarks.bench_batched``; numbers and commands in
docs/results/performance.md): on the 104-state Four-Rooms the per-run Python overhead is gone
(one batch step costs a fixed few milliseconds of numpy calls shared by all its runs); what
remains is arithmetic: the sparse elimination solves of the exact evaluation and ~2 Newton
steps, the vectorised walk (which dominates for batches of 400 and more transitions) and the
estimator's bincounts. At ~1,000 states the elimination solves dominate; at ~10,000 states the
model is sparse and each run's systems are solved by SuperLU one run after the other (the
factorisations dominate, the loop costs nothing). With one run the engine is slower than the
single-run loop (its fixed per-step numpy cost is not shared): it is for batches.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from typing import Any, Callable

import numpy as np
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from bilevel_agents.critics.oracle import ExactCritic
from bilevel_agents.critics.tabular import (
    MonteCarloCritic,
    SarsaCritic,
    TableCritic,
    stacked_sarsa_pass,
)
from bilevel_agents.estimators.theorem1 import (
    SurrogateTerm,
    benefit,
    follower_advantage_grad_coefficients,
    follower_q_grad_coefficients,
    guiding_weights,
    partial_derivative_mc,
)
from bilevel_agents.exact.tabular import leader_state_values, tabular_hypergradient
from bilevel_agents.families import TabularFamily
from bilevel_agents.families.tabular import draw_context, in_context, is_contextual
from bilevel_agents.leaders.sobirl import sobirl_coefficients
from bilevel_agents.runs import RunFolder, summarize
from bilevel_agents.trainer import run_config
from bilevel_envs.core import Batch
from bilevel_envs.followers.soft_value_iteration import (
    TabularSoftFollower,
    stacked_soft_value_iteration,
)
from bilevel_envs.model import StackedTabularModel
from bilevel_envs.wrappers.best_response import stacked_tabular_walk, walk_draws

__all__ = ["BATCHED_METHODS", "BatchedRun", "train_batched", "unsupported_reason"]

#: methods the engine runs (CLI names)
BATCHED_METHODS = ("bchg", "naive_pgd", "hpgd", "hpgd_mc", "hpgd_sa", "hpgd_oracle", "sobirl",
                   "exact")
_GUIDES = {"bchg": "q", "naive_pgd": None, "hpgd": "advantage", "hpgd_mc": "advantage",
           "hpgd_sa": "advantage", "hpgd_oracle": "advantage", "sobirl": "sobirl",
           "exact": "exact"}
#: settings that may differ between the runs of one batch
PER_RUN = ("seed", "lr", "sarsa_alpha")


@dataclasses.dataclass
class BatchedRun:
    """One run of a batch: how to build its leader (the single run's object, used for its
    initial state, settings and checkpoint format) and what to train.

    Attributes:
        make_leader: builds the run's leader (e.g. ``lambda: BCHG(br, seed=3, lr=0.1)``).
        iterations: total outer iterations.
        run_dir: results folder (``None``: in memory).
        spec: more of the run's specification for ``config.json`` (a sweep's identity).
        checkpoint_every: checkpoint period.
        tail: the summary's score is the mean objective over the last ``tail`` iterations.
    """

    make_leader: Callable[[], Any]
    iterations: int
    run_dir: str | os.PathLike | None = None
    spec: dict[str, Any] | None = None
    checkpoint_every: int = 500
    tail: int = 1000


def unsupported_reason(leader: Any) -> str | None:
    """Why the engine cannot run this leader (``None``: it can)."""
    name = leader.name
    if name not in BATCHED_METHODS:
        return f"method {name!r} is not batched"
    if not isinstance(leader.family, TabularFamily):
        return f"{leader.family.label} are not batched (tabular configurable MDPs only)"
    br, problem = leader.br, leader.br.problem
    fol = br.follower
    if type(fol) is not TabularSoftFollower or fol.max_iterations is not None \
            or fol.solver != "newton" or not fol.warm_start:
        return "the follower is not the exact warm-started Newton solver"
    if not hasattr(problem, "reward_tables") or problem.config_dependent_dynamics:
        return (f"{type(problem).__name__} has no stacked reward tables with θ-independent "
                "dynamics")
    opt = leader.step_options
    if (opt.optimizer != "sgd" or opt.clip_groups is not None or opt.lr_final is not None
            or opt.geometry != "euclidean"):
        return ("only plain SGD steps are batched (no Adam, clip groups, step-size decay or "
                "simplex geometry)")
    if leader.samples:
        fam = leader.family.options
        if fam.partial != "mc" or fam.refine_after is not None:
            return "only the Monte Carlo partial derivative without refinement is batched"
        critic = leader.critic
        if isinstance(critic, SarsaCritic):
            if critic.expected:
                return "expected SARSA is not batched"
        elif isinstance(critic, ExactCritic):
            if critic.gamma != problem.gamma_leader:
                return "an exact critic with another discount is not batched"
        elif critic is not None and type(critic) is not MonteCarloCritic:
            return f"critic {type(critic).__name__} is not batched"
        if _GUIDES[name] == "advantage":
            if leader.leader_value != "benefit" or leader.oracle_starts != "first":
                return "HPGD is batched with the Benefit factor and 'first' oracle starts only"
            if leader.score_clip is not None or leader.response_coordinates is not None:
                return "HPGD's tax-code options (score_clip, response_coordinates) are not batched"
        if is_contextual(problem) and getattr(leader, "oracle_batch_size", None) is not None:
            return "HPGD's oracle batch is not batched on contextual problems"
    return None


def _batch_key(leader: Any) -> tuple:
    """What must be the same for runs to share a batch (everything but :data:`PER_RUN`)."""
    from bilevel_agents.trainer import describe_problem

    hp = {k: v for k, v in leader.hparams().items() if k not in PER_RUN}
    return (leader.name, repr(sorted(hp.items(), key=str)),
            repr(sorted(describe_problem(leader.br).items(), key=str)))


class _Run:
    """One run's bookkeeping: its folder, generator, pending log rows, objectives."""

    def __init__(self, job: BatchedRun, leader: Any, stack: contextlib.ExitStack,
                 keep_history: bool):
        self.job, self.total = job, int(job.iterations)
        self.folder = None
        self.keep_history = keep_history
        self.history: list[dict[str, float]] = []
        self.summary: dict[str, Any] | None = None
        self.pending: list[dict[str, float]] = []
        if job.run_dir is not None:
            self.folder = stack.enter_context(
                RunFolder(job.run_dir, run_config(leader, self.total, job.spec)))
            self.summary = self.folder.summary()
            if self.summary is not None:  # finished: read back, not redone
                self.history = self.folder.read_log() if keep_history else []
                return
            self.folder.restore(leader)
            self.history = self.folder.open_log(leader.iteration)
        #: the objectives so far (the summary's score); rows are kept only if asked
        self.objectives = [r.get("objective", math.nan) for r in self.history]
        if not keep_history:
            self.history = []
        self.state = leader.state_dict()  # the template of this run's checkpoints
        self.rng = leader.rng

    @property
    def done(self) -> bool:
        return self.summary is not None

    def record(self, row: dict[str, float]) -> None:
        self.objectives.append(row["objective"])
        self.pending.append(row)
        if self.keep_history:
            self.history.append(row)

    def flush(self) -> None:
        """Append the pending rows to the log."""
        if self.folder is not None:
            for row in self.pending:
                self.folder.append(row)
        self.pending = []

    def finish(self, theta: np.ndarray) -> None:
        self.flush()
        self.summary = {**summarize([{"objective": o} for o in self.objectives],
                                    self.job.tail), "final_theta": theta}
        if self.folder is not None:
            self.folder.write_summary(self.summary)
            self.summary = self.folder.summary()


class _Engine:
    """The stacked state of the active runs of one batch and one outer iteration of all."""

    def __init__(self, leaders: list[Any], runs: list[_Run]):
        first = leaders[0]
        self.name, self.br0 = first.name, first.br
        self.problem = problem = first.br.problem
        self.base = problem.tabular_model()
        self.S, self.B = problem.n_states, problem.n_actions
        self.beta = first.br.beta
        self.tol = first.br.follower.tol
        self.guide = _GUIDES[self.name]
        self.samples = first.samples
        self.max_norm = first.step_options.max_grad_norm
        self.space = first.br.config_space
        self.limit = first.br.max_episode_steps
        self.runs = runs
        st = [r.state for r in runs]
        self.theta = np.stack([np.asarray(s["theta"], dtype=np.float64) for s in st])
        self.it = np.array([int(s["iteration"]) for s in st])
        res = [s["best_response"]["follower"]["result"] for s in st]
        self.q = np.stack([r["q"] for r in res])
        self.v = np.stack([r["v"] for r in res])
        self.policy = np.stack([r["policy"] for r in res])
        self.f_iter = np.array([int(r["iterations"]) for r in res])
        self.f_res = np.array([float(r["residual"]) for r in res])
        self.carry: dict[str, Any] = {}  # the follower's carried work (stacked_soft_value_iteration)
        self.lr = np.array([ld.step_options.lr for ld in leaders])
        critic = first.critic
        self.critic_kind = (None if critic is None else "sarsa" if isinstance(critic, SarsaCritic)
                            else "mc" if isinstance(critic, MonteCarloCritic) else "exact")
        if self.critic_kind is not None:
            self.table = np.stack([s["critic"]["table"] for s in st]) \
                if self.critic_kind == "sarsa" else np.zeros((len(runs), self.S, self.B))
        if self.critic_kind == "sarsa":
            self.alpha = np.array([ld.critic.alpha for ld in leaders])
        if self.samples:
            fam = first.family.options
            self.batch_size, self.n_envs = fam.batch_size, fam.n_envs
            self.oracle = getattr(first, "oracle_batch_size", None)
            self.oracle_envs = getattr(first, "oracle_n_envs", None)
            self.unvisited = getattr(first, "unvisited", "drop")
            #: one context per outer iteration from each run's generator (HPGD's protocol)
            self.per_iteration = fam.contexts == "per_iteration"
        self._tables()

    # ------------------------------------------------------------------ state
    def _tables(self) -> None:
        self.r_f, self.r_l, _ = self.problem.reward_tables(self.theta)
        self.model = StackedTabularModel(self.base, self.r_f, self.r_l)

    def keep(self, mask: np.ndarray) -> None:
        """Drop the runs that are not in ``mask`` (finished)."""
        self.runs = [r for r, k in zip(self.runs, mask) if k]
        for name in ("theta", "it", "q", "v", "policy", "f_iter", "f_res", "lr", "table",
                     "alpha"):
            if hasattr(self, name):
                setattr(self, name, getattr(self, name)[mask])
        self.carry.clear()
        self._tables()

    def checkpoint_state(self, i: int) -> dict[str, Any]:
        """Run ``i``'s state in :meth:`Leader.state_dict`'s format (its template, updated)."""
        run = self.runs[i]
        state = dict(run.state)
        theta = self.theta[i].copy()
        state.update(theta=theta, iteration=int(self.it[i]), rng=run.rng.bit_generator.state)
        br = dict(state["best_response"])
        br["config"] = theta.copy()
        br["follower"] = {"result": {"q": self.q[i].copy(), "v": self.v[i].copy(),
                                     "policy": self.policy[i].copy(),
                                     "iterations": int(self.f_iter[i]),
                                     "residual": float(self.f_res[i])}}
        state["best_response"] = br
        if self.critic_kind is not None:
            state["critic"] = {"table": self.table[i].copy()}
        return state

    # ------------------------------------------------------------------ sampling
    def _draw(self, rng: np.random.Generator, n: int, envs: int,
              initial: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """One rollout's draws from one run's generator, in the single walk's order."""
        return walk_draws(self.problem, rng, n // envs, envs, initial)

    def _rollout(self, draws: list[tuple[np.ndarray, np.ndarray]], n: int, envs: int) -> Batch:
        return stacked_tabular_walk(self.problem, self.policy, self.r_f, self.r_l, n // envs,
                                    envs, np.stack([d[0] for d in draws]),
                                    np.stack([d[1] for d in draws]), self.limit)

    # ------------------------------------------------------------------ one iteration
    def step(self) -> list[dict[str, float]]:
        """One outer iteration of every active run; returns their log rows."""
        n_runs = len(self.runs)
        gl, gf = self.problem.gamma_leader, self.problem.gamma_follower
        v_l = self._leader_state_values(gl)  # exact J at the batch's θ
        objective = np.matmul(v_l[:, None, :], self.model.mu0[:, None])[:, 0, 0]
        q_l = None
        if self.critic_kind == "exact":  # leader_values' Q_L
            q_l = self.model.r_leader + gl * self.model.continuation_values(v_l)
        metrics: dict[str, np.ndarray] = {}
        if not self.samples:
            grad = tabular_hypergradient(self.problem, self.theta, self.policy, self.beta,
                                         follower_v=self.v, model=self.model)
        else:
            grad = self._estimate(metrics, q_l)
        grad_norm = np.sqrt(np.matmul(grad[:, None, :], grad[:, :, None])[:, 0, 0])
        bad = ~np.isfinite(grad).all(axis=1)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise FloatingPointError(f"non-finite gradient estimate at iteration "
                                     f"{self.it[i]} of run {self.runs[i].job.run_dir}")
        step = grad
        if self.max_norm is not None:
            clip = grad_norm > self.max_norm
            scale = np.where(clip, self.max_norm / np.where(clip, grad_norm, 1.0), 1.0)
            step = np.where(clip[:, None], grad * scale[:, None], grad)
        self.theta = np.clip(self.theta + self.lr[:, None] * step, self.space.low,
                             self.space.high)
        self._tables()
        sol = stacked_soft_value_iteration(self.model, self.beta, gf, self.q, tol=self.tol,
                                           carry=self.carry)
        self.q, self.v, self.policy = sol.q, sol.v, sol.policy
        self.f_iter, self.f_res = sol.iterations, sol.residual
        rows = []
        columns = {"objective": objective, "grad_norm": grad_norm,
                   "rejected_step": np.zeros(n_runs), **metrics}
        lists = {k: v.tolist() for k, v in columns.items()}
        for i in range(n_runs):
            row = {"iteration": float(self.it[i])}
            row.update({k: v[i] for k, v in lists.items()})
            rows.append(row)
        self.it = self.it + 1
        return rows

    def _leader_state_values(self, gl: float) -> np.ndarray:
        """:func:`~bilevel_agents.exact.tabular.leader_state_values` of the batch (with the
        elimination solver, ``P_g`` from the follower's carried policy, runs on the last axis:
        the same numbers)."""
        ops = self.model.operators
        if ops is None or self.carry.get("q") is not self.q:
            return leader_state_values(self.model, self.policy, gl)
        r_pi = (self.policy * self.model.r_leader).sum(axis=-1)
        v = ops.plan.solve(ops.cells(self.carry["G"]), gl, np.ascontiguousarray(r_pi.T))
        return np.ascontiguousarray(v.T)

    def _estimate(self, metrics: dict[str, np.ndarray], q_exact: np.ndarray) -> np.ndarray:
        n_runs, S, B = len(self.runs), self.S, self.B
        gl, gf = self.problem.gamma_leader, self.problem.gamma_follower
        n, envs = self.batch_size, self.n_envs
        on, oracle, orders, contexts = [], [], [], []
        for run in self.runs:  # each run's generator, in the single run's order
            rng = run.rng
            context = draw_context(self.problem, rng) if self.per_iteration else None
            with in_context(self.problem, context):  # the starts of the drawn context
                on.append(self._draw(rng, n, envs, None))
            contexts.append(context)
            if self.oracle is not None:
                starts = rng.integers(0, S, size=self.oracle_envs)
                oracle.append(self._draw(rng, self.oracle, self.oracle_envs, starts))
            if self.critic_kind == "sarsa":
                orders.append(rng.permutation(self.oracle or n))
        batch = self._rollout(on, n, envs)
        stats = batch if self.oracle is None else self._rollout(oracle, self.oracle,
                                                                self.oracle_envs)
        run_of = np.repeat(np.arange(n_runs), n)
        finished = np.bincount(run_of, weights=batch.terminated | batch.truncated,
                               minlength=n_runs)
        metrics["episodes"] = finished
        if self.per_iteration:
            metrics["context"] = np.array(contexts, dtype=np.float64)
        if stats is not batch:
            m = len(stats) // n_runs
            metrics["oracle_episodes"] = np.bincount(np.repeat(np.arange(n_runs), m),
                                                     weights=stats.time == 0,
                                                     minlength=n_runs)
        # the critic, over N·S states (keys never mix runs)
        critic = None
        if self.critic_kind == "sarsa":
            self.table, rms = stacked_sarsa_pass(self.table, stats, np.stack(orders),
                                                 self.alpha, gl)
            metrics["critic_td_rms"] = rms
            critic = TableCritic()
            critic.table = self.table.reshape(n_runs * S, B)
        elif self.critic_kind == "mc":
            critic = MonteCarloCritic(n_runs * S, B, gamma=gl)
            critic.update(stats, None)
            self.table = critic.table.reshape(n_runs, S, B)
        elif self.critic_kind == "exact":
            self.table = q_exact
            critic = TableCritic()
            critic.table = q_exact.reshape(n_runs * S, B)
        policy = self.policy.reshape(n_runs * S, B)
        shim = type("StackedFollower", (), {"policy": policy})()
        # the estimate: the pure estimator functions on the flat batch of all runs
        starts = np.maximum(np.bincount(run_of, weights=batch.time == 0, minlength=n_runs), 1)
        n_starts = starts[run_of]
        term = SurrogateTerm.on(batch, partial_derivative_mc(batch, batch.obs, n_runs * S, gl,
                                                              normaliser=n_starts))
        keys, n_keys = batch.obs * B + batch.actions, n_runs * S * B
        if self.guide in ("q", "advantage"):
            factor = benefit(critic.q(batch.obs, batch.actions), critic.v(batch.obs, shim))
            if stats is not batch and self.unvisited == "drop":
                seen = np.bincount(stats.obs * B + stats.actions, minlength=n_keys)[keys] > 0
                factor = np.where(seen, factor, 0.0)
            norm = np.maximum(finished, 1.0)[run_of]
            w = guiding_weights(batch, factor, self.beta, gl, norm)
            next_v = self.v.reshape(-1)[stats.next_obs]
            if self.guide == "q":
                coef = follower_q_grad_coefficients(batch, w, keys, n_keys, gf, next_v)
            else:
                coef = follower_advantage_grad_coefficients(
                    batch, w, keys, n_keys, batch.obs, n_runs * S, gf, next_v, stats,
                    stats.obs * B + stats.actions, stats.obs)
            term = term + SurrogateTerm.on(stats, coef)
        elif self.guide == "sobirl":
            coef, table = sobirl_coefficients(batch, critic.q(batch.obs, batch.actions),
                                              policy, self.beta, normaliser=n_starts)
            term = term + SurrogateTerm.on(batch, coef, follower_table=table)
        return term.gradient(self.problem, self.theta)


_MALLOC_TUNED = False


def _keep_freed_memory() -> None:
    """Ask glibc's malloc to keep freed memory in the process (once per process).

    A batch step allocates and frees many arrays of a few hundred KB to a few MB (the stacked
    tables of all runs); by default glibc returns such blocks to the system and the next
    step pays a page fault for every 4 KB page again (on virtual machines a sizeable part of
    the step). With a 32 MB mmap threshold and a 512 MB trim threshold the process keeps
    them (its resident memory stays at its peak). No effect elsewhere than glibc.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return
    _MALLOC_TUNED = True
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 512 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def train_batched(jobs: list[BatchedRun], *, progress: bool = True,
                  keep_history: bool = False) -> list[dict[str, Any]]:
    """Train the runs of one batch together (same method, problem and settings but
    :data:`PER_RUN`); each resumes from its folder, finished ones are read back.

    Returns:
        One dict per job, in order: ``summary`` (the run's summary: iterations, objectives,
        ``final_theta``) and, with ``keep_history``, ``history`` (its rows, as
        :func:`~bilevel_agents.trainer.train` returns them).
    Raises:
        ValueError: a run the engine does not support (:func:`unsupported_reason`), or runs
            that cannot share a batch.
    """
    _keep_freed_memory()
    with threadpool_limits(limits=1, user_api="blas"), contextlib.ExitStack() as stack:
        leaders, runs, key = [], [], None
        for job in jobs:
            leader = job.make_leader()
            reason = unsupported_reason(leader)
            if reason is not None:
                raise ValueError(f"the batched engine cannot run {job.run_dir or leader.name}: "
                                 f"{reason}")
            k = _batch_key(leader)
            if key is None:
                key = k
            elif k != key:
                raise ValueError("runs of one batch must differ only in "
                                 f"{', '.join(PER_RUN)}; {job.run_dir} differs")
            run = _Run(job, leader, stack, keep_history)
            leaders.append(leader)
            runs.append(run)
        active = [i for i, r in enumerate(runs) if not r.done]
        if active:
            _train(leaders, runs, active, progress)
        out = []
        for run in runs:
            item: dict[str, Any] = {"summary": run.summary}
            if keep_history:
                item["history"] = run.history
            out.append(item)
        return out


def _train(leaders: list[Any], runs: list[_Run], active: list[int], progress: bool) -> None:
    engine = _Engine([leaders[i] for i in active], [runs[i] for i in active])
    todo = int(sum(r.total for r in engine.runs) - engine.it.sum())
    bar = tqdm(total=todo, disable=not progress, dynamic_ncols=True, leave=False,
               desc=f"{engine.name} ×{len(engine.runs)} (batched)")
    try:
        while engine.runs:
            # a run resumed at its last iteration has nothing left but its summary
            finished = np.array([it >= r.total for it, r in zip(engine.it, engine.runs)])
            if finished.any():
                for i in np.flatnonzero(finished):
                    engine.runs[i].finish(engine.theta[i].copy())
                engine.keep(~finished)
                continue
            rows = engine.step()
            for i, (run, row) in enumerate(zip(engine.runs, rows)):
                run.record(row)
                it = int(engine.it[i])
                if it % run.job.checkpoint_every == 0 or it == run.total:
                    run.flush()
                    if run.folder is not None:
                        run.folder.save_checkpoint(engine.checkpoint_state(i))
            bar.update(len(rows))
            if rows and math.isfinite(rows[0]["objective"]):
                bar.set_postfix(J=f"{rows[0]['objective']:.4f}", refresh=False)
    finally:
        for run in engine.runs:
            run.flush()
        bar.close()
