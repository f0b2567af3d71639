"""The cost of one BC-HG outer iteration with each kind of follower, on three problems.

One iteration is the leader's update and the follower's response to the new θ:

* Four-Rooms (batch of 100 transitions, SARSA critic, estimate, step): the exact warm-started
  Newton solve, ``K`` policy iterations × 5 soft backups from the carried or a fresh start, soft
  Q-learning's own transitions between leader updates, or a Stable-Baselines3 DQN's ``learn``
  on the follower-facing env;
* the toy game (3 episodes × 150 rounds, TD critic, Adam): exact soft policy iteration, K soft
  Q-iteration backups, soft Q-learning of the rounds it plays;
* building control (100 episodes × 100 steps, MLP critic): the exact DARE, K Riccati steps, an
  SB3 SAC follower (α = β) trained for 500 steps per leader update, for which the leader also
  fits its own ``V_F`` and averages its critic over 16 of the follower's actions per state.

The exact objective is not computed (it is the same for every follower). All rows are measured
in this run, on one core; ratios are to the exact follower of the same problem.

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
#: Four-Rooms follower spec → iterations timed (full run; ``--quick`` takes a fifth)
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


#: toy game (R = 2, β = 0.05) follower spec → iterations timed
TOY_FOLLOWERS: dict[str, int] = {
    "exact": 100,
    "kstep:1:reset": 100,
    "kstep:20:reset": 100,
    "soft-q-learning:steps=450,epsilon=0.2": 100,
    "soft-q-learning:steps=4500,epsilon=0.2": 50,
}
#: building control (β = 0.1) follower spec → iterations timed
BUILDING_FOLLOWERS: dict[str, int] = {
    "exact": 10,
    "kstep:5:carry": 10,
    "sb3:SAC:ent_coef=0.1,steps=500,learning_starts=100": 3,
}


def _leader(problem: str, spec: str):
    if problem == "four-rooms":
        env = gym.make("BiLevel/FourRooms-v0")
        br = BestResponse(env, beta=BETA, follower=make_follower(spec, env, BETA, seed=0))
        return BCHG(br, batch_size=100, lr=0.05, sarsa_alpha=0.5, seed=0)
    if problem == "toy":
        from bilevel_envs.games import toy_game_v0
        from bilevel_envs.wrappers import GameBestResponse

        game = toy_game_v0.env(reward=2)
        follower = make_follower(spec, game, 0.05, seed=0)
        return BCHG(GameBestResponse(game, beta=0.05, follower=follower), seed=0)
    env = gym.make("BiLevel/BuildingThermal-v0")
    br = BestResponse(env, beta=0.1, follower=make_follower(spec, env, 0.1, seed=0))
    return BCHG(br, lr=0.1, seed=0, critic_kwargs={"v_samples": 16})


def iteration_time(spec: str, n: int, problem: str = "four-rooms") -> float:
    """Median seconds of one ``BCHG.update()`` (the follower's response included)."""
    leader = _leader(problem, spec)
    for _ in range(1 if problem == "building" else 3):  # warm-up
        leader.update()
    seconds, _ = timed(leader.update, n)
    return seconds


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__, quick_help="a fifth of the iterations, SB3 left out").parse_args(argv)
    report = Report("bench_followers", args, width=58)
    sections = (("four-rooms", f"Four-Rooms, β={BETA}, batch 100", FOLLOWERS),
                ("toy", "toy game R=2, β=0.05, 3 × 150 rounds", TOY_FOLLOWERS),
                ("building", "building control, β=0.1, 100 × 100 steps", BUILDING_FOLLOWERS))
    with single_threaded(args.blas_threads):
        for problem, title, followers in sections:
            if problem == "building" and args.quick:
                continue  # an MLP critic and SAC: seconds per iteration
            report.section(f"one BC-HG outer iteration ({title}), median")
            exact = None
            for spec, n in followers.items():
                if spec.startswith("sb3") and (
                        args.quick or importlib.util.find_spec("stable_baselines3") is None):
                    continue
                t = iteration_time(spec, max(n // 5, 3) if args.quick else n, problem)
                exact = t if exact is None else exact
                note = "" if spec == "exact" else f"{t / exact:.1f}× the exact follower"
                report.time(f"follower {spec}", t, note)
    return report.finish()


if __name__ == "__main__":
    sys.exit(main())
