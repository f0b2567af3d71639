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

    python benchmarks/bench_four_rooms.py [--quick] [--beta 0.001] [--blas-threads 1]

Timings are medians over repeats (wall clock, ``time.perf_counter``). BLAS is limited to one
thread by default: the dense 104-state solves are tiny, and multi-threaded OpenBLAS on a busy
2-core machine can be 100× slower for them (pass ``--blas-threads 0`` to keep the default).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import time

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_agents.exact import hypergradient, leader_objective
from bilevel_envs.followers import soft_value_iteration
from bilevel_envs.wrappers import BestResponse

ENV_ID = "BiLevel/FourRooms-v0"
ROLLOUT_TARGET = 20.0


def timed(fn, repeat: int, setup=None) -> tuple[float, object]:
    """Median wall time of ``fn()`` over ``repeat`` runs (``setup()`` untimed before each)."""
    times, out = [], None
    for _ in range(repeat):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def fmt_time(sec: float) -> str:
    if sec < 1e-3:
        return f"{sec * 1e6:8.1f} µs"
    if sec < 1.0:
        return f"{sec * 1e3:8.2f} ms"
    return f"{sec:8.2f} s "


class Table:
    def __init__(self):
        self.rows: list[tuple[str, str, str]] = []

    def add(self, name: str, value: str, note: str = "") -> None:
        self.rows.append((name, value, note))
        print(f"  {name:<58} {value:>12}  {note}", flush=True)

    def section(self, title: str) -> None:
        self.rows.append((f"-- {title}", "", ""))
        print(f"\n-- {title}", flush=True)


def bench_solver(table: Table, size: int, beta: float, quick: bool, rng) -> None:
    env = gym.make(ENV_ID, size=size)
    problem = env.unwrapped
    S = problem.n_states
    table.section(f"follower and exact gradient, size={size} ({S} states, β={beta})")
    theta = rng.normal(0.0, 0.01, problem.config_space.shape)
    problem.set_config(theta)
    model = problem.tabular_model()
    gamma = problem.gamma_follower
    reps = 3 if (quick or S > 1000) else 20

    t_build, _ = timed(problem.tabular_model, reps)
    table.add("build tabular model", fmt_time(t_build))

    t_newton, res = timed(lambda: soft_value_iteration(model, beta, gamma), reps)
    table.add("Newton solve, cold (Q = 0)", fmt_time(t_newton),
              f"{res.iterations} steps, residual {res.residual:.1e}")
    q_cold = res.q

    t_vi, res_vi = timed(
        lambda: soft_value_iteration(model, beta, gamma, solver="value_iteration"),
        1 if S > 1000 else max(2, reps // 4))
    table.add("plain soft value iteration, cold (Q = 0)", fmt_time(t_vi),
              f"{res_vi.iterations} backups, residual {res_vi.residual:.1e}")
    table.add("  ratio VI / Newton (cold)", f"{t_vi / t_newton:10.1f}× ",
              f"max|ΔQ| = {np.abs(res_vi.q - q_cold).max():.1e}")

    # warm re-solve after a small step in θ, as in an outer iteration of a leader
    step = rng.normal(0.0, 0.01, theta.shape)
    problem.set_config(theta + step)
    model2 = problem.tabular_model()
    t_warm, res_w = timed(lambda: soft_value_iteration(model2, beta, gamma, q0=q_cold), reps)
    table.add("Newton solve, warm (Q0 = Q* at θ, new θ + δ)", fmt_time(t_warm),
              f"{res_w.iterations} steps")
    t_warm_vi, res_wvi = timed(lambda: soft_value_iteration(
        model2, beta, gamma, q0=q_cold, solver="value_iteration"), 1 if S > 1000 else 3)
    table.add("plain soft value iteration, warm (same Q0)", fmt_time(t_warm_vi),
              f"{res_wvi.iterations} backups")
    table.add("  ratio VI / Newton (warm)", f"{t_warm_vi / t_warm:10.1f}× ")
    table.add("  ratio Newton cold / warm", f"{t_newton / t_warm:10.1f}× ")

    br = BestResponse(env, beta=beta)
    state = {"theta": theta}

    def perturb():
        state["theta"] = state["theta"] + step

    t_set, _ = timed(lambda: br.set_config(state["theta"]), reps, setup=perturb)
    table.add("BestResponse.set_config(θ + δ)  (warm, incl. model)", fmt_time(t_set),
              f"{br.follower.result.iterations} Newton steps")

    t_obj, _ = timed(lambda: leader_objective(br), reps)
    table.add("exact leader objective J(θ)", fmt_time(t_obj))
    t_grad, grad = timed(lambda: hypergradient(br), reps)
    table.add("exact hypergradient ∇J(θ)", fmt_time(t_grad), f"|∇J| = {np.linalg.norm(grad):.3g}")
    t_both, _ = timed(lambda: (br.set_config(state["theta"]), hypergradient(br)), reps,
                      setup=perturb)
    table.add("outer step: set_config + hypergradient", fmt_time(t_both))


def plain_loop(br: BestResponse, n_transitions: int, seed: int) -> float:
    """A user's single-env Gymnasium loop; returns wall time."""
    env = gym.make(ENV_ID)
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for _ in range(n_transitions):
        obs, _r, term, trunc, _info = env.step(br.follower_action(obs, rng))
        if term or trunc:
            obs, _ = env.reset()
    return time.perf_counter() - t0


def bench_rollouts(table: Table, beta: float, quick: bool, rng) -> float:
    br = BestResponse(gym.make(ENV_ID), beta=beta)
    br.set_config(rng.normal(0.0, 0.01, 105))
    n_envs, steps = (200, 50) if quick else (1000, 100)
    n = n_envs * steps
    table.section(f"rollout throughput (104 states, β={beta})")

    t_plain = min(plain_loop(br, n, seed) for seed in range(1 if quick else 2))
    table.add(f"plain gym loop, {n} steps: env.step(br.follower_action(obs))", fmt_time(t_plain),
              f"{n / t_plain:,.0f} transitions/s")

    t_batch, _batch = timed(lambda: br.rollout(n, n_envs), 3 if quick else 5)
    table.add(f"BestResponse.rollout({n}, n_envs={n_envs})", fmt_time(t_batch),
              f"{n / t_batch:,.0f} transitions/s")
    ratio = t_plain / t_batch
    table.add("  ratio rollout / plain loop (throughput)", f"{ratio:10.1f}× ",
              f"target ≥ {ROLLOUT_TARGET:.0f}×: {'met' if ratio >= ROLLOUT_TARGET else 'NOT met'}")

    # the paper's batch: 100 transitions from one stream, repeated
    k = 50 if quick else 200
    t_small, _ = timed(lambda: [br.rollout(100, 1) for _ in range(k)], 3)
    per = t_small / k
    table.add("BestResponse.rollout(100, n_envs=1)  [paper batch]", fmt_time(per),
              f"{100 / per:,.0f} transitions/s")
    t_plain100 = t_plain * 100 / n
    table.add("  ratio vs plain loop over 100 steps", f"{t_plain100 / per:10.1f}× ")
    for ne in (10, 100):
        t_w, _ = timed(lambda ne=ne: br.rollout(100 * ne, ne), 5)
        table.add(f"BestResponse.rollout({100 * ne}, n_envs={ne})", fmt_time(t_w),
                  f"{100 * ne / t_w:,.0f} transitions/s")
    big = BestResponse(gym.make(ENV_ID, size=103), beta=beta)
    t_big, _ = timed(lambda: big.rollout(n, n_envs), 3)
    table.add(f"size=103: BestResponse.rollout({n}, n_envs={n_envs})", fmt_time(t_big),
              f"{n / t_big:,.0f} transitions/s")
    return ratio


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    parser.add_argument("--beta", type=float, default=0.001)
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads (0 = library default)")
    parser.add_argument("--strict", action="store_true",
                        help="exit 1 if the rollout speed-up is below the target")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"bench_four_rooms: python {platform.python_version()}, numpy {np.__version__}, "
          f"{os.cpu_count()} CPUs, BLAS threads "
          f"{args.blas_threads if args.blas_threads else 'default'}, "
          f"{'quick' if args.quick else 'full'} run")
    limit = contextlib.nullcontext()
    if args.blas_threads:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=args.blas_threads)
    t0 = time.perf_counter()
    table = Table()
    with limit:
        bench_solver(table, 13, args.beta, args.quick, rng)
        bench_solver(table, 103, args.beta, args.quick, rng)
        ratio = bench_rollouts(table, args.beta, args.quick, rng)
    print(f"\ntotal {time.perf_counter() - t0:.1f} s")
    if args.strict and ratio < ROLLOUT_TARGET:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
