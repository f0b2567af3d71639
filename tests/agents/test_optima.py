"""Best known values by multi-start ascent on the exact hypergradient (a small, quick case)."""

import json

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents.exact import leader_objective
from bilevel_agents.experiments.optima import best_known_value, main, start_points
from bilevel_envs.wrappers import BestResponse


def make_br():
    return BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005)


def test_start_points_cover_the_paper_start_no_incentive_and_single_cells():
    br = make_br()
    starts = dict(start_points(br, np.random.default_rng(0), random=2, scales=(1.0,),
                               coordinates=3))
    assert {"init", "no_incentive", "random1_0", "random1_1"} <= set(starts)
    assert sum(k.startswith("coordinate") for k in starts) == 3
    assert np.abs(starts["init"]).max() < 0.1
    none = starts["no_incentive"]
    assert np.exp(none[-1]) / np.exp(none).sum() > 0.999
    cell = next(v for k, v in starts.items() if k.startswith("coordinate"))
    p = np.exp(cell) / np.exp(cell).sum()
    assert p.max() == pytest.approx(np.exp(5) / (np.exp(5) + 104))
    assert len(dict(start_points(br, np.random.default_rng(0), random=0))) == 2 + 105


def test_quick_search_finds_at_least_every_start_and_restores_the_wrapper():
    br = make_br()
    theta = br.config
    result = best_known_value(br, seed=0, random=1, scales=(1.0,), coordinates=2, screen=5,
                              keep=2, iterations=25, lr=0.1)
    np.testing.assert_array_equal(br.config, theta)  # the wrapper is left as it was
    assert result.value >= max(r["start_value"] for r in result.runs) - 1e-12
    assert result.value == pytest.approx(max(r["best"] for r in result.runs), abs=1e-9)
    assert result.value == pytest.approx(leader_objective(br, result.theta), abs=1e-9)
    refined = [r for r in result.runs if r["steps"] > 5]
    assert len(refined) == 2 and all(r["steps"] <= 25 for r in refined)
    assert result.value >= 0.0017 - 1e-4  # at least the no-incentive value
    assert result.per_context is None


def test_patience_stops_a_run_and_the_command_writes_json(tmp_path, capsys):
    br = make_br()
    result = best_known_value(br, starts=[("flat", np.full(105, 0.0))], screen=50, keep=1,
                              iterations=50, lr=1e-9, tol=1e-3, patience=5)
    assert result.runs[0]["stopped"] == "patience" and result.runs[0]["steps"] == 5
    out = tmp_path / "best.json"
    assert main(["--env", "BiLevel/ContextualFourRooms-v0", "--beta", "0.005",
                 "--env-kwargs", "penalty_weight=3", "--random", "0", "--coordinates", "1",
                 "--screen", "2", "--keep", "1", "--iterations", "3", "--quiet",
                 "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["env_kwargs"] == {"penalty_weight": 3} and len(data["theta"]) == 105
    assert len(data["per_context"]) == 2
    assert data["value"] == pytest.approx(np.mean(data["per_context"]), abs=1e-9)
    assert "best known J" in capsys.readouterr().out
