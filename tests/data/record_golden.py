"""Record the golden θ trajectories of every method × problem family (test data).

Run once from the commit before a refactor of ``bilevel_agents``; ``tests/agents/test_golden.py``
then checks that the refactored code reproduces every trajectory. The cases are listed in
``golden_cases.json`` (method, env, β, leader kwargs, iterations) so both sides build the same
runs::

    python tests/data/record_golden.py         # writes tests/data/golden_histories.npz
    python tests/data/record_golden.py ID ...  # re-records those cases only

A case is re-recorded only when its method was changed on purpose (``test_golden.py`` lists
those changes).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent


def build(case: dict, api: dict):
    """The leader of ``case`` built through ``api`` (name → leader class)."""
    import gymnasium as gym

    import bilevel_envs  # noqa: F401
    from bilevel_envs.games import lqr_game_v0, toy_game_v0
    from bilevel_envs.games.policies import MLPSoftmax

    br_kwargs = dict(case.get("br_kwargs", {}))
    if br_kwargs.pop("mlp_leader", False):
        br_kwargs["leader_parameterization"] = MLPSoftmax(3, 2, hidden=(8, 8))
    env = case["env"]
    if env == "toy_game_v0":
        br = api["game_best_response"](toy_game_v0.env(**case.get("env_kwargs", {})),
                                       case["beta"], **br_kwargs)
    elif env == "lqr_game_v0":
        br = api["game_best_response"](lqr_game_v0.env(**case.get("env_kwargs", {})),
                                       case["beta"], **br_kwargs)
    else:
        br = api["best_response"](gym.make(env, **case.get("env_kwargs", {})), case["beta"],
                                  **br_kwargs)
    return api[case["leader"]](br, seed=case["seed"], **case.get("kwargs", {}))


def trajectory(leader, iterations: int) -> dict[str, np.ndarray]:
    thetas = [leader.theta]
    norms = []
    for _ in range(iterations):
        row = leader.update()
        thetas.append(leader.theta)
        norms.append(row["grad_norm"])
    return {"theta": np.asarray(thetas), "grad_norm": np.asarray(norms)}


def main() -> None:
    from threadpoolctl import threadpool_limits

    import bilevel_agents as ba
    from bilevel_envs.wrappers import BestResponse

    api = {"best_response": BestResponse, "game_best_response": BestResponse,
           **{name: cls for name, cls in ba.LEADERS.items()}}
    cases = json.loads((HERE / "golden_cases.json").read_text())
    only = set(sys.argv[1:])
    unknown = only - {case["id"] for case in cases}
    if unknown:
        raise SystemExit(f"unknown case ids: {', '.join(sorted(unknown))}")
    out = dict(np.load(HERE / "golden_histories.npz")) if only else {}
    with threadpool_limits(1):
        for case in cases:
            if only and case["id"] not in only:
                continue
            traj = trajectory(build(case, api), case["iterations"])
            for k, v in traj.items():
                out[f"{case['id']}/{k}"] = v
            print(case["id"], traj["theta"][-1][:3])
    np.savez_compressed(HERE / "golden_histories.npz", **out)


if __name__ == "__main__":
    main()
