"""The CLI in its ecosystem: ``--help`` without torch (lazy public names), ``train --config
FILE.yaml`` (flags from a file, the command line wins, bad files are one-line usage errors),
``train --tensorboard`` (events per run folder, sweeps included), ``evaluate --iqm``."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings

import pytest

from bilevel_agents.cli import main

FAST = ["--leader", "naive_pgd", "--beta", "0.005", "--iterations", "2", "--batch-size", "20"]


def test_importing_the_cli_and_its_help_import_no_torch():
    code = ("import runpy, sys\n"
            "import bilevel_agents.cli\n"
            "assert 'torch' not in sys.modules, 'import bilevel_agents.cli imported torch'\n"
            "sys.argv = ['bilevel', '--help']\n"
            "try:\n"
            "    runpy.run_module('bilevel_agents.cli', run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "heavy = sorted({'torch', 'numpy', 'scipy', 'gymnasium'} & set(sys.modules))\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)


def test_public_names_are_lazy_and_complete():
    import bilevel_agents
    from bilevel_agents import BCHG, LEADERS
    from bilevel_agents.leaders import BCHG as direct

    assert BCHG is direct and LEADERS["bchg"] is BCHG
    assert set(bilevel_agents.__all__) <= set(dir(bilevel_agents))
    for name in bilevel_agents.__all__:
        assert getattr(bilevel_agents, name) is not None
    with pytest.warns(DeprecationWarning, match="GameBCHG is deprecated"):
        assert bilevel_agents.GameBCHG is BCHG
    with pytest.warns(DeprecationWarning):
        assert bilevel_agents.HPGDSarsa is not None
    with pytest.raises(AttributeError):
        bilevel_agents.Nope  # noqa: B018


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error" in err[0], err
    for needle in needles:
        assert needle in err[0], err[0]


def test_config_file_sets_every_flag_and_the_command_line_wins(tmp_path, capsys):
    config = tmp_path / "train.yaml"
    config.write_text("leader: naive_pgd\nbeta: 0.005\niterations: 2\nseeds: 0-1\n"
                      "lr: [0.1, 0.05]\nbatch-size: 20\ntail: 2\n"
                      "env_kwargs: {slip_prob: 0.3}\nleader_kwargs: {optimizer: adam}\n")
    out = tmp_path / "r"
    assert main(["train", "--config", str(config), "--out", str(out), "--lr", "0.5",
                 "--seeds", "3"]) == 0
    runs = sorted(p.relative_to(out).as_posix() for p in out.glob("*/seed*"))
    assert runs == ["naive_pgd_batch_size20_lr0.5_optimizeradam/seed3"]
    spec = json.loads((out / runs[0] / "config.json").read_text())["run_spec"]
    assert spec["env_kwargs"] == {"slip_prob": 0.3} and spec["iterations"] == 2
    assert spec["leader"] == "naive_pgd" and spec["beta"] == 0.005
    capsys.readouterr()


@pytest.mark.parametrize("text,needles", [
    ("lrr: 0.1\n", ["unknown key 'lrr'", "batch_size"]),
    ("lr: abc\n", ["lr:", "'abc'"]),
    ("iterations: 0\n", ["iterations:"]),
    ("tensorboard: 3\n", ["--tensorboard is a switch"]),
    ("backend: spark\n", ["backend:", "spark"]),
    ("seeds: 3-1\n", ["seeds:"]),
    ("env_kwargs: 5\n", ["env_kwargs:"]),
    ("config: other.yaml\n", ["unknown key 'config'"]),
    ("- 1\n", ["expected a mapping"]),
    ("lr: [\n", ["not valid YAML"]),
])
def test_bad_config_files_are_one_line_usage_errors(text, needles, tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(path), "--out", str(tmp_path / "r")])
    assert exc.value.code == 2
    _one_line(capsys, str(path), *needles)
    assert not (tmp_path / "r").exists()


def test_a_missing_config_file(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--config", str(tmp_path / "none.yaml")])
    assert exc.value.code == 2
    _one_line(capsys, "cannot read")


def test_tensorboard_events_in_every_run_folder(tmp_path, capsys):
    pytest.importorskip("tensorboard")
    out = tmp_path / "tb"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["train", *FAST, "--seeds", "0-1", "--out", str(out),
                     "--tensorboard"]) == 0
    assert "not batched (TensorBoard" in capsys.readouterr().out
    runs = sorted(out.glob("*/seed*"))
    assert len(runs) == 2
    for run in runs:
        assert list((run / "tb").glob("events.out.tfevents.*"))
    identity = json.loads((runs[0] / "config.json").read_text())["run_spec"]
    assert "tensorboard" not in identity  # logging does not change the run
    plain = tmp_path / "plain"
    assert main(["train", *FAST, "--out", str(plain), "--no-tensorboard"]) == 0
    assert not list(plain.glob("*/seed0/tb"))


def test_evaluate_iqm_adds_the_columns(tmp_path, capsys):
    from bilevel_agents.experiments.results import aggregate, score_table

    out = tmp_path / "r"
    assert main(["train", *FAST, "--seeds", "0-2", "--out", str(out), "--tail", "2"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), "--tail", "2", "--iqm", "--json",
                 str(tmp_path / "t.json")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert "IQM over seeds" in lines[0] and "stratified bootstrap" in lines[0]
    cells = [c.strip() for c in lines[2].split("|")[1:-1]]
    q = aggregate(score_table(out, 2)[0]["scores"])
    assert cells[-2] == f"{q['iqm']:.4f}"
    assert cells[-1] == f"[{q['low']:.4f}, {q['high']:.4f}]"
    saved = json.loads((tmp_path / "t.json").read_text())[0]
    assert saved["iqm"]["iqm"] == pytest.approx(q["iqm"]) and len(saved["scores"]) == 3
