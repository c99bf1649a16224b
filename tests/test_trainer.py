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
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from latticegym.agents import TrainConfig, Trainer, make_agent
from latticegym.datasets import read_csv
from latticegym.rewards.cache import Cached
from latticegym.rewards.filters import DiversityFilter
from latticegym.rewards.properties import HHI

REQUIRED = ["iteration", "evaluations", "reward_mean", "reward_max", "success_rate", "validity", "uniqueness", "novelty", "kl", "t_sample", "t_reward", "t_update"]
TINY = TrainConfig(env_id="LatticeGym/PerovskiteLowHHI-v0", iterations=2, batch_size=6, steps=10, seed=0)


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
