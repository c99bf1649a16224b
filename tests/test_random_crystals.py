"""The PyXtal floor: random symmetric crystals of the training compositions, through the same screen and counts."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import shared_file

from latticegym.agents.random_crystals import RandomCrystals
from latticegym.agents.trainer import TrainConfig, Trainer
from latticegym.benchmarks.measure.guard_thresholds import pyxtal_samples, shares
from latticegym.datasets import read_csv
from latticegym.envs.tasks import get_task


@pytest.fixture(scope="module")
def real():
    return read_csv(shared_file("perov_5_val.csv.gz"), skip_bad=True, limit=500).structures


def test_the_floor_draws_training_compositions_and_symmetric_cells(real):
    crystals = pyxtal_samples(real, 24, seed=1)
    formulas = {s.composition.formula for s in real}
    assert len(crystals) == 24 and all(s.composition.formula in formulas for s in crystals)
    assert sum(s.get_space_group_info()[1] > 1 for s in crystals) >= 12  # most are symmetric, not P1


def test_the_floors_crystals_pass_the_guards_at_the_stated_rate(real):
    stated = shares()["perov_5"]["pyxtal_samples"]["pass_rate"]  # `python -m latticegym.benchmarks.measure.guard_thresholds --write`
    guards = get_task("PerovskiteLowHHI").make_reward().guards
    n = 96
    rate = np.mean([not guards.check(s) for s in pyxtal_samples(real, n, seed=2)])
    assert abs(rate - stated) <= 3 * np.sqrt(stated * (1 - stated) / n) + 1 / n, (rate, stated)


def test_the_floor_needs_training_crystals():
    with pytest.raises(ValueError, match="--reference"):
        RandomCrystals().attach(None, [])


def test_the_floor_runs_the_pipeline_and_never_learns(tmp_path, perov_path):
    cfg = TrainConfig(env_id="PerovskiteLowHHI", agent="pyxtal", iterations=2, batch_size=8, steps=4, out=str(tmp_path), novelty_reference=str(perov_path), hull_references=50)
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.policy.network.state_dict().items()}
    trainer.run(progress=False)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.sampled) == [8, 16] and (metrics.kl == 0).all() and metrics.evaluations.iloc[-1] <= 16
    assert all((trainer.policy.network.state_dict()[k] == v).all() for k, v in before.items())
    resumed = Trainer(replace(cfg, iterations=3))  # its random state resumes like any agent's
    resumed.run(resume=True, progress=False)
    assert list(pd.read_csv(tmp_path / "metrics.csv").iteration) == [0, 1, 2]
