"""Four-Rooms speed benchmark: follower solves, exact hypergradient, batched rollouts.

Everything is measured in one run on this machine and printed as a table with ratios:

* follower soft best response at 104 states (the paper's map) and at ~10^4 states
  (``size=103``): cold Newton solve (from Q = 0), warm re-solve after a small change of θ
  (what ``BestResponse.set_config`` does every outer iteration), and plain soft value
  iteration (``solver="value_iteration"``) from Q = 0, with the Newton / VI ratio;
* exact leader objective and exact hypergradient (implicit differentiation);
* rollout throughput: ``BestResponse.rollout`` (many episodes stepped together in numpy, and
  the paper's batch of 100 transitions from one stream) versus a plain single-env Gymnasium
  loop ``env.step(br.follower_action(obs))`` over the same number of transitions.

Usage::

    python -m bilevel_agents.benchmarks.bench_four_rooms [--quick] [--beta 0.001] [--blas-threads 1]

Timings are medians over repeats (wall clock). BLAS is limited to one thread by default: the
dense 104-state solves are tiny, and multi-threaded OpenBLAS on a busy 2-core machine can be
100× slower for them (pass ``--blas-threads 0`` to keep the default).
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_agents.benchmarks.harness import (
    Report,
    parser,
    single_threaded,
    timed,
)
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_envs.followers import soft_value_iteration
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/FourRooms-v0"
ROLLOUT_TARGET = 20.0


def bench_solver(report: Report, size: int, beta: float, quick: bool, rng) -> None:
    env = gym.make(ENV_ID, size=size)
    problem = env.unwrapped
    S = problem.n_states
    report.section(f"follower and exact gradient, size={size} ({S} states, β={beta})")
    theta = rng.normal(0.0, 0.01, problem.config_space.shape)
    problem.set_config(theta)
    model = problem.tabular_model()
    gamma = problem.gamma_follower
    big = S > 1000
    reps = 3 if (quick or big) else 20

    t_build, _ = timed(problem.tabular_model, reps)
    report.time("build tabular model", t_build)

    t_newton, res = timed(lambda: soft_value_iteration(model, beta, gamma), reps)
    report.time("Newton solve, cold (Q = 0)", t_newton,
                f"{res.iterations} steps, residual {res.residual:.1e}")
    q_cold = res.q

    t_vi, res_vi = timed(
        lambda: soft_value_iteration(model, beta, gamma, solver="value_iteration"),
        1 if big else max(2, reps // 4))
    report.time("plain soft value iteration, cold (Q = 0)", t_vi,
                f"{res_vi.iterations} backups, residual {res_vi.residual:.1e}")
    report.ratio("ratio VI / Newton (cold)", t_vi, t_newton,
                 f"max|ΔQ| = {np.abs(res_vi.q - q_cold).max():.1e}")

    # warm re-solve after a small step in θ, as in an outer iteration of a leader
    step = rng.normal(0.0, 0.01, theta.shape)
    problem.set_config(theta + step)
    model2 = problem.tabular_model()
    t_warm, res_w = timed(lambda: soft_value_iteration(model2, beta, gamma, q0=q_cold), reps)
    report.time("Newton solve, warm (Q0 = Q* at θ, new θ + δ)", t_warm,
                f"{res_w.iterations} steps")
    t_warm_vi, res_wvi = timed(lambda: soft_value_iteration(
        model2, beta, gamma, q0=q_cold, solver="value_iteration"), 1 if big else 3)
    report.time("plain soft value iteration, warm (same Q0)", t_warm_vi,
                f"{res_wvi.iterations} backups")
    report.ratio("ratio VI / Newton (warm)", t_warm_vi, t_warm)
    report.ratio("ratio Newton cold / warm", t_newton, t_warm)

    br = BestResponse(env, beta=beta)
    state = {"theta": theta}

    def perturb() -> np.ndarray:
        state["theta"] = state["theta"] + step
        return state["theta"]

    t_set, _ = timed(br.set_config, reps, setup=perturb)
    report.time("BestResponse.set_config(θ + δ)  (warm, incl. model)", t_set,
                f"{br.follower.result.iterations} Newton steps")

    t_obj, _ = timed(lambda: leader_objective(br), reps)
    report.time("exact leader objective J(θ)", t_obj)
    t_grad, grad = timed(lambda: hypergradient(br), reps)
    report.time("exact hypergradient ∇J(θ)", t_grad, f"|∇J| = {np.linalg.norm(grad):.3g}")
    t_both, _ = timed(lambda th: (br.set_config(th), hypergradient(br)), reps, setup=perturb)
    report.time("outer step: set_config + hypergradient", t_both)


def plain_loop(env: gym.Env, br: BestResponse, n_transitions: int, seed: int) -> None:
    """A user's single-env Gymnasium loop over ``n_transitions`` steps."""
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    for _ in range(n_transitions):
        obs, _r, term, trunc, _info = env.step(br.follower_action(obs, rng))
        if term or trunc:
            obs, _ = env.reset()


def bench_rollouts(report: Report, beta: float, quick: bool, rng) -> float:
    br = BestResponse(gym.make(ENV_ID), beta=beta)
    br.set_config(rng.normal(0.0, 0.01, 105))
    n_envs, steps = (200, 50) if quick else (1000, 100)
    n = n_envs * steps
    report.section(f"rollout throughput (104 states, β={beta})")

    t_plain, _ = timed(lambda env: plain_loop(env, br, n, seed=0), 1 if quick else 2,
                       setup=lambda: gym.make(ENV_ID))
    report.time(f"plain gym loop, {n} steps: env.step(br.follower_action(obs))", t_plain,
                f"{n / t_plain:,.0f} transitions/s")

    t_batch, _batch = timed(lambda: br.rollout(n, n_envs), 3 if quick else 5)
    report.time(f"BestResponse.rollout({n}, n_envs={n_envs})", t_batch,
                f"{n / t_batch:,.0f} transitions/s")
    met = "met" if t_plain / t_batch >= ROLLOUT_TARGET else "NOT met"
    ratio = report.ratio("ratio rollout / plain loop (throughput)", t_plain, t_batch,
                         f"target ≥ {ROLLOUT_TARGET:.0f}×: {met}")

    # the paper's batch: 100 transitions from one stream, repeated
    k = 50 if quick else 200
    t_small, _ = timed(lambda: [br.rollout(100, 1) for _ in range(k)], 3)
    per = t_small / k
    report.time("BestResponse.rollout(100, n_envs=1)  [paper batch]", per,
                f"{100 / per:,.0f} transitions/s")
    report.ratio("ratio vs plain loop over 100 steps", t_plain * 100 / n, per)
    for ne in (10, 100):
        t_w, _ = timed(lambda ne=ne: br.rollout(100 * ne, ne), 5)
        report.time(f"BestResponse.rollout({100 * ne}, n_envs={ne})", t_w,
                    f"{100 * ne / t_w:,.0f} transitions/s")
    big = BestResponse(gym.make(ENV_ID, size=103), beta=beta)
    t_big, _ = timed(lambda: big.rollout(n, n_envs), 3)
    report.time(f"size=103: BestResponse.rollout({n}, n_envs={n_envs})", t_big,
                f"{n / t_big:,.0f} transitions/s")
    return ratio


def main(argv: list[str] | None = None) -> int:
    p = parser(__doc__, quick_help="fewer repeats; the large map at size=53 (2504 states) "
               "instead of 103")
    p.add_argument("--beta", type=float, default=0.001)
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if the rollout speed-up is below the target")
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    report = Report("bench_four_rooms", args)
    with single_threaded(args.blas_threads):
        bench_solver(report, 13, args.beta, args.quick, rng)
        bench_solver(report, 53 if args.quick else 103, args.beta, args.quick, rng)
        ratio = bench_rollouts(report, args.beta, args.quick, rng)
    return report.finish(1 if args.strict and ratio < ROLLOUT_TARGET else 0)


if __name__ == "__main__":
    sys.exit(main())
