"""Hostile and careless use: checkpoints that carry code, shared run directories, corrupt files,
full disks, interrupts, non-finite training and bad values. Each case names the file or value."""

import errno
import gzip
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from latticegym.agents.trainer import CHECKPOINT, TrainConfig, Trainer
from latticegym.cli import main
from latticegym.files import CheckpointError, RunLock, RunLockedError, atomic_save, from_plain, load_checkpoint, previous, to_plain
from latticegym.policies import load_policy, load_prior, save_policy
from latticegym.policies.pretrain import PretrainConfig, pretrain
from latticegym.rewards.band_gap import BandGapPredictor
from latticegym.rewards.registry import make as make_reward

from helpers import perovskite

TINY = TrainConfig(env_id="LatticeGym/PerovskiteLowHHI-v0", iterations=2, batch_size=6, steps=4, seed=0)


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
        Trainer(replace(TINY, out=str(run))).run(resume=True, progress=False)
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
            Trainer(replace(TINY, out=str(tmp_path))).run(progress=False)
        with pytest.raises(RunLockedError, match="in use"):
            pretrain(PretrainConfig(data="unused.csv", out=str(tmp_path), epochs=1), progress=False)
    finally:
        holder.kill()
        holder.wait()
    with RunLock(tmp_path):  # the kernel dropped the dead holder's lock
        pass


def test_cli_refuses_a_locked_run_directory_in_one_line(tmp_path, capsys):
    with RunLock(tmp_path / "run"):
        code = main(["train", "--env", TINY.env_id, "--iterations", "1", "--batch-size", "2", "--steps", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and f"process {os.getpid()}" in err and "Traceback" not in err


def test_resume_rewrites_policy_pt_and_clears_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    Trainer(replace(TINY, out=str(run), iterations=1)).run(progress=False)
    expected = load_checkpoint(run / CHECKPOINT)["policy"]
    (run / "policy.pt").write_bytes(b"stale")
    (run / "policy.pt.tmp").write_bytes(b"")
    Trainer(replace(TINY, out=str(run), iterations=1)).run(resume=True, progress=False)
    assert not (run / "policy.pt.tmp").exists()
    saved = load_checkpoint(run / "policy.pt")["state_dict"]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path):
    run = tmp_path / "run"
    Trainer(replace(TINY, out=str(run))).run(progress=False)
    assert load_checkpoint(previous(run / CHECKPOINT))["iteration"] == 1
    (run / CHECKPOINT).write_bytes((run / CHECKPOINT).read_bytes()[:1000])  # truncated
    with pytest.warns(UserWarning, match=f"{CHECKPOINT} is not a torch checkpoint.*falling back to the previous checkpoint"):
        Trainer(replace(TINY, out=str(run), iterations=3)).run(resume=True, progress=False)
    assert load_checkpoint(run / CHECKPOINT)["iteration"] == 3
    import pandas as pd

    assert list(pd.read_csv(run / "metrics.csv").iteration) == [0, 1, 2]


def test_corrupt_files_without_a_fallback_give_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / CHECKPOINT).write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        Trainer(replace(TINY, out=str(run))).run(resume=True, progress=False)
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


def test_ctrl_c_prints_where_the_run_stopped_and_how_to_resume(tmp_path, capsys, monkeypatch):
    calls = []

    def step(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_step(self)

    real_step = Trainer.step
    monkeypatch.setattr(Trainer, "step", step)
    out = tmp_path / "run"
    code = main(["train", "--env", TINY.env_id, "--iterations", "3", "--batch-size", "4", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted in iteration 1" in err and "--resume" in err and "Traceback" not in err


def test_non_finite_training_stops_before_saving(tmp_path, monkeypatch):
    trainer = Trainer(replace(TINY, out=str(tmp_path), iterations=3))
    real_update = trainer.agent.update

    def poisoned(rollout, iteration):
        stats = real_update(rollout, iteration)
        if iteration == 1:
            with torch.no_grad():
                next(trainer.policy.parameters()).fill_(float("nan"))
        return stats

    trainer.agent.update = poisoned
    with pytest.raises(FloatingPointError, match="iteration 1: .*NaN.*holds iteration 0"):
        trainer.run(progress=False)
    assert load_checkpoint(tmp_path / CHECKPOINT)["iteration"] == 1
    load_policy(tmp_path / "policy.pt")  # still the finite policy of iteration 0


def test_non_finite_policies_are_never_written_or_sampled(tmp_path, capsys):
    policy = load_prior("perov_5", num_steps=2)
    with torch.no_grad():
        next(policy.parameters()).fill_(float("nan"))
    with pytest.raises(ValueError, match="non-finite weights"):
        save_policy(policy, tmp_path / "nan.pt")
    payload = load_checkpoint(load_prior.__globals__["SHIPPED"] / "perov_5.pt")
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = torch.full_like(payload["state_dict"][first], float("nan"))
    torch.save(payload, tmp_path / "nan.pt")
    assert main(["sample", "--prior", str(tmp_path / "nan.pt"), "--num", "2", "--out", str(tmp_path / "s.csv")]) == 1
    assert "non-finite weights" in capsys.readouterr().err and not (tmp_path / "s.csv").exists()


def _bad_priors(tmp_path: Path) -> dict[str, Path]:
    good = load_checkpoint(load_prior.__globals__["SHIPPED"] / "perov_5.pt")
    files = {}

    def put(name, write):
        files[name] = tmp_path / name
        write(files[name])

    put("truncated.pt", lambda p: p.write_bytes((load_prior.__globals__["SHIPPED"] / "perov_5.pt").read_bytes()[:5000]))
    put("table.csv", lambda p: p.write_text("material_id,cif\n1,x\n"))
    put("empty.pt", lambda p: p.write_bytes(b""))
    put("list.pt", lambda p: torch.save([1, 2, 3], p))
    put("wrong_spec.pt", lambda p: torch.save({**good, "spec": {"elements": "nope"}}, p))
    shape = {**good, "state_dict": {k: torch.zeros(2, 2) for k in good["state_dict"]}}
    put("wrong_shape.pt", lambda p: torch.save(shape, p))
    put("checkpoint.pt", lambda p: torch.save({"iteration": 3, "policy": {}}, p))
    return files


def test_bad_prior_files_are_one_line_errors(tmp_path, capsys):
    for name, path in _bad_priors(tmp_path).items():
        code = main(["sample", "--prior", str(path), "--num", "1", "--out", str(tmp_path / "s.csv")])
        err = capsys.readouterr().err
        assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, (name, err)
        assert str(path) in err and ("not a" in err or "training checkpoint" in err), (name, err)


def test_sample_accepts_a_run_directory(tmp_path):
    run = tmp_path / "run"
    Trainer(replace(TINY, out=str(run), iterations=1)).run(progress=False)
    assert main(["sample", "--prior", str(run), "--num", "2", "--steps", "2", "--out", str(tmp_path / "s.csv")]) == 0


def test_pretrain_on_unusable_data_says_how_many_rows_and_why(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("material_id,cif\na,not a cif\nb,\nc,also not\n")
    with pytest.raises(ValueError, match=r"no usable crystals .*3 rows rejected"):
        pretrain(PretrainConfig(data=str(bad), out=str(tmp_path / "out"), epochs=1), progress=False)


def test_a_reference_without_readable_rows_is_refused(tmp_path):
    ref = tmp_path / "ref.csv.gz"
    with gzip.open(ref, "wt") as handle:
        handle.write("material_id,cif\na,garbage\n")
    with pytest.raises(ValueError, match="no readable crystals"):
        Trainer(replace(TINY, out=str(tmp_path / "run"), novelty_reference=str(ref)))


def test_resume_accepts_the_same_reference_at_another_path_only(tmp_path):
    # A run moved between machines finds its data elsewhere; different data is still refused.
    first, moved, other = tmp_path / "a.csv", tmp_path / "moved" / "a.csv", tmp_path / "b.csv"
    moved.parent.mkdir()
    barium = perovskite()
    barium.replace_species({"Sr": "Ba"})
    for path, s in ((first, perovskite()), (moved, perovskite()), (other, barium)):
        path.write_text(f"material_id,cif\nx,\"{s.to(fmt='cif')}\"\n")
    Trainer(replace(TINY, out=str(tmp_path / "run"), iterations=1, novelty_reference=str(first))).run(progress=False)
    Trainer(replace(TINY, out=str(tmp_path / "run"), novelty_reference=str(moved))).run(resume=True, progress=False)
    with pytest.raises(ValueError, match="novelty_reference"):
        Trainer(replace(TINY, out=str(tmp_path / "run"), iterations=3, novelty_reference=str(other))).run(resume=True, progress=False)


def test_set_values_parse_with_the_field_type():
    from latticegym.options import parse_option
    from latticegym.agents.ppo import PPOConfig

    assert parse_option(PPOConfig, "lr", "1e-5") == 1e-5  # YAML would read this as a string
    assert parse_option(PPOConfig, "adaptive_kl_target", "none") is None
    assert parse_option(PPOConfig, "epochs", "3") == 3
    for key, value, message in [("lr", ".nan", "finite float"), ("epochs", "2.5", "expected int"), ("epochs", "-1", r"epochs must be in \[1, 1e\+09\]"), ("minibatch_size", "0", r"in \[1, "), ("lr", "1e300", r"lr must be in \(0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            PPOConfig(**{key: parse_option(PPOConfig, key, value)})


def test_choices_and_fractions_are_checked_by_the_one_mechanism():
    from latticegym.agents import ActiveConfig, GRPOConfig, PPOConfig

    for make, message in [
        (lambda: PPOConfig(replay_mix=1.0), r"PPOConfig.replay_mix must be in \[0, 1\), got 1.0"),
        (lambda: PPOConfig(advantage_groups="size"), r"PPOConfig.advantage_groups must be one of \('batch', 'num_atoms'\), got 'size'"),
        (lambda: GRPOConfig(kl_to="reference"), r"GRPOConfig.kl_to must be one of \('prior', 'rollout'\)"),
        (lambda: ActiveConfig(baseline="mean"), r"ActiveConfig.baseline must be one of \('pool', 'batch'\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()
    assert PPOConfig(replay_mix=0.0).replay_mix == 0.0


def test_env_constructor_and_reset_validate_their_inputs():
    import latticegym

    with pytest.raises(ValueError, match=r"num_envs must be an integer in \[1, 1e\+09\], got 0"):
        latticegym.make_vec("LatticeGym/PerovskiteLowHHI-v0", num_envs=0)
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=2)
    with pytest.raises(ValueError, match=r"options\['num_atoms'\] must be an integer"):
        env.reset(options={"num_atoms": "5"})


# (argv, what the one-line error must name). None of these may print a traceback or exit 0.
BAD_ARGS = [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--iterations", v], "--iterations") for v in ("0", "-1", "x", "1.5", "")
] + [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--batch-size", v], "--batch-size") for v in ("0", "-4", "nan")
] + [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--steps", v], "--steps") for v in ("0", "-2", "inf")
] + [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--evaluate", v], "--evaluate") for v in ("-3", "many")
] + [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--rollout-workers", "-1"], "--rollout-workers"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--agent", "dqn"], "--agent"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--diversity", "some"], "--diversity"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--wandb", "cloud"], "--wandb"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--resume"], "--resume"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--reference", "{tmp}/missing.csv"], "missing.csv"),
    (["train", "--env", "LatticeGym/Nope-v0", "--out", "{tmp}/r"], "Nope"),
    (["train", "--out", "{tmp}/r"], "--env"),
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0"], "--out"),
] + [
    (["train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", "{tmp}/r", "--set", s], name)
    for s, name in [
        ("lr=abc", "lr"),
        ("lr=.nan", "lr"),
        ("lr=-1", "lr"),
        ("lr=0", "lr"),
        ("kl_coef=.nan", "kl_coef"),
        ("kl_coef=-0.1", "kl_coef"),
        ("epochs=-1", "epochs"),
        ("epochs=0", "epochs"),
        ("epochs=1.5", "epochs"),
        ("minibatch_size=0", "minibatch_size"),
        ("step_fraction=0", "step_fraction"),
        ("step_fraction=1.5", "step_fraction"),
        ("clip_range=0", "clip_range"),
        ("replay_capacity=-2", "replay_capacity"),
        ("replay_mix=1", "replay_mix"),
        ("advantage_groups=elements", "advantage_groups"),
        ("nosuch=1", "nosuch"),
        ("=3", "--set"),
        ("lr", "--set"),
    ]
] + [
    (["sample", "--prior", "perov_5", "--out", "{tmp}/s.csv", "--num", v], "--num") for v in ("0", "-5", "ten")
] + [
    (["sample", "--prior", "perov_5", "--out", "{tmp}/s.csv", "--num", "2", "--batch-size", "0"], "--batch-size"),
    (["sample", "--prior", "perov_5", "--out", "{tmp}/s.csv", "--num", "2", "--steps", "0"], "--steps"),
    (["sample", "--prior", "nope", "--out", "{tmp}/s.csv", "--num", "2"], "nope"),
    (["sample", "--prior", "{tmp}", "--out", "{tmp}/s.csv", "--num", "2"], "{tmp}"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--epochs", "0"], "--epochs"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--batch-size", "-1"], "--batch-size"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--lr", "0"], "--lr"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--hidden", "0"], "--hidden"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--checkpoint-every", "0"], "--checkpoint-every"),
    (["pretrain", "--data", "{tmp}/d.csv", "--out", "{tmp}/p", "--minutes", "-1"], "--minutes"),
    (["pretrain", "--data", "{tmp}/missing.csv", "--out", "{tmp}/p"], "missing.csv"),
    (["bench", "--out", "{tmp}/b", "--seeds", "0"], "--seeds"),
    (["bench", "--out", "{tmp}/b", "--suite", "nope"], "nope"),
    (["bench", "--out", "{tmp}/b", "--agents", "ppo,dqn"], "dqn"),
    (["evaluate", "--samples", "{tmp}/missing.csv", "--reference", "perov_5"], "missing.csv"),
    (["evaluate", "--samples", "{tmp}/s.csv", "--reference", "{tmp}/r.csv", "--workers", "0"], "--workers"),
    (["nosuchcommand"], "nosuchcommand"),
]


def test_bad_cli_arguments_are_refused_in_one_line(tmp_path, capsys):
    assert len(BAD_ARGS) >= 50
    for argv, name in BAD_ARGS:
        argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
        name = name.replace("{tmp}", str(tmp_path))
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        err = capsys.readouterr().err
        assert code not in (0, None), argv
        assert "Traceback" not in err, (argv, err)
        assert name in err, (argv, name, err)
