"""Building thermal control benchmarks: solver speed, estimator accuracy, critic quality vs cost.

Run ``python benchmarks/bench_building.py`` (about 2 minutes on 2 cores; ``--authors-critic``
adds the authors' 5000-step cold-start critic fit, several minutes more). Every number is
measured in the same run and printed as a ratio where a comparison is meant:

1. follower: scipy DARE vs the authors' Riccati iteration (tol 1e-6 from Q̄);
2. exact objective and hypergradient cost; one 10^4-transition rollout;
3. hypergradient estimators at θ = 0 with the *exact* leader critic (so only sampling noise
   is measured): per-batch standard deviation and cosine to the exact hypergradient, for the
   plain Theorem 1 estimator and with each variance-reduction device of
   :mod:`bilevel_agents.continuous`;
4. the MLP critic: Benefit correlation with the exact Benefit and the resulting gradient cosine
   vs wall time, warm-started (ours) vs re-fit from scratch (authors);
5. one full BC-HG iteration (rollout + critic update + estimate).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bilevel_agents.continuous import ContinuousBCHG, ContinuousNaivePGD
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_agents.exact_building import ExactBuildingCritic, exact_leader_critic, partial_gradient
from bilevel_agents.mlp_critic import MLPCritic
from bilevel_envs.envs.building_thermal import BuildingThermalEnv
from bilevel_envs.followers.maxent_lqr import riccati_iteration, solve_discounted_dare
from bilevel_envs.wrappers import BestResponse


def _timeit(fn, repeat=5):
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def bench_solvers(br):
    m = br.problem.lqr_model()
    t_dare, P = _timeit(lambda: solve_discounted_dare(m.A, m.B, m.Q, m.R, m.gamma))
    t_it, (P_it, k) = _timeit(lambda: riccati_iteration(m.A, m.B, m.Q, m.R, m.gamma, tol=1e-6),
                              repeat=2)
    print(f"[follower] DARE {t_dare * 1e3:.2f} ms; Riccati iteration (tol 1e-6, {k} its) "
          f"{t_it * 1e3:.2f} ms: ratio {t_it / t_dare:.1f}x; "
          f"max rel diff {np.abs(P - P_it).max() / np.abs(P).max():.1e}")
    t_j, j = _timeit(lambda: leader_objective(br, np.zeros(8)))
    t_g, _ = _timeit(lambda: hypergradient(br, np.zeros(8)))
    t_r, _ = _timeit(lambda: br.rollout(10_000, 100, seed=0))
    print(f"[exact] J(0) = {j:.3f} in {t_j * 1e3:.1f} ms; hypergradient {t_g * 1e3:.1f} ms; "
          f"rollout of 10^4 transitions {t_r * 1e3:.1f} ms")


def bench_estimators(br, reps):
    g, gp = hypergradient(br), partial_gradient(br)
    print(f"[estimators] exact |∇J| = {np.linalg.norm(g):.1f}, |∂J| = {np.linalg.norm(gp):.1f}; "
          f"{reps} batches of 10^4 transitions, exact leader critic")
    configs = [
        ("NAIVE partial, plain", ContinuousNaivePGD, dict(score_baseline=False), gp),
        ("NAIVE partial, score baseline", ContinuousNaivePGD, {}, gp),
        ("BC-HG plain Theorem 1", ContinuousBCHG,
         dict(score_baseline=False, rao_blackwell=False, state_baseline=False), g),
        ("BC-HG + score baselines", ContinuousBCHG,
         dict(rao_blackwell=False, state_baseline=False), g),
        ("BC-HG + score baselines + state baseline", ContinuousBCHG,
         dict(rao_blackwell=False), g),
        ("BC-HG + Rao-Blackwell (no state baseline)", ContinuousBCHG,
         dict(state_baseline=False), g),
        ("BC-HG + Rao-Blackwell + state baseline", ContinuousBCHG, {}, g),
    ]
    for label, cls, kw, target in configs:
        leader = cls(br, batch_size=10_000, n_envs=100, critic=ExactBuildingCritic(),
                     theta0=np.zeros(8), seed=0, **kw)
        t = time.perf_counter()
        est = np.array([leader.estimate_gradient() for _ in range(reps)])
        dt = (time.perf_counter() - t) / reps
        sd = float(np.sqrt(est.var(0).sum()))
        print(f"  {label:44s} sd(total) {sd:9.1f}  cos(single) "
              f"{np.mean([_cos(e, target) for e in est]):6.3f}  cos(mean) "
              f"{_cos(est.mean(0), target):6.3f}  {dt * 1e3:6.0f} ms/estimate")


def bench_critic(br, iterations, authors):
    """Critic quality vs cost along a fixed θ (the first iterations of a run)."""
    exact = exact_leader_critic(br)
    g = hypergradient(br)
    test = br.rollout(10_000, 100, seed=999)
    b_true = exact.q(test.obs, test.actions) - exact.v(test.obs)

    def quality(critic):
        b_hat = critic.q(test.obs, test.actions) - critic.v(test.obs, br)
        return float(np.corrcoef(b_true, b_hat)[0, 1])

    schemes = [("warm 50 x mb1000 (ours)", dict(steps=50, first_steps=1000, minibatch=1000)),
               ("warm 200 x mb1000", dict(steps=200, first_steps=1000, minibatch=1000))]
    if authors:
        schemes.append(("cold 5000 full-batch lr1e-4 (authors)",
                        dict(steps=5000, first_steps=5000, minibatch=None, lr=1e-4,
                             warm_start=False, dtype="float64")))
    for label, kw in schemes:
        n_it = iterations if kw.get("warm_start", True) else 2
        leader = ContinuousBCHG(br, batch_size=10_000, n_envs=100, theta0=np.zeros(8), seed=0,
                                critic_kwargs=dict(seed=0, **kw))
        times, cosines = [], []
        for it in range(n_it):
            t = time.perf_counter()
            est = leader.estimate_gradient()
            times.append(time.perf_counter() - t)
            cosines.append(_cos(est, g))
        rest = np.median(times[1:]) if len(times) > 1 else float("nan")
        print(f"[critic] {label:40s} first {times[0]:6.1f} s, then {rest:5.2f} s/it;"
              f" Benefit corr after {n_it} its {quality(leader.critic):.3f}; gradient cos "
              f"(last 5) {np.mean(cosines[-5:]):.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=8, help="batches per estimator")
    ap.add_argument("--critic-iterations", type=int, default=30)
    ap.add_argument("--authors-critic", action="store_true",
                    help="also time the authors' 5000-step cold-start critic")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    br = BestResponse(BuildingThermalEnv(), beta=0.1)
    bench_solvers(br)
    bench_estimators(br, args.reps)
    bench_critic(br, args.critic_iterations, args.authors_critic)
    leader = ContinuousBCHG(br, batch_size=10_000, n_envs=100, lr=0.1, seed=0)
    leader.update()
    t, _ = _timeit(leader.update, repeat=5)
    print(f"[bchg] one BC-HG iteration (10^4 transitions, MLP critic 50 steps, estimate, step): "
          f"{t:.2f} s; 2000 iterations ≈ {2000 * t / 60:.1f} min")


if __name__ == "__main__":
    main()
