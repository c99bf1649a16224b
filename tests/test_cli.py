import json
import subprocess
import sys

import pytest

from latticegym.cli import main
from latticegym.datasets import read_csv, write_csv

from helpers import diamond, perovskite, rocksalt

SUBCOMMANDS = ["evaluate", "pretrain", "sample", "train", "bench", "envs"]


def run_cli(*args, timeout: float = 300):
    return subprocess.run([sys.executable, "-m", "latticegym.cli", *args], capture_output=True, text=True, timeout=timeout)


# Runs the CLI as the only child of a fresh Python, then prints the child's peak RSS (kB; Linux).
PEAK_RSS = "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"


def run_cli_measured(*args, timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """`run_cli`, plus the command's peak resident memory in GB."""
    done = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "latticegym.cli", *args], capture_output=True, text=True, timeout=timeout)
    return done, int(done.stdout.strip().splitlines()[-1]) / 1024**2


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
