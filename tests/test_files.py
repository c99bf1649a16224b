"""files.py, the run files: checkpoints that carry code, shared run directories, corrupt files and
full disks. Each case names the file."""

import errno
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import QUICK, cli, perovskite
from latticegym.agents.trainer import CHECKPOINT, Trainer
from latticegym.cli import main
from latticegym.files import (
    CheckpointError,
    RunLock,
    RunLockedError,
    atomic_save,
    from_plain,
    load_checkpoint,
    previous,
    to_plain,
)
from latticegym.policies import load_policy
from latticegym.policies.pretrain import PretrainConfig, pretrain
from latticegym.rewards.band_gap import BandGapPredictor
from latticegym.rewards.registry import make as make_reward


class Payload:
    """Unpickling this runs `touch MARKER`: what a crafted checkpoint would do."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _malicious(path: Path, marker: Path, wrap=lambda p: p) -> Path:
    torch.save(wrap(Payload(marker)), path)
    return path


def test_checkpoints_never_run_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = _malicious(tmp_path / "evil.pt", marker, lambda p: {"format": 1, "spec": p})
    with pytest.raises(CheckpointError, match="refused"):
        load_policy(evil)
    with pytest.raises(CheckpointError, match="refused"):
        BandGapPredictor.load(evil)
    with pytest.raises(CheckpointError, match="refused"):
        gym.make("LatticeGym/Custom-v0", prior=str(evil), reward=make_reward("low_hhi"))
    run = tmp_path / "run"
    run.mkdir()
    _malicious(run / CHECKPOINT, marker, lambda p: {"iteration": 1, "best": p})
    with pytest.raises(CheckpointError, match="refused"):
        Trainer(replace(QUICK, out=str(run))).run(resume=True, progress=False)
    pre = tmp_path / "pre"
    pre.mkdir()
    _malicious(pre / "last.pt", marker, lambda p: {"config": p})
    with pytest.raises(CheckpointError, match="refused"):
        pretrain(PretrainConfig(data="unused.csv", out=str(pre), epochs=1), resume=True, progress=False)
    assert main(["sample", "--prior", str(evil), "--num", "1", "--out", str(tmp_path / "s.csv")]) == 1
    assert not marker.exists()


def test_plain_codec_round_trips_what_runs_save_and_refuses_unknown_classes():
    state = {"s": perovskite(), "a": np.arange(4.0), "o": np.array(["Sr", "Ti"], dtype=object), "n": np.int64(3), "t": (1, [2.0])}
    back = from_plain(to_plain(state))
    assert back["s"] == state["s"] and back["a"].tolist() == [0, 1, 2, 3] and back["o"].tolist() == ["Sr", "Ti"]
    assert back["n"] == 3 and back["t"] == (1, [2.0])
    with pytest.raises(CheckpointError, match="does not save"):
        from_plain({"__dataclass__": "os.system", "fields": {}})


def test_a_second_run_on_one_directory_is_refused_naming_the_holder(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from latticegym.files import RunLock; import time; lock = RunLock({str(tmp_path)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by process {holder.pid}"):
            Trainer(replace(QUICK, out=str(tmp_path))).run(progress=False)
        with pytest.raises(RunLockedError, match="in use"):
            pretrain(PretrainConfig(data="unused.csv", out=str(tmp_path), epochs=1), progress=False)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = tmp_path / "run"
    Trainer(replace(QUICK, out=str(run))).run(progress=False)
    assert load_checkpoint(previous(run / CHECKPOINT))["iteration"] == 1
    (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=f"{CHECKPOINT} is not a torch checkpoint.*falling back to the previous checkpoint"):
        Trainer(replace(QUICK, out=str(run), iterations=3)).run(resume=True, progress=False)
    assert load_checkpoint(run / CHECKPOINT)["iteration"] == 3
    import pandas as pd

    assert list(pd.read_csv(run / "metrics.csv").iteration) == [0, 1, 2]


def test_corrupt_files_without_a_fallback_give_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        Trainer(replace(QUICK, out=str(run))).run(resume=True, progress=False)
    assert main(["pretrain", "--data", "x.csv", "--out", str(tmp_path / "empty"), "--resume"]) == 1
    assert "no checkpoint" in capsys.readouterr().err


def test_a_full_disk_keeps_the_last_good_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    atomic_save({"iteration": 1}, path)
    real_save = torch.save

    def full_disk(obj, handle):
        handle.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="could not write .*No space left.*last good checkpoint.pt is kept"):
        atomic_save({"iteration": 2}, path, keep_previous=True)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(path)["iteration"] == 1 and not list(tmp_path.glob("*.tmp"))


def test_a_checkpoint_structure_that_names_a_class_is_refused_on_resume(tmp_path):
    run = tmp_path / "run"
    done, _ = cli(tmp_path, "train", "--env", "PerovskiteLowHHI", "--iterations", "1", "--batch-size", "6", "--steps", "10", "--out", str(run))
    assert done.returncode == 0, done.stderr[-2000:]
    state = load_checkpoint(run / "checkpoint.pt")
    saved = json.loads(state["best"][0]["structure"]["__structure__"])
    saved["sites"][0]["properties"] = {"x": {"@module": "this", "@class": "y"}}
    state["best"][0]["structure"]["__structure__"] = json.dumps(saved)
    atomic_save(state, run / "checkpoint.pt")
    done, _ = cli(tmp_path, "train", "--out", str(run), "--resume", "--iterations", "2")
    assert done.returncode == 1 and "names a class" in done.stderr
    assert "Beautiful is better than ugly" not in done.stdout + done.stderr  # `import this` never ran
