"""Building thermal control benchmarks: solver speed, estimator accuracy, critic quality vs cost.

Run ``python -m bilevel_agents.benchmarks.bench_building`` (about 2 minutes on 2 cores;
``--authors-critic`` adds the authors' 5000-step cold-start critic fit, several minutes more;
``--quick``: a smoke run of a few seconds). Every number is measured in the same run and
printed as a ratio where a comparison is meant:

1. follower: scipy DARE vs the authors' Riccati iteration (tol 1e-6 from Q̄);
2. exact objective and hypergradient cost; one 10^4-transition rollout;
3. hypergradient estimators at θ = 0 with the *exact* leader critic (so only sampling noise
   is measured): per-batch standard deviation and cosine to the exact hypergradient, for the
   plain Theorem 1 estimator and with each variance-reduction device of
   :mod:`bilevel_agents.families.continuous`;
4. the MLP critic: Benefit correlation with the exact Benefit and the resulting gradient cosine
   vs wall time, warm-started (ours) vs re-fit from scratch (authors);
5. one full BC-HG iteration (rollout + critic update + estimate).
"""

from __future__ import annotations

import sys

import numpy as np

from bilevel_agents import BCHG, NaivePGD
from bilevel_agents.benchmarks.harness import (
    Report,
    parser,
    single_threaded,
    timed,
    warm_up_torch,
)
from bilevel_agents.critics import ExactBuildingCritic
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_agents.exact.building import exact_leader_critic, partial_gradient
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.followers.maxent_lqr import riccati_iteration, solve_discounted_dare
from bilevel_envs.wrappers import BestResponse


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def bench_solvers(report: Report, br: BestResponse, repeat: int) -> None:
    m = br.problem.lqr_model()
    report.section("follower and exact objective (θ = 0)")
    t_dare, P = timed(lambda: solve_discounted_dare(m.A, m.B, m.Q, m.R, m.gamma), repeat)
    t_it, (P_it, k) = timed(lambda: riccati_iteration(m.A, m.B, m.Q, m.R, m.gamma, tol=1e-6),
                            min(repeat, 2))
    report.time("follower: scipy DARE", t_dare)
    report.time(f"follower: Riccati iteration (tol 1e-6, {k} iterations)", t_it,
                f"max rel diff {np.abs(P - P_it).max() / np.abs(P).max():.1e}")
    report.ratio("ratio Riccati iteration / DARE", t_it, t_dare)
    t_j, j = timed(lambda: leader_objective(br, np.zeros(8)), repeat)
    t_g, _ = timed(lambda: hypergradient(br, np.zeros(8)), repeat)
    t_r, _ = timed(lambda: br.rollout(10_000, 100, seed=0), repeat)
    report.time("exact leader objective J(0)", t_j, f"J(0) = {j:.3f}")
    report.time("exact hypergradient ∇J(0)", t_g)
    report.time("rollout of 10^4 transitions (100 streams)", t_r)


def bench_estimators(report: Report, br: BestResponse, reps: int) -> None:
    g, gp = hypergradient(br), partial_gradient(br)
    report.section(f"estimators at θ = 0, exact leader critic: exact |∇J| = "
                   f"{np.linalg.norm(g):.1f}, |∂J| = {np.linalg.norm(gp):.1f}; {reps} batches "
                   f"of 10^4 transitions")
    configs = [
        ("NAIVE partial, plain", NaivePGD, dict(score_baseline=False), gp),
        ("NAIVE partial, score baseline", NaivePGD, {}, gp),
        ("BC-HG plain Theorem 1", BCHG,
         dict(score_baseline=False, rao_blackwell=False, state_baseline=False), g),
        ("BC-HG + score baselines", BCHG,
         dict(rao_blackwell=False, state_baseline=False), g),
        ("BC-HG + score baselines + state baseline", BCHG,
         dict(rao_blackwell=False), g),
        ("BC-HG + Rao-Blackwell (no state baseline)", BCHG,
         dict(state_baseline=False), g),
        ("BC-HG + Rao-Blackwell + state baseline", BCHG, {}, g),
    ]
    for label, cls, kw, target in configs:
        leader = cls(br, batch_size=10_000, n_envs=100, critic=ExactBuildingCritic(),
                     theta0=np.zeros(8), seed=0, **kw)
        estimates: list[np.ndarray] = []
        dt, _ = timed(lambda: estimates.append(leader.estimate_gradient()), reps)
        est = np.array(estimates)
        sd = float(np.sqrt(est.var(0).sum()))
        report.time(label, dt, f"sd(total) {sd:9.1f}  cos(single) "
                    f"{np.mean([_cos(e, target) for e in est]):6.3f}  cos(mean) "
                    f"{_cos(est.mean(0), target):6.3f}  (time per estimate)")


def bench_critic(report: Report, br: BestResponse, iterations: int, authors: bool) -> None:
    """Critic quality vs cost along a fixed θ (the first iterations of a run)."""
    exact = exact_leader_critic(br)
    g = hypergradient(br)
    test = br.rollout(10_000, 100, seed=999)
    b_true = exact.q(test.obs, test.actions) - exact.v(test.obs)

    def quality(critic) -> float:
        b_hat = critic.q(test.obs, test.actions) - critic.v(test.obs, br)
        return float(np.corrcoef(b_true, b_hat)[0, 1])

    report.section("MLP critic: Benefit correlation and gradient cosine vs time")
    schemes = [("warm 50 x mb1000 (ours)", "ours",
                dict(steps=50, first_steps=1000, minibatch=1000)),
               ("warm 200 x mb1000", "warm 200", dict(steps=200, first_steps=1000,
                                                      minibatch=1000))]
    if authors:
        schemes.append(("cold 5000 full-batch lr1e-4 (authors)", "authors",
                        dict(steps=5000, first_steps=5000, minibatch=None, lr=1e-4,
                             warm_start=False, dtype="float64")))
    per_iteration = {}
    for label, short, kw in schemes:
        n_it = iterations if kw.get("warm_start", True) else 2
        leader = BCHG(br, batch_size=10_000, n_envs=100, theta0=np.zeros(8), seed=0,
                      critic_kwargs=dict(seed=0, **kw))
        times, cosines = [], []
        for _ in range(n_it):
            t, est = timed(leader.estimate_gradient, 1)
            times.append(t)
            cosines.append(_cos(est, g))
        rest = float(np.median(times[1:])) if len(times) > 1 else float("nan")
        per_iteration[short] = rest
        report.time(f"{label}: first estimate", times[0])
        report.time(f"{label}: then per estimate", rest,
                    f"Benefit corr after {n_it} its {quality(leader.critic):.3f}; gradient "
                    f"cos (last 5) {np.mean(cosines[-5:]):.3f}")
    labels = list(per_iteration)
    for label in labels[1:]:
        report.ratio(f"ratio {label} / {labels[0]} (per estimate)", per_iteration[label],
                     per_iteration[labels[0]])


def main(argv: list[str] | None = None) -> int:
    ap = parser(__doc__, quick_help="2 batches per estimator, 3 critic iterations")
    ap.add_argument("--reps", type=int, default=8, help="batches per estimator")
    ap.add_argument("--critic-iterations", type=int, default=30)
    ap.add_argument("--authors-critic", action="store_true",
                    help="also time the authors' 5000-step cold-start critic")
    args = ap.parse_args(argv)
    if args.quick:
        args.reps, args.critic_iterations = 2, 3
    report = Report("bench_building", args, width=56)
    warm_up_torch()
    with single_threaded(args.blas_threads):
        br = BestResponse(BuildingThermalEnv(), beta=0.1)
        bench_solvers(report, br, 2 if args.quick else 5)
        bench_estimators(report, br, args.reps)
        bench_critic(report, br, args.critic_iterations, args.authors_critic)
        report.section("one BC-HG iteration (10^4 transitions, MLP critic 50 steps, estimate, "
                       "step)")
        leader = BCHG(br, batch_size=10_000, n_envs=100, lr=0.1, seed=0)
        leader.update()
        t, _ = timed(leader.update, 2 if args.quick else 5)
        report.time("BCHG.update()", t)
        report.value("2000 iterations (one run)", f"{2000 * t / 60:8.1f} min")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
