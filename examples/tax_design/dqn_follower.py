"""HPGD's learned follower on the tabular economy: how far is it from the soft best response?

HPGD trains its leaders against a factorised soft DQN (bilevel_envs.followers.SoftDQN) instead
of the exact follower. On `BiLevel/TaxDesignTabular-v0` the exact soft best response and the
exact leader objective exist, so both can be measured for the network HPGD uses: at the
leaders' start (all rates 0.3) and at the best known θ, after a growing number of the
follower's own transitions, with HPGD's settings (MLP 64×64, Adam 5e-5, buffer 10,000,
batch 1000, learning after 10,000 transitions, hard target copy every 5000, ε 1 → 0.1 over
10^6 transitions, 10 parallel episodes, β = 0.1). Reported per checkpoint: the follower's
soft-value gap at the start distribution (``follower_optimality_gap``), and the leader's exact J under the DQN's
policy beside J under the best response (and both for the uniform policy, for scale).
`--heads joint` trains one head of 1250 outputs
instead (the joint soft Q), to separate the factorisation from the learning.

    python examples/tax_design/dqn_follower.py --budgets 100000 300000 1000000 --seed 0
"""

from __future__ import annotations

import argparse
import json
import time

import gymnasium as gym
import numpy as np

import bilevel_envs  # noqa: F401
from bilevel_agents.exact.tabular import best_response, leader_values
from bilevel_envs.envs.tax_design import config_from_rates
from bilevel_envs.followers import SoftDQN, follower_optimality_gap
from bilevel_envs.wrappers import BestResponse

BETA = 0.1
BEST = np.array([-7.517129834888709, -8.253715954150307, -5.826702000540138,
                 -0.7726323435527718])  # docs/known_optima.md, Tax Design


def measure(budgets: list[int], theta: np.ndarray, heads: str, seed: int) -> list[dict]:
    env = gym.make("BiLevel/TaxDesignTabular-v0", config=theta)
    fol = SoftDQN(BETA, budgets[0], heads=(1250,) if heads == "joint" else None, seed=seed)
    start = time.perf_counter()
    br = BestResponse(env, beta=BETA, follower=fol)
    problem = br.problem
    model, sol = problem.tabular_model(), best_response(br)
    j_opt = float(model.mu0 @ leader_values(model, sol.policy, problem.gamma_leader)[1])
    uniform = np.full_like(sol.policy, 1.0 / sol.policy.shape[1])
    ref = follower_optimality_gap(model, uniform, BETA, problem.gamma_follower, v_opt=sol.v)
    print(json.dumps({"reference": "uniform policy", "follower_gap": ref.start,
                      "V_F_start": float(model.mu0 @ sol.v), "J_uniform": float(
                          model.mu0 @ leader_values(model, uniform, problem.gamma_leader)[1]),
                      "J_best_response": j_opt}), flush=True)
    rows = []
    for k, budget in enumerate(budgets):
        if k:
            fol.steps_per_leader_update = budget - budgets[k - 1]
            fol.solve(problem)
        pi = fol.policy_readout()
        gap = follower_optimality_gap(model, pi, BETA, problem.gamma_follower, v_opt=sol.v)
        j = float(model.mu0 @ leader_values(model, pi, problem.gamma_leader)[1])
        rows.append({"transitions": fol.total_steps, "follower_gap": gap.start,
                     "J_dqn": j, "J_best_response": j_opt, "heads": heads, "seed": seed,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budgets", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--theta", choices=["start", "best"], nargs="+", default=["start", "best"])
    ap.add_argument("--heads", choices=["factorised", "joint"], default="factorised")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if sorted(args.budgets) != args.budgets or args.budgets[0] < 1:
        ap.error("--budgets must be increasing positive transition counts")
    start = config_from_rates([0.3] * 3, 0.3)
    for name in args.theta:
        print(f"# theta = {name}", flush=True)
        measure(args.budgets, start if name == "start" else BEST, args.heads, args.seed)


if __name__ == "__main__":
    main()
