"""The ``bilevel`` command line: every user error is one line and exit code 2, never a
traceback; a results folder of another specification is refused; evaluate scores honestly."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from bilevel_agents.cli import main

TRAIN = ["train", "--iterations", "3", "--beta", "0.005"]


def _one_line_error(capsys, code, *needles):
    out = capsys.readouterr()
    assert code == 2
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and "error" in lines[0], out.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in out.err


@pytest.mark.parametrize("argv,needles", [
    (["train", "--lr", "abc"], ["--lr", "'abc'"]),
    (["train", "--iterations", "0"], ["--iterations", "'0'"]),
    (["train", "--iterations", "-5"], ["--iterations"]),
    (["train", "--tail", "0"], ["--tail"]),
    (["train", "--beta", "0"], ["--beta"]),
    (["train", "--beta", "nan"], ["--beta"]),
    (["train", "--seeds", "3-1"], ["--seeds"]),
    (["train", "--batch-size", "1.5"], ["--batch-size"]),
    (["train", "--sarsa-alpha", "2"], ["--sarsa-alpha"]),
    (["train", "--workers", "0"], ["--workers"]),
    (["evaluate", "x", "--tail", "0"], ["--tail"]),
])
def test_bad_numbers_are_usage_errors(argv, needles, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    _one_line_error(capsys, exc.value.code, *needles)


@pytest.mark.parametrize("extra,needles", [
    (["--leader", "nope"], ["unknown leader 'nope'"]),
    (["--env", "BiLevel/Nope-v0"], ["unknown env"]),
    (["--env-kwargs", "colour=red"], ["does not take", "colour"]),
    (["--leader-kwargs", "bogus=1"], ["unknown option", "bogus"]),
    (["--leader-kwargs", "batch_size=1.5"], ["batch_size must be an integer"]),
    (["--env", "BiLevel/BuildingThermal-v0", "--leader", "sobirl"],
     ["sobirl is defined on tabular configurable MDPs"]),
    (["--env", "toy_game_v0", "--leader", "hpgd"], ["hpgd is defined on"]),
    (["--follower", "kstep:x"], ["kstep"]),
])
def test_user_errors_are_one_line(extra, needles, capsys, tmp_path):
    code = main(TRAIN + ["--out", str(tmp_path / "r")] + extra)
    _one_line_error(capsys, code, *needles)


def test_a_results_folder_of_another_run_is_refused(capsys, tmp_path):
    out = str(tmp_path / "r")
    assert main(TRAIN + ["--out", out, "--leader", "naive_pgd"]) == 0
    capsys.readouterr()
    code = main(["train", "--iterations", "3", "--beta", "0.001", "--out", out,
                 "--leader", "naive_pgd"])
    _one_line_error(capsys, code, "another specification", "beta")
    # the same command reads the finished run back
    assert main(TRAIN + ["--out", out, "--leader", "naive_pgd"]) == 0


def test_an_unwritable_output_folder(capsys, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # running as a user who may write anyway (root)
            pytest.skip("the file system grants write access regardless of the mode")
        code = main(TRAIN + ["--out", str(locked / "r")])
        _one_line_error(capsys, code, "cannot create")
    finally:
        locked.chmod(0o700)


def test_output_under_a_file_is_one_line(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    code = main(TRAIN + ["--out", str(tmp_path / "file" / "r")])
    _one_line_error(capsys, code, "cannot create")


def test_evaluate_and_plot_of_a_missing_folder(capsys, tmp_path):
    missing = tmp_path / "nowhere"
    _one_line_error(capsys, main(["evaluate", str(missing)]), "does not exist")
    _one_line_error(capsys, main(["plot", str(missing)]), "does not exist")
    assert not missing.exists()  # plot must not create it


def test_evaluate_refuses_a_damaged_log_and_uses_the_recorded_start(capsys, tmp_path):
    out = tmp_path / "r"
    assert main(TRAIN + ["--out", str(out), "--leader", "naive_pgd", "--tail", "2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--tail", "2", "--best-known", "0.623"]) == 0
    table = capsys.readouterr().out
    row = table.strip().splitlines()[-1].split("|")
    start, mean, share = float(row[4]), float(row[5].split("±")[0]), row[6].strip()
    assert start < -0.7  # the run's own first objective, not 0
    assert share == f"{(mean - start) / (0.623 - start):.1%}"
    # best known equal to the start: no division by zero
    assert main(["evaluate", str(out), "--tail", "2", "--best-known", "0.0",
                 "--start", "0.0"]) == 0
    assert capsys.readouterr().out.strip().endswith("n/a |")
    log = next(out.glob("*/seed0/metrics.csv"))
    log.write_text(log.read_text() + "1,oops\n")
    _one_line_error(capsys, main(["evaluate", str(out)]), "damaged")


def test_help_shows_defaults():
    text = subprocess.run([sys.executable, "-m", "bilevel_agents.cli", "train", "--help"],
                          capture_output=True, text=True, check=True).stdout
    assert "(default: 10000)" in text and "(default: bchg)" in text


def test_run_folders_have_no_brackets_or_spaces():
    """A list-valued option (HPGD's per-group clipping) names its folder ``clip_groups3-1``."""
    from bilevel_agents.experiments.sweep import RunSpec

    spec = RunSpec(env="BiLevel/TaxDesignTabular-v0", leader="zero_order", beta=0.1, seed=2,
                   iterations=1, out="o", leader_kwargs={"c": 50.0, "clip_groups": [3, 1],
                                                         "critic_kwargs": {"v_samples": 16}})
    assert spec.run_dir.as_posix() == "o/zero_order_c50.0_clip_groups3-1_v_samples16/seed2"


@pytest.mark.parametrize("name, method", [("exact", "exact"), ("zero_order", "zero_order"),
                                          ("bchg", "bchg"), ("bchg_exact_critic", "bchg"),
                                          ("hpgd", "hpgd"), ("hpgd_tax_code", "hpgd"),
                                          ("bchg_model_critic", "bchg")])
def test_tax_design_protocol_files_run(name, method, tmp_path):
    """``examples/tax_design/*.yaml`` (docs/results/hpgd.md) are valid configs of their method."""
    import json
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "examples" / "tax_design" / f"{name}.yaml"
    assert main(["train", "--config", str(config), "--iterations", "1", "--seeds", "0",
                 "--no-tensorboard", "--out", str(tmp_path)]) == 0
    (summary,) = tmp_path.glob("*/seed0/summary.json")
    assert json.loads(summary.read_text())["iterations"] == 1
    assert summary.parent.parent.name.startswith(method) and "[" not in str(summary)
