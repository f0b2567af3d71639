"""The cost of one BC-HG outer iteration on Four-Rooms with each kind of follower.

One iteration is the leader's update (batch of 100 transitions, SARSA critic, estimate, step)
and the follower's response to the new θ: the exact warm-started Newton solve, ``K`` policy
iterations × 5 soft backups from the carried or a fresh start, soft Q-learning's own
transitions between leader updates, or a Stable-Baselines3 DQN's ``learn`` on the
follower-facing env. The exact objective is not computed (it is the same for every follower).
All rows are measured in this run, on one core; ratios are to the exact follower.

Usage: ``python -m bilevel_agents.benchmarks.bench_followers [--quick] [--markdown]``.
"""

from __future__ import annotations

import importlib.util
import sys

import gymnasium as gym

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG
from bilevel_agents.benchmarks.harness import Report, parser, single_threaded, timed
from bilevel_envs.followers import make_follower
from bilevel_envs.wrappers import BestResponse

BETA = 0.003
#: follower spec → iterations timed (full run; ``--quick`` takes a fifth)
FOLLOWERS: dict[str, int] = {
    "exact": 200,
    "kstep:1:carry": 200,
    "kstep:5:carry": 200,
    "kstep:5:reset": 200,
    "kstep:20:reset": 100,
    "kstep:50:reset": 50,
    "soft-q-learning:steps_per_leader_update=100": 200,
    "soft-q-learning:steps_per_leader_update=1000": 100,
    "sb3:DQN:learning_starts=0,steps=1000": 10,
}


def iteration_time(spec: str, n: int) -> float:
    """Median seconds of one ``BCHG.update()`` (the follower's response included)."""
    env = gym.make("BiLevel/FourRooms-v0")
    br = BestResponse(env, beta=BETA, follower=make_follower(spec, env, BETA, seed=0))
    leader = BCHG(br, batch_size=100, lr=0.05, sarsa_alpha=0.5, seed=0)
    for _ in range(3):  # warm-up
        leader.update()
    seconds, _ = timed(leader.update, n)
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, quick_help="a fifth of the iterations, SB3 left out").parse_args(argv)
    report = Report("bench_followers", args, width=58)
    report.section(f"one BC-HG outer iteration (Four-Rooms, β={BETA}, batch 100), median")
    with single_threaded(args.blas_threads):
        exact = None
        for spec, n in FOLLOWERS.items():
            if spec.startswith("sb3") and (args.quick or
                                           importlib.util.find_spec("stable_baselines3") is None):
                continue
            t = iteration_time(spec, max(n // 5, 3) if args.quick else n)
            exact = t if exact is None else exact
            note = "" if spec == "exact" else f"{t / exact:.1f}× the exact follower"
            report.time(f"follower {spec}", t, note)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
