"""``bilevel reproduce hpgd-table1``: the run specs, the report (on a fake results folder and on
3-iteration runs) and the CLI."""

import json

import numpy as np
import pytest

from bilevel_agents.cli import main as cli_main
from bilevel_agents.experiments.references import HPGD_TABLE1
from bilevel_agents.experiments.reproduce_hpgd import (
    CELLS,
    cell_dir,
    hpgd_table1_report,
    hpgd_table1_scores,
    hpgd_table1_specs,
    main,
    parse_cells,
)


def test_full_study_specs():
    specs = hpgd_table1_specs(out="OUT")
    # per cell: HPGD 4 + AMD 4 + zero-order 16 + BC-HG 24 grid points, × 10 seeds
    assert len(specs) == 9 * (4 + 4 + 16 + 24) * 10
    assert {s.env for s in specs} == {"BiLevel/ContextualFourRooms-v0"}
    assert {s.iterations for s in specs} == {10_000} and {s.seed for s in specs} == set(range(10))
    assert {(s.beta, s.env_kwargs["penalty_weight"]) for s in specs} == set(CELLS)
    hpgd = [s for s in specs if s.leader == "hpgd"]
    assert {s.leader_kwargs["lr"] for s in hpgd} == {0.5, 0.1, 0.05, 0.01}
    assert all(s.leader_kwargs["batch_size"] == 10_000 and s.leader_kwargs["n_envs"] == 5
               and s.leader_kwargs["contexts"] == "per_iteration" for s in hpgd)
    zo = {(s.leader_kwargs["lr"], s.leader_kwargs["c"]) for s in specs if s.leader == "zero_order"}
    assert len(zo) == 16
    bchg = [s for s in specs if s.leader == "bchg"]
    assert {s.leader_kwargs["batch_size"] for s in bchg} == {100}
    assert len({(s.leader_kwargs["lr"], s.leader_kwargs["sarsa_alpha"]) for s in bchg}) == 24
    assert len({s.run_dir for s in specs}) == len(specs)  # one folder per run
    one = next(s for s in specs if s.beta == 0.003 and s.env_kwargs["penalty_weight"] == 3)
    assert str(one.run_dir).startswith("OUT/beta0.003_lambda3/")


def test_partial_studies_and_bad_input():
    specs = hpgd_table1_specs(out="o", cells=[(0.005, 1)], methods=["amd"], seeds=2,
                              iterations=7, full_grid=False, simulator_slip_prob=0.33)
    assert [(s.leader, s.seed, s.leader_kwargs) for s in specs] == [
        ("amd", 0, {"lr": 0.5}), ("amd", 1, {"lr": 0.5})]
    assert specs[0].env_kwargs == {"penalty_weight": 1.0, "simulator_slip_prob": 0.33}
    assert parse_cells("0.003:3,0.001:5") == [(0.003, 3), (0.001, 5)]
    assert parse_cells(None) == list(CELLS)
    for bad in ("0.003", "0.002:3", "a:b"):
        with pytest.raises(ValueError, match="cell"):
            parse_cells(bad)
    with pytest.raises(ValueError, match="methods"):
        hpgd_table1_specs(out="o", methods=["hpgd_oracle"])


def _fake_run(root, point, seed, leader, objective, iterations, **config):
    run = root / point / f"seed{seed}"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(
        {"leader": leader, "seed": seed, "iterations": iterations, **config}))
    rows = ["iteration,objective"] + [f"{i},{float(v)!r}" for i, v in enumerate(objective)]
    (run / "metrics.csv").write_text("\n".join(rows) + "\n")


def test_report_on_a_fake_results_folder(tmp_path):
    root = cell_dir(tmp_path, 0.003, 3)
    n = 20
    ramp = np.linspace(0.0, 1.0, n)
    # AMD: two grid points of two seeds, the better one wins; the score is the mean over the last `tail`
    for seed, top in enumerate((0.40, 0.38)):
        _fake_run(root, "amd_lr0.5", seed, "amd", top * ramp, n, contexts="per_iteration")
        _fake_run(root, "amd_lr0.1", seed, "amd", 0.2 * ramp, n, contexts="per_iteration")
    # a point with fewer finished seeds does not compete, however high its mean
    _fake_run(root, "amd_lr1.0", 0, "amd", 0.9 * ramp, n, contexts="per_iteration")
    _fake_run(root, "hpgd_lr0.1", 0, "hpgd", 0.7 * ramp, n, contexts="per_iteration")
    _fake_run(root, "hpgd_lr0.1", 1, "hpgd", 0.7 * ramp[:10], n, contexts="per_iteration")
    # a BC-HG run with per-episode contexts (the default: no "contexts" key) is a variant
    _fake_run(root, "bchg_lr0.1", 0, "bchg", 0.5 * ramp, n)
    scores = hpgd_table1_scores(root, tail=5)
    def tail(top):
        return float((top * ramp)[-5:].mean())

    amd = scores[("amd", "")]
    assert amd["point"] == "amd_lr0.5" and amd["seeds"] == 2 and amd["points"] == 3
    assert amd["mean"] == pytest.approx((tail(0.40) + tail(0.38)) / 2)
    assert amd["se"] == pytest.approx(np.std([tail(0.40), tail(0.38)]) / np.sqrt(2))  # ddof 0
    hpgd = scores[("hpgd", "")]
    assert hpgd["seeds"] == 1 and hpgd["unfinished"] == 1 and hpgd["se"] == 0.0
    assert ("bchg", "contexts=per_episode") in scores
    text = hpgd_table1_report(out=tmp_path, cells=[(0.003, 3), (0.005, 5)], tail=5)
    header, _, row, missing = text.splitlines()[:4]
    assert header.startswith("| β | λ | start | no-inc | best known | HPGD: ours")
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[:5] == ["0.003", "3", "-0.068", "0.321", "0.798"]
    share = (amd["mean"] + 0.068) / (0.798 + 0.068)
    assert cells[7] == f"{amd['mean']:.3f} ± {amd['se']:.3f} ({share:.0%})"
    pub = HPGD_TABLE1[(0.003, 3)]["amd"]
    assert cells[8].startswith(f"{pub[0]:.2f} ± {pub[1]:.3f}")
    assert cells[11] == "–" and cells[12] == "–"  # BC-HG: only a variant, no published value
    assert "–" in missing.split("|")[6]  # a cell without results
    assert "contexts=per_episode" in text and "`amd_lr0.5`" in text


def test_three_iteration_study_through_the_cli(tmp_path, capsys):
    out = tmp_path / "t1"
    args = ["reproduce", "hpgd-table1", "--quick", "--cells", "0.003:3", "--seeds", "0",
            "--iterations", "3", "--methods", "amd,zero-order,hpgd,bchg", "--out", str(out)]
    assert cli_main(args) == 0
    assert len(list(out.glob("beta0.003_lambda3/*/seed0/summary.json"))) == 4
    report = (out / "hpgd_table1.md").read_text()
    assert "HPGD Table 1" in report and report.count("| 0.003 | 3 |") == 5
    scores = hpgd_table1_scores(cell_dir(out, 0.003, 3), tail=3)
    assert set(scores) == {("hpgd", ""), ("amd", ""), ("zero_order", ""), ("bchg", "")}
    # read back, not redone; the report alone
    assert main(["hpgd-table1", "--quick", "--cells", "0.003:3", "--seeds", "0",
                 "--iterations", "3", "--out", str(out), "--no-run"]) == 0
    with pytest.raises(ValueError, match="docs"):
        main(["hpgd-table1", "--no-run", "--out", str(out), "--report",
              str(tmp_path / "docs" / "x.md")])
