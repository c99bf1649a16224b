import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import QUICK, diamond, perovskite, rocksalt, run_cli
from latticegym import DEFAULT_THREADS, set_threads
from latticegym.agents.trainer import Trainer
from latticegym.cli import main
from latticegym.datasets import read_csv, write_csv
from latticegym.files import RunLock, load_checkpoint
from latticegym.policies import load_prior

SUBCOMMANDS = ["evaluate", "pretrain", "sample", "train", "bench", "envs"]


def test_help_lists_subcommands():
    out = run_cli("--help")
    assert out.returncode == 0
    for name in SUBCOMMANDS:
        assert name in out.stdout


@pytest.mark.parametrize("name", SUBCOMMANDS)
def test_each_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    assert exit_.value.code == 0
    assert "usage: latticegym " + name in capsys.readouterr().out


def test_evaluate_writes_json(tmp_path):
    samples = write_csv([perovskite(), rocksalt(), diamond()], tmp_path / "samples.csv")
    reference = write_csv([perovskite(), diamond()], tmp_path / "perov_ref.csv")
    out = tmp_path / "metrics.json"
    result = run_cli("evaluate", "--samples", str(samples), "--reference", str(reference), "--train", str(reference), "--out", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    for key in ("struct_validity", "comp_validity", "uniqueness", "novelty", "cov_recall", "cov_precision", "wdist_density", "wdist_num_elements"):
        assert key in metrics
    assert metrics["dataset"] == "perov_5"  # guessed from the reference file name
    assert metrics["novelty"] == pytest.approx(1 / 3)  # only rocksalt is new
    assert "cov_recall" in result.stdout


def test_evaluate_counts_unreadable_sample_rows_as_invalid(tmp_path):
    samples = write_csv([perovskite(), rocksalt()], tmp_path / "samples.csv")
    text = samples.read_text().replace("_cell_length_a", "_cell_length_q", 1)
    samples.write_text(text)
    reference = write_csv([perovskite()], tmp_path / "ref.csv")
    out = tmp_path / "m.json"
    result = run_cli("evaluate", "--samples", str(samples), "--reference", str(reference), "--dataset", "perov_5", "--out", str(out), "--workers", "1")
    assert result.returncode == 0, result.stderr
    metrics = json.loads(out.read_text())
    assert metrics["num_samples"] == 2 and metrics["validity"] == 0.5
    assert "skipped 1 unreadable rows" in result.stderr


def test_missing_file_is_a_clear_error(tmp_path):
    result = run_cli("evaluate", "--samples", str(tmp_path / "nope.csv"), "--reference", str(tmp_path / "nope.csv"))
    assert result.returncode == 1
    assert "nope.csv: no such file" in result.stderr


def test_envs_lists_every_id_with_prior_reward_target_and_cost():
    from latticegym.envs.registration import env_ids

    result = run_cli("envs")
    assert result.returncode == 0
    for env_id in env_ids():
        assert env_id in result.stdout
    assert "MLIP relaxation" in result.stdout and "HHI (production) <= 1250" in result.stdout and "carbon_24" in result.stdout
    guards = [line.split() for line in result.stdout.splitlines() if "refused" in line and "%" in line]
    assert {g[0] for g in guards} >= {"mean_contact_range", "max_vacuum_gap", "anions", "coordination"}
    assert all(g[-3].endswith("%") and g[-1].endswith("%") for g in guards)  # real crystals / prior samples refused


def test_train_prints_before_and_after_and_where_things_are(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--iterations", "1", "--batch-size", "4", "--steps", "4", "--out", str(out), "--evaluate", "8")
    assert result.returncode == 0, result.stderr
    assert "prior" in result.stdout and "fine-tuned" in result.stdout and str(out / "best.csv") in result.stdout
    result = run_cli("train", "--env", "LatticeGym/PerovskiteLowHHI-v0", "--out", str(tmp_path / "x"), "--set", "lr")
    assert result.returncode == 1 and "--set expects KEY=VALUE, got 'lr'" in result.stderr


def test_the_fit_split_is_train_and_val_as_pretraining_uses_them(tmp_path):
    from latticegym.cli import _load_split

    structures = []
    for i in range(20):
        s = perovskite()
        s.scale_lattice(s.volume * (1 + 0.01 * i))
        structures.append(s)
    path = write_csv(structures, tmp_path / "perov.csv")
    splits = read_csv(path).split(seed=0)
    fit = _load_split(str(path), "fit", 0, "train")
    assert len(fit) == 18 and sorted(fit.cifs) == sorted(splits["train"].cifs + splits["val"].cifs)
    assert not set(fit.cifs) & set(splits["test"].cifs)


def test_every_train_option_sets_the_trainconfig_field_it_is_named_for():
    import argparse
    from dataclasses import fields

    from latticegym.agents.trainer import TrainConfig
    from latticegym.cli import build_parser

    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    dests = {a.dest for a in commands.choices["train"]._actions}
    handled_apart = {"help", "resume", "set", "evaluate", "plugin", "threads", "verbose"}  # agent_options, plugins; not settings
    assert dests - handled_apart <= {f.name for f in fields(TrainConfig)}, dests - handled_apart - {f.name for f in fields(TrainConfig)}
    assert {"env_id", "novelty_reference", "batch_size", "budget", "screen"} <= dests


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("latticegym 0.")


def test_threads_option_and_python_setting():
    main(["envs"])
    assert torch.get_num_threads() == DEFAULT_THREADS == 1
    set_threads(2)
    assert torch.get_num_threads() == 2
    set_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_threads(0)


def test_cuda_and_unknown_devices_are_one_line_errors(capsys):
    for device in (["cuda"] if not torch.cuda.is_available() else []) + ["gpu", "cuda:x"]:
        with pytest.raises(SystemExit):
            main(["sample", "--prior", "perov_5", "--num", "1", "--out", "x.csv", "--device", device])
        err = capsys.readouterr().err
        assert "argument --device" in err and "devices here: cpu" in err and "Traceback" not in err


def test_a_task_name_without_namespace_works_and_a_typo_gets_suggestions(capsys, tmp_path):
    from latticegym.agents.trainer import TrainConfig

    assert TrainConfig(env_id="PerovskiteLowHHI").env_id == "LatticeGym/PerovskiteLowHHI-v0"
    assert main(["train", "--env", "PerovskitLowHHI", "--out", str(tmp_path)]) == 1
    assert "did you mean LatticeGym/PerovskiteLowHHI-v0" in capsys.readouterr().err


def test_model_chatter_is_hidden_unless_verbose_and_missing_novelty_is_explained(tmp_path):
    args = ["train", "--env", "LatticeGym/PerovskiteFormationEnergy-v0", "--iterations", "1", "--batch-size", "4", "--steps", "10"]
    quiet = subprocess.run([sys.executable, "-m", "latticegym.cli", *args, "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "initialized with" not in quiet.stdout + quiet.stderr and "CHGNet will run" not in quiet.stdout + quiet.stderr
    assert "no --reference: the screen cannot check novelty" in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "latticegym.cli", *args, "--out", str(tmp_path / "v"), "-v"], capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0 and "initialized with" in loud.stderr


def test_cli_refuses_a_locked_run_directory_in_one_line(tmp_path, capsys):
    with RunLock(tmp_path / "run"):
        code = main(["train", "--env", QUICK.env_id, "--iterations", "1", "--batch-size", "2", "--steps", "2", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 1 and f"process {os.getpid()}" in err and "Traceback" not in err


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
    Trainer(replace(QUICK, out=str(run), iterations=1)).run(progress=False)
    assert main(["sample", "--prior", str(run), "--num", "2", "--steps", "2", "--out", str(tmp_path / "s.csv")]) == 0


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
