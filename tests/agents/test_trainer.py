"""Results a researcher can trust: run identity, ownership, append-only logs, plain checkpoints,
exact resume for every method × problem family (bilevel_agents.runs, bilevel_agents.trainer)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

import bilevel_envs  # noqa: F401
from bilevel_agents import BCHG, HPGD, BiAC, ExactAscent, NaivePGD, SoBiRL, train
from bilevel_agents.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from bilevel_agents.runs import RunBusy, RunFolder, RunMismatch
from bilevel_envs.games import lqr_game_v0, toy_game_v0
from bilevel_envs.wrappers import BestResponse, GameBestResponse

FR, BT = "BiLevel/FourRooms-v0", "BiLevel/BuildingThermal-v0"


def four_rooms(beta=0.005, **kw):
    return BestResponse(gym.make(FR), beta=beta, **kw)


def building():
    return BestResponse(gym.make(BT), beta=0.1)


SMALL_MLP = {"first_steps": 20, "steps": 3}

#: (id, make best response, leader class, kwargs): every method on every family it is defined on
CASES = [
    ("fr-bchg", four_rooms, BCHG, {}),
    ("fr-bchg-expected-adam", four_rooms, BCHG,
     {"optimizer": "adam", "critic_kwargs": {"expected": True}, "partial": "td"}),
    ("fr-naive", four_rooms, NaivePGD, {}),
    ("fr-hpgd-mc", four_rooms, HPGD, {"batch_size": 200}),
    ("fr-hpgd-sa", four_rooms, HPGD, {"critic": "sarsa"}),
    ("fr-hpgd-oracle", four_rooms, HPGD, {"oracle_batch_size": 1000}),
    ("fr-sobirl", four_rooms, SoBiRL, {}),
    ("fr-exact", four_rooms, ExactAscent, {}),
    ("fr-kstep-reset", lambda: BestResponse(gym.make(FR), beta=0.005, follower=_kstep("reset")),
     BCHG, {}),
    ("fr-soft-q-learning", lambda: BestResponse(gym.make(FR), beta=0.005,
                                                follower=_follower("soft-q-learning")), NaivePGD,
     {}),
    ("bt-bchg", building, BCHG, {"batch_size": 500, "n_envs": 5, "critic_kwargs": SMALL_MLP}),
    ("bt-naive", building, NaivePGD, {"batch_size": 500, "n_envs": 5,
                                      "critic_kwargs": SMALL_MLP}),
    ("bt-hpgd", building, HPGD, {"batch_size": 500, "n_envs": 5, "critic_kwargs": SMALL_MLP}),
    ("toy-bchg", lambda: GameBestResponse(toy_game_v0.env(), beta=0.05), BCHG, {}),
    ("toy-naive-buffer", lambda: GameBestResponse(toy_game_v0.env(), beta=0.05), NaivePGD,
     {"buffer_episodes": 4}),
    ("toy-biac", lambda: GameBestResponse(toy_game_v0.env(), beta=0.05), BiAC, {}),
    ("toy-exact", lambda: GameBestResponse(toy_game_v0.env(), beta=0.05), ExactAscent, {}),
    ("lqr-bchg", lambda: GameBestResponse(lqr_game_v0.env(), beta=0.1), BCHG,
     {"explore_iterations": 2, "critic_kwargs": {"steps": 3}}),
    ("lqr-naive-buffer", lambda: GameBestResponse(lqr_game_v0.env(), beta=0.1), NaivePGD,
     {"buffer_episodes": 6, "critic_exploration": 0.3, "explore_iterations": 1,
      "critic_kwargs": {"steps": 3}}),
]


def _kstep(mode):
    return _follower(f"kstep:2:{mode}")


def _follower(spec):
    from bilevel_envs.followers import make_follower

    return make_follower(spec, gym.make(FR).unwrapped, 0.005, seed=7)


def _files(run: Path) -> dict[str, str]:
    return {name: (run / name).read_text() for name in ("metrics.csv", "summary.json")}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_resume_after_interruption_is_bit_for_bit(case, tmp_path):
    """Stop after 5 iterations (the log then holds one row past the checkpoint at 4), build
    everything anew and resume: logs, summary and θ equal the uninterrupted run's exactly."""
    _, make_br, cls, kwargs = case
    n, every = 7, 2
    full = cls(make_br(), seed=3, **kwargs)
    train(full, n, run_dir=tmp_path / "full", checkpoint_every=every, progress=False)

    first = cls(make_br(), seed=3, **kwargs)
    train(first, n, run_dir=tmp_path / "cut", checkpoint_every=every, progress=False,
          callback=lambda it, row: it < 4)
    rows = (tmp_path / "cut" / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 1 + 5 and not (tmp_path / "cut" / "summary.json").exists()
    again = cls(make_br(), seed=3, **kwargs)
    train(again, n, run_dir=tmp_path / "cut", checkpoint_every=every, progress=False)

    assert _files(tmp_path / "cut") == _files(tmp_path / "full")
    np.testing.assert_array_equal(again.theta, full.theta)


def test_a_folder_of_another_specification_is_refused(tmp_path):
    train(NaivePGD(four_rooms(0.001), seed=0), 3, run_dir=tmp_path, progress=False)
    with pytest.raises(RunMismatch, match=r"beta=0\.001 \(folder\) vs 0\.005 \(now\)"):
        train(NaivePGD(four_rooms(0.005), seed=0), 3, run_dir=tmp_path, progress=False)
    with pytest.raises(RunMismatch, match="iterations"):
        train(NaivePGD(four_rooms(0.001), seed=0), 5, run_dir=tmp_path, progress=False)
    with pytest.raises(RunMismatch, match="lr"):
        train(NaivePGD(four_rooms(0.001), seed=0, lr=0.5), 3, run_dir=tmp_path,
              progress=False)
    # the same specification reads the finished run back
    again = train(NaivePGD(four_rooms(0.001), seed=0), 3, run_dir=tmp_path, progress=False)
    assert [r["iteration"] for r in again] == [0.0, 1.0, 2.0]


def test_env_kwargs_and_follower_are_part_of_the_identity(tmp_path):
    train(NaivePGD(BestResponse(gym.make(FR), beta=0.005), seed=0), 2, run_dir=tmp_path,
          progress=False)
    with pytest.raises(RunMismatch, match="env_kwargs"):
        train(NaivePGD(BestResponse(gym.make(FR, slip_prob=0.44), beta=0.005), seed=0), 2,
              run_dir=tmp_path, progress=False)
    with pytest.raises(RunMismatch, match="follower"):
        train(NaivePGD(four_rooms(max_iterations=3, solver="value_iteration"), seed=0), 2,
              run_dir=tmp_path, progress=False)


def _hold(path, ready):
    with RunFolder(path, {"x": 1}):
        ready.set()
        time.sleep(30)


def test_a_run_folder_has_one_owner(tmp_path):
    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_hold, args=(tmp_path, ready))
    proc.start()
    try:
        assert ready.wait(60)
        with pytest.raises(RunBusy, match="in use by another process"):
            with RunFolder(tmp_path, {"x": 1}):
                pass
    finally:
        proc.kill()
        proc.join()
    with RunFolder(tmp_path, {"x": 1}):  # the lock died with its process
        pass


_KILL_SCRIPT = """
import sys, gymnasium as gym, bilevel_envs
from bilevel_agents import BCHG, train
from bilevel_envs.wrappers import BestResponse
leader = BCHG(BestResponse(gym.make("BiLevel/FourRooms-v0"), beta=0.005), seed=1)
train(leader, 400, run_dir=sys.argv[1], checkpoint_every=7, progress=False,
      callback=lambda it, row: print(it, flush=True))
"""


def test_no_iteration_is_lost_or_duplicated_after_kills(tmp_path):
    """SIGKILL a training process at three random moments; the log of the finished run equals
    an uninterrupted run's."""
    run = tmp_path / "killed"
    rng = np.random.default_rng(0)
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(run)],
                                stdout=subprocess.PIPE, text=True)
        target = int(rng.integers(20, 120))
        for line in proc.stdout:
            if int(line) >= target:
                break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(run)], check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([sys.executable, "-c", _KILL_SCRIPT, str(tmp_path / "straight")], check=True,
                   stdout=subprocess.DEVNULL)
    assert _files(run) == _files(tmp_path / "straight")


@pytest.mark.parametrize("bad", [0, -3, 1.5, "10"])
def test_counts_must_be_positive_integers(bad, tmp_path):
    with pytest.raises(ValueError, match="iterations must be an integer >= 1"):
        train(NaivePGD(four_rooms(), seed=0), bad, run_dir=tmp_path, progress=False)
    assert not (tmp_path / "summary.json").exists()


def test_summary_only_for_a_finished_run(tmp_path):
    train(NaivePGD(four_rooms(), seed=0), 5, run_dir=tmp_path, progress=False,
          callback=lambda it, row: it < 2)
    assert not (tmp_path / "summary.json").exists()
    train(NaivePGD(four_rooms(), seed=0), 5, run_dir=tmp_path, progress=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["iterations"] == 5 and np.isfinite(summary["start_objective"])


def test_checkpoints_are_plain_versioned_npz(tmp_path):
    leader = BCHG(building(), batch_size=500, n_envs=5, critic_kwargs=SMALL_MLP, seed=0)
    leader.update()
    path = tmp_path / "c.npz"
    save_checkpoint(path, leader.state_dict())
    with np.load(path, allow_pickle=False) as data:  # no pickle anywhere in the file
        meta = json.loads(str(data["__state__"]))
    assert meta["format"] == 1
    state = load_checkpoint(path)
    again = BCHG(building(), batch_size=500, n_envs=5, critic_kwargs=SMALL_MLP, seed=5)
    again.load_state_dict(state)
    np.testing.assert_array_equal(again.theta, leader.theta)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="damaged"):
        load_checkpoint(path)


def test_a_pickle_checkpoint_of_an_earlier_release_is_not_opened(tmp_path):
    (tmp_path / "checkpoint.pkl").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(RunMismatch, match="pickle checkpoint"):
        train(NaivePGD(four_rooms(), seed=0), 2, run_dir=tmp_path, progress=False)


def test_a_damaged_log_is_refused(tmp_path):
    train(NaivePGD(four_rooms(), seed=0), 4, run_dir=tmp_path, progress=False,
          callback=lambda it, row: it < 1)
    log = tmp_path / "metrics.csv"
    log.write_text(log.read_text() + "garbage,row\n")
    with pytest.raises(RunMismatch, match="damaged"):
        train(NaivePGD(four_rooms(), seed=0), 4, run_dir=tmp_path, progress=False)
