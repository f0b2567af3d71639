"""Time of one full BC-HG outer iteration on Four-Rooms (β = 0.001, batch 100), two ways.

* **ours**: `BCHG.update()` plus the exact objective — warm-started Newton follower solve,
  scalar walk of the exact chain, tabular SARSA, coefficient estimator with one closed-form
  VJP, exact evaluation by one linear solve; single-threaded BLAS.
* **plain**: the same iteration written the obvious way — soft value iteration from zero to
  the same tolerance, a single-env Gymnasium `env.step` loop for the batch, per-transition
  gradient vectors (autograd) pooled per (s, b), evaluation by 500 policy-evaluation backups
  (as the authors' code does).

Both are measured in this run, on one core; the ratio is printed. Usage:
``python -m bilevel_agents.benchmarks.bench_bchg_iteration [--quick] [--markdown]``.
"""

from __future__ import annotations

import sys

import gymnasium as gym
import numpy as np
import torch

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG
from bilevel_agents.benchmarks.harness import Report, parser, single_threaded, timed
from bilevel_agents.exact import leader_objective
from bilevel_envs.followers import soft_value_iteration
from bilevel_envs.wrappers import BestResponse

BETA = 0.001


def plain_iteration(env, problem, theta, q_critic, rng, lr=0.1, alpha=0.3):
    """One BC-HG iteration without any of our speed-ups (same maths)."""
    model = problem.tabular_model(theta)
    sol = soft_value_iteration(model, BETA, problem.gamma_follower, solver="value_iteration")
    policy = sol.policy
    # batch: a single env stepped 100 times through the Gymnasium API
    obs, _ = env.reset(options={"config": theta})
    rows, t = [], 0
    for _ in range(100):
        b = int(rng.choice(4, p=policy[obs]))
        nxt, r_f, term, trunc, info = env.step(b)
        rows.append((obs, b, info["leader_reward"], term or trunc, t))
        obs, t = (env.reset()[0], 0) if (term or trunc) else (nxt, t + 1)
    s = np.array([r[0] for r in rows])
    b = np.array([r[1] for r in rows])
    r_l = np.array([r[2] for r in rows])
    done = np.array([r[3] for r in rows])
    tt = np.array([r[4] for r in rows])
    end = done.copy()
    end[-1] = True
    # SARSA
    for k in rng.permutation(100):
        boot = 0.0 if end[k] else 0.99 * q_critic[s[k + 1], b[k + 1]]
        q_critic[s[k], b[k]] += alpha * (r_l[k] + boot - q_critic[s[k], b[k]])
    v_l = (policy * q_critic).sum(1)
    # per-transition gradient vectors ∇r_F, ∇r_L (autograd per transition)
    th = torch.tensor(theta, requires_grad=True)
    grads_f, grads_l = [], []
    for k in range(100):
        r_f_tab, r_l_tab = problem.tabular_rewards_torch(th)
        zero = 0 * th.sum()  # keeps θ in the graph where a reward does not depend on it
        grads_f.append(torch.autograd.grad(r_f_tab[s[k], b[k]] + zero, th,
                                           retain_graph=True)[0].numpy())
        grads_l.append(torch.autograd.grad(r_l_tab[s[k], b[k]] + zero, th)[0].numpy())
    G_f, G_l = np.zeros((100, theta.size)), np.zeros((100, theta.size))
    carry_f, carry_l = np.zeros(theta.size), np.zeros(theta.size)
    for k in range(99, -1, -1):
        carry_f = grads_f[k] + (0 if end[k] else 0.99 * carry_f)
        carry_l = grads_l[k] + (0 if end[k] else 0.99 * carry_l)
        G_f[k], G_l[k] = carry_f, carry_l
    n_ep = max(int(done.sum()), 1)
    grad = G_l[s == problem.start_state].mean(0)
    for k in range(100):
        same = (s == s[k]) & (b == b[k])
        benefit = q_critic[s[k], b[k]] - v_l[s[k]]
        grad += 0.99 ** tt[k] * benefit * G_f[same].mean(0) / (BETA * n_ep)
    norm = np.linalg.norm(grad)
    theta = theta + lr * (grad if norm <= 1 else grad / norm)
    # evaluation: 500 backups of policy evaluation
    P = model.P
    v = np.zeros(problem.n_states)
    for _ in range(500):
        q = model.r_leader + 0.99 * np.where(model.terminal[:, None], 0.0, P @ v)
        v = (policy * q).sum(1)
    return theta, float(v[problem.start_state])


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, quick_help="50 iterations of ours, 5 plain ones").parse_args(argv)
    n = 50 if args.quick else 300
    report = Report("bench_bchg_iteration", args, width=62)
    with single_threaded(args.blas_threads):
        br = BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=BETA)
        leader = BCHG(br, batch_size=100, lr=0.1, sarsa_alpha=0.3, seed=0)
        for _ in range(20):  # warm-up
            leader.update()
        t_ours, _ = timed(lambda: (leader_objective(br), leader.update()), n)
        env = gym.make("BiLevel/FourRooms-v0").unwrapped
        rng = np.random.default_rng(0)
        state = {"theta": leader.theta}
        q = rng.normal(size=(env.n_states, env.n_actions))

        def plain() -> None:
            state["theta"], _ = plain_iteration(env, env, state["theta"], q, rng)

        t_plain, _ = timed(plain, max(n // 10, 5))
    report.section("one BC-HG outer iteration (Four-Rooms, β=0.001, batch 100), median")
    report.time("ours (vectorised, warm Newton, coefficient estimator)", t_ours)
    report.time("plain (VI from zero, env.step loop, per-transition autograd)", t_plain)
    report.ratio("ratio plain / ours", t_plain, t_ours)
    report.value("10,000 iterations (one run), ours", f"{t_ours * 1e4:8.1f} s ")
    report.value("10,000 iterations (one run), plain", f"{t_plain * 1e4:8.0f} s ")
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
