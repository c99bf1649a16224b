import gzip
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import QUICK, TINY, cli, perovskite
from latticegym.agents import Trainer, make_agent
from latticegym.agents.trainer import CHECKPOINT
from latticegym.cli import main
from latticegym.datasets import read_csv, write_csv
from latticegym.files import load_checkpoint
from latticegym.policies import load_policy, load_prior, save_policy
from latticegym.rewards.cache import Cached
from latticegym.rewards.filters import DiversityFilter
from latticegym.rewards.properties import HHI
from pymatgen.core import Lattice, Structure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

REQUIRED = ["iteration", "evaluations", "reward_mean", "reward_max", "success_rate", "validity", "uniqueness", "novelty", "kl", "t_sample", "t_reward", "t_update"]


def test_a_run_writes_metrics_best_evaluated_and_tensorboard(tmp_path):
    Trainer(replace(TINY, out=str(tmp_path / "run"), agent="ppo")).run(progress=False)
    run = tmp_path / "run"
    metrics = pd.read_csv(run / "metrics.csv")
    assert list(metrics.iteration) == [0, 1] and set(REQUIRED) <= set(metrics.columns)
    assert metrics.evaluations.is_monotonic_increasing and metrics.evaluations.iloc[-1] <= 12
    evaluated = pd.read_csv(run / "evaluated.csv")  # the screen's survivors only
    assert len(evaluated) == metrics.evaluations.iloc[-1] == metrics.evaluated.sum()
    assert {"cif", "reward", "hhi", "success", "discovery", "e_hull", "stable", "novel", "reason"} <= set(evaluated.columns)
    assert (evaluated.e_hull <= 0.1).all() and evaluated.stable.all()
    best = read_csv(run / "best.csv")  # CDVAE format: readable by our own reader
    assert len(best) >= 1 and {"reward", "hhi"} <= set(best.properties)
    assert np.all(np.diff(best.properties["reward"]) <= 0)
    events = EventAccumulator(str(run / "tensorboard"), size_guidance={"histograms": 0, "scalars": 0})
    events.Reload()
    assert [e.step for e in events.Scalars("charts/reward_mean")] == [0, 1]  # CleanRL's namespaces; metrics.csv keeps bare keys
    np.testing.assert_allclose([e.value for e in events.Scalars("charts/success_rate")], metrics.success_rate, rtol=1e-6)
    np.testing.assert_allclose([e.value for e in events.Scalars("losses/policy_loss")], metrics.policy_loss, rtol=1e-6)
    assert {"time/sample", "time/update", "charts/kl_last_step"} <= set(events.Tags()["scalars"])
    assert "property/hhi" in events.Tags()["histograms"]
    assert (run / "policy.pt").exists()
    with pytest.raises(FileExistsError, match="--resume"):
        Trainer(replace(TINY, out=str(run))).run(progress=False)


def test_resume_refuses_changed_settings(tmp_path):
    Trainer(replace(TINY, out=str(tmp_path), iterations=1)).run(progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        Trainer(replace(TINY, out=str(tmp_path), batch_size=4)).run(resume=True, progress=False)


def test_a_run_moved_between_cpu_and_cuda_resumes_with_a_drawn_seed(tmp_path):
    # A CUDA generator's state is 16 bytes, a CPU one's 5056: a GPU run finished on a CPU must not crash.
    from latticegym.files import atomic_save, load_checkpoint

    Trainer(replace(TINY, out=str(tmp_path), iterations=1)).run(progress=False)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    state["generator"] = state["agent"]["rng"] = torch.arange(16, dtype=torch.uint8)  # a CUDA generator's state
    atomic_save(state, tmp_path / "checkpoint.pt")
    with pytest.warns(UserWarning, match="on another kind of device") as warned:
        Trainer(replace(TINY, out=str(tmp_path))).run(resume=True, progress=False)
    messages = " ".join(str(w.message) for w in warned)
    assert "sampling generator" in messages and "ppo agent's generator" in messages
    assert list(pd.read_csv(tmp_path / "metrics.csv").iteration) == [0, 1]


def test_unknown_agent_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown agent 'dqn'"):
        make_agent("dqn", None, None)
    with pytest.raises(ValueError, match=r"unknown option 'lrr' for agent 'ppo'"):
        make_agent("ppo", None, None, {"lrr": 1.0})


def test_reward_state_round_trips(tmp_path):
    from helpers import perovskite, rocksalt

    cached = Cached(HHI())
    cached([perovskite(), rocksalt()])
    fresh = Cached(HHI())
    fresh.load_state_dict(cached.state_dict())
    fresh([perovskite()])
    assert fresh.evaluations == 2 and fresh.hits == 1
    div = DiversityFilter(mode="structure")
    div([perovskite()] * 2, np.ones(2), np.ones(2, bool))
    other = DiversityFilter(mode="structure")
    other.load_state_dict(div.state_dict())
    assert other([perovskite()], np.ones(1), np.ones(1, bool))[0] == div([perovskite()], np.ones(1), np.ones(1, bool))[0]


def test_wandb_offline_run_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    Trainer(replace(TINY, out=str(tmp_path), iterations=1, wandb="offline")).run(progress=False)
    runs = list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def _train(out, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["--env", TINY.env_id, "--agent", "ppo", "--batch-size", "6", "--steps", "8", "--seed", "3", "--out", str(out), *extra]
    return subprocess.Popen([sys.executable, "-m", "latticegym.cli", "train", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_kill_mid_run_and_resume_is_exact(tmp_path):
    iterations = "40"  # many short iterations, so the kill lands mid-run on a fast machine too
    reference = _train(tmp_path / "reference", "--iterations", iterations)
    assert reference.wait(timeout=600) == 0, reference.stderr.read()

    victim = _train(tmp_path / "victim", "--iterations", iterations)
    metrics = tmp_path / "victim" / "metrics.csv"
    deadline = time.time() + 300
    while time.time() < deadline and (not metrics.exists() or len(metrics.read_text().splitlines()) < 3):
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done = len(pd.read_csv(metrics))
    assert 2 <= done < 40, "the kill must land mid-run"

    resumed = _train(tmp_path / "victim", "--iterations", iterations, "--resume")
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    a, b = pd.read_csv(tmp_path / "reference" / "metrics.csv"), pd.read_csv(metrics)
    assert list(b.iteration) == list(range(40))
    same = [c for c in a.columns if not c.startswith("t_")]
    pd.testing.assert_frame_equal(a[same], b[same])
    ea, eb = pd.read_csv(tmp_path / "reference" / "evaluated.csv"), pd.read_csv(tmp_path / "victim" / "evaluated.csv")
    pd.testing.assert_frame_equal(ea, eb)
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reference" / "best.csv"), pd.read_csv(tmp_path / "victim" / "best.csv"))
    wa = torch.load(tmp_path / "reference" / "policy.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "victim" / "policy.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_mlip_rewards_score_inside_training(tmp_path):
    # Regression: rollouts sample under no_grad, and CHGNet's forces need autograd.
    Trainer(replace(TINY, env_id="LatticeGym/PerovskiteFormationEnergy-v0", out=str(tmp_path), iterations=1, steps=20)).run(progress=False)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics.ok_rate.iloc[0] > 0.5 and np.isfinite(metrics.formation_energy_mean.iloc[0])


def test_resume_rewrites_policy_pt_and_clears_stale_temporaries(tmp_path):
    run = tmp_path / "run"
    Trainer(replace(QUICK, out=str(run), iterations=1)).run(progress=False)
    expected = load_checkpoint(run / CHECKPOINT)["policy"]
    (run / "policy.pt").write_bytes(b"stale")
    (run / "policy.pt.tmp").write_bytes(b"")
    Trainer(replace(QUICK, out=str(run), iterations=1)).run(resume=True, progress=False)
    assert not (run / "policy.pt.tmp").exists()
    saved = load_checkpoint(run / "policy.pt")["state_dict"]
    assert all(torch.equal(saved[k], expected[k]) for k in expected)


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
    code = main(["train", "--env", QUICK.env_id, "--iterations", "3", "--batch-size", "4", "--steps", "2", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted in iteration 1" in err and "--resume" in err and "Traceback" not in err


def test_non_finite_training_stops_before_saving(tmp_path, monkeypatch):
    trainer = Trainer(replace(QUICK, out=str(tmp_path), iterations=3))
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


def test_a_reference_without_readable_rows_is_refused(tmp_path):
    ref = tmp_path / "ref.csv.gz"
    with gzip.open(ref, "wt") as handle:
        handle.write("material_id,cif\na,garbage\n")
    with pytest.raises(ValueError, match="no readable crystals"):
        Trainer(replace(QUICK, out=str(tmp_path / "run"), novelty_reference=str(ref)))


def test_resume_accepts_the_same_reference_at_another_path_only(tmp_path):
    # A run moved between machines finds its data elsewhere; different data is still refused.
    first, moved, other = tmp_path / "a.csv", tmp_path / "moved" / "a.csv", tmp_path / "b.csv"
    moved.parent.mkdir()
    barium = perovskite()
    barium.replace_species({"Sr": "Ba"})
    for path, s in ((first, perovskite()), (moved, perovskite()), (other, barium)):
        path.write_text(f"material_id,cif\nx,\"{s.to(fmt='cif')}\"\n")
    Trainer(replace(QUICK, out=str(tmp_path / "run"), iterations=1, novelty_reference=str(first))).run(progress=False)
    Trainer(replace(QUICK, out=str(tmp_path / "run"), novelty_reference=str(moved))).run(resume=True, progress=False)
    with pytest.raises(ValueError, match="novelty_reference"):
        Trainer(replace(QUICK, out=str(tmp_path / "run"), iterations=3, novelty_reference=str(other))).run(resume=True, progress=False)


def test_a_reference_of_another_chemistry_is_refused(tmp_path):
    carbon = write_csv([Structure(Lattice.cubic(3.567), ["C"] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]])], tmp_path / "carbon.csv")
    done, _ = cli(tmp_path, "train", "--env", "PerovskiteLowHHI", "--iterations", "1", "--batch-size", "2", "--steps", "3", "--out", "r", "--reference", str(carbon))
    assert done.returncode == 1 and "hold elements the prior never generates" in done.stderr


def test_ctrl_c_before_the_first_iteration_says_nothing_was_saved(tmp_path, monkeypatch, capsys):
    from latticegym.agents.trainer import Trainer
    from latticegym.cli import main

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "step", interrupted)
    assert main(["train", "--env", "PerovskiteLowHHI", "--batch-size", "2", "--steps", "3", "--out", str(tmp_path / "r")]) == 130
    err = capsys.readouterr().err
    assert "nothing was saved: run the command again (without --resume)" in err and "--resume` continues" not in err
