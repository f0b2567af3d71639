"""Zero-order's two-point difference in float32: how often HPGD's arithmetic gets its sign right.

HPGD's zero-order evaluates ``J_ξ(θ + uZ) − J_ξ(θ)`` with a truncated follower solver (from
Q = 0, 100 rounds of a softmax policy and 5 soft backups) and 500 backups of leader policy
evaluation, in float32, with a radius ``u = c / t`` that shrinks to 5·10⁻⁵ at t = 10,000 (c =
0.5). This script measures, at a θ that zero-order has trained to (``--warmup`` iterations,
lr 0.5, c = 0.5, seed 0), how often that difference has the sign of the exact one (float64,
exact follower), for three radii, and repeats the truncated pipeline in float64 to separate
truncation from precision. With ``--train-rounded`` it also trains zero-order for 10,000
iterations on values rounded to float32 (each exact value cast to float32, the smallest part of
the float32 error) and prints each seed's last-1000 mean exact J.

    python examples/contextual_four_rooms/zero_order_precision.py --beta 0.003 --lam 1
    python examples/contextual_four_rooms/zero_order_precision.py --beta 0.003 --lam 1 \\
        --train-rounded 10
"""

from __future__ import annotations

import argparse

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401  (registers the ids)
import bilevel_agents.leaders.zero_order as zero_order_module
from bilevel_agents import ZeroOrder
from bilevel_agents.exact import at_config
from bilevel_agents.trainer import train
from bilevel_envs.wrappers import BestResponse


def hpgd_value(problem, theta: np.ndarray, context: int, beta: float, dtype) -> float:
    """``J_ξ`` as HPGD's code computes it, in ``dtype``: 100 × (softmax policy, 5 soft backups
    with the current state's entropy) from Q = 0, then 500 evaluation backups from V = 0."""
    model = problem.tabular_model(theta)
    S, B = model.n_states, model.n_actions
    cont = model.cont.toarray().astype(dtype).reshape(S, B, S)
    r_f, r_l = model.r_follower.astype(dtype), model.r_leader.astype(dtype)
    gamma, beta = dtype(problem.gamma_follower), dtype(beta)
    tiny = np.finfo(dtype).tiny

    def softmax(q):
        z = np.exp((q - q.max(axis=1, keepdims=True)) / beta)
        return z / z.sum(axis=1, keepdims=True)

    q = np.zeros((S, B), dtype)
    for _ in range(100):
        pi = softmax(q)
        entropy = -(pi * np.log(np.maximum(pi, tiny))).sum(axis=1)
        for _ in range(5):
            q = r_f + beta * entropy[:, None] + gamma * (cont @ (pi * q).sum(axis=1))
    pi = softmax(q)
    v = np.zeros(S, dtype)
    for _ in range(500):
        v = (pi * (r_l + gamma * (cont @ v))).sum(axis=1)
    start = int(np.argmax(problem.context_mu0(context)))
    return float(v[start])


def contextual_best_response(beta: float, lam: float) -> BestResponse:
    return BestResponse(gym.make("BiLevel/ContextualFourRooms-v0", penalty_weight=lam), beta=beta)


def sign_agreement(beta: float, lam: float, warmup: int, draws: int) -> None:
    br = contextual_best_response(beta, lam)
    leader = ZeroOrder(br, c=0.5, lr=0.5, seed=0)
    train(leader, warmup, progress=False)
    theta, problem = leader.theta.copy(), br.problem
    rng = np.random.default_rng(1)
    print(f"β = {beta}, λ = {lam}, θ after {warmup} zero-order iterations (lr 0.5, c 0.5, seed 0)")
    print("| t | radius u | sign as exact: float32 HPGD | float64 HPGD "
          "| median exact difference | median float32 error |")
    print("|---|---|---|---|---|---|")
    for t in (100, 1000, 10_000):
        u = 0.5 / t
        rows = []
        for _ in range(draws):
            z = rng.standard_normal(theta.shape)
            context = int(rng.integers(problem.n_contexts))
            exact = []
            for point in (theta + u * z, theta):
                with at_config(br, point):
                    exact.append(zero_order_module.context_objective(br, context))
            d_exact = exact[0] - exact[1]
            d32, d64 = (hpgd_value(problem, theta + u * z, context, beta, dt)
                        - hpgd_value(problem, theta, context, beta, dt)
                        for dt in (np.float32, np.float64))
            rows.append((d_exact, d32, d64))
        d = np.array(rows)
        same32 = int(np.sum(np.sign(d[:, 1]) == np.sign(d[:, 0])))
        same64 = int(np.sum(np.sign(d[:, 2]) == np.sign(d[:, 0])))
        print(f"| {t} | {u:.0e} | {same32}/{draws} | {same64}/{draws} | "
              f"{np.median(np.abs(d[:, 0])):.1e} | {np.median(np.abs(d[:, 1] - d[:, 0])):.1e} |")


def train_rounded(beta: float, lam: float, seeds: int) -> None:
    exact_objective = zero_order_module.context_objective
    zero_order_module.context_objective = lambda br, c: float(np.float32(exact_objective(br, c)))
    scores = []
    try:
        for seed in range(seeds):
            history = train(ZeroOrder(contextual_best_response(beta, lam), c=0.5, lr=0.5,
                                      seed=seed), 10_000, progress=False)
            scores.append(float(np.mean([row["objective"] for row in history[-1000:]])))
            print(f"seed {seed}: last-1000 mean exact J {scores[-1]:.4f}", flush=True)
    finally:
        zero_order_module.context_objective = exact_objective
    s = np.array(scores)
    print(f"values rounded to float32, lr 0.5, c 0.5, {seeds} seeds: "
          f"{s.mean():.4f} ± {s.std() / np.sqrt(s.size):.4f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beta", type=float, default=0.003)
    p.add_argument("--lam", type=float, default=1.0)
    p.add_argument("--warmup", type=int, default=2000)
    p.add_argument("--draws", type=int, default=60)
    p.add_argument("--train-rounded", type=int, default=0, metavar="SEEDS")
    args = p.parse_args()
    sign_agreement(args.beta, args.lam, args.warmup, args.draws)
    if args.train_rounded:
        train_rounded(args.beta, args.lam, args.train_rounded)


if __name__ == "__main__":
    main()
