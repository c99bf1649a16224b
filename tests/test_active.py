"""The surrogate of the reward and the active-learning agent that chooses what to evaluate."""

import itertools
from types import SimpleNamespace
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import perovskite
from pymatgen.core import Lattice, Structure

from latticegym.agents.active import ActiveConfig, ActiveLearning
from latticegym.agents.pipeline import Pool, Screened
from latticegym.agents.rollout import Rollout, Trajectories
from latticegym.agents.trainer import TrainConfig, Trainer
from latticegym.envs.tasks import get_task
from latticegym.policies import load_prior
from latticegym.rewards.filters import DiversityFilter
from latticegym.rewards.surrogate import RewardSurrogate, Surrogate, prospective_stats

A_SITES = ["Sr", "Ba", "Ca", "K", "Na", "La", "Y", "Li"]
B_SITES = ["Ti", "Zr", "Nb", "Ta", "Fe", "Co", "Mn", "Al", "Ga", "Sc"]


def abx3(a: str, b: str, x: str = "O", size: float = 3.9) -> Structure:
    return Structure(Lattice.cubic(size), [a, b, x, x, x], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def pure_oxygen() -> Structure:
    """Five oxygen atoms on perovskite sites: refused by the guards."""
    return Structure(Lattice.cubic(4.0), ["O"] * 5, [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def as_pool(structures: list, refused=(), trajectories=None) -> Pool:
    """A screened pool in which the crystals at `refused` failed the screen."""
    n = len(structures)
    ok = ~np.isin(np.arange(n), list(refused))
    return Pool(trajectories, structures, Screened(["" if o else "refused" for o in ok], ok, ok, ok, ok, np.zeros(n)))


def crystals() -> list[Structure]:
    """160 ABX3 cubes in a fixed shuffled order, so any slice spans the elements."""
    pool = [abx3(a, b, x) for (a, b), x in itertools.product(itertools.product(A_SITES, B_SITES), ["O", "F"])]
    return [pool[i] for i in np.random.default_rng(0).permutation(len(pool))]


def test_surrogate_ranks_unseen_points_and_its_intervals_are_calibrated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 4))
    y = x[:, 0] ** 2 + x[:, 1] + 0.3 * rng.normal(size=600)
    model = Surrogate()
    model.fit(x[:400], y[:400])
    mean, std, trusted = model.predict(x[400:])
    stats = prospective_stats(y[400:], mean, std)
    assert stats["spearman"] > 0.8
    assert 0.55 <= stats["coverage_1sigma"] <= 0.85 and stats["coverage_2sigma"] >= 0.85  # nominal 0.683, 0.954
    assert trusted.mean() > 0.9
    assert not model.predict(x[400:410] + 20.0)[2].any()  # far from every training point: not trusted


def test_surrogate_needs_enough_data_and_says_so():
    model = Surrogate()
    model.fit(np.zeros((5, 3)), np.arange(5.0))
    assert not model.ready
    with pytest.raises(RuntimeError, match="not been fitted"):
        model.predict(np.zeros((1, 3)))


def test_reward_surrogate_learns_hhi_and_refits_identically_from_its_state():
    reward = get_task("PerovskiteLowHHI").make_reward()
    pool = crystals()
    result = reward(pool[:120])
    surrogate = RewardSurrogate(reward)
    first = surrogate.observe(pool[:60], {k: v[:60] for k, v in result.properties.items()}, result.ok[:60])
    assert np.isnan(first["surrogate/hhi/mae"])  # nothing to predict with before the first fit
    second = surrogate.observe(pool[60:120], {k: v[60:] for k, v in result.properties.items()}, result.ok[60:])
    assert second["surrogate/hhi/spearman"] > 0.5 and second["surrogate/train_size"] == result.ok.sum()

    rewards, trusted = surrogate.predicted_rewards(pool[120:], draws=16, rng=np.random.default_rng(0))
    assert rewards.shape == (16, len(pool) - 120) and trusted.dtype == bool

    restored = RewardSurrogate(reward)
    restored.load_state_dict(surrogate.state_dict())
    a = surrogate.predicted_rewards(pool[120:], draws=4, rng=np.random.default_rng(1))[0]
    b = restored.predicted_rewards(pool[120:], draws=4, rng=np.random.default_rng(1))[0]
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def prior():
    return load_prior("perov_5", num_steps=4).frozen_copy()


def agent(prior, **options) -> ActiveLearning:
    a = ActiveLearning(load_prior("perov_5", num_steps=4), prior, ActiveConfig(min_train=16, **options))
    a.attach(get_task("PerovskiteLowHHI").make_reward())
    return a


def test_select_takes_only_survivors_and_caps_repeats_of_a_formula(prior):
    oxygen = pure_oxygen()
    pool = [oxygen] * 4 + [perovskite()] * 6 + [abx3("Ba", "Zr")] * 2
    chosen = agent(prior, acquisition="random", max_per_formula=2).select(as_pool(pool, refused=range(4)), 10).indices
    assert len(chosen) == len(set(chosen)) == 8  # the 8 survivors: a screened-out crystal is never evaluated
    formulas = [pool[i].composition.reduced_formula for i in chosen]
    assert sorted(formulas[:4]) == ["BaZrO3", "BaZrO3", "SrTiO3", "SrTiO3"]  # the cap of 2 per formula first
    assert formulas[4:] == ["SrTiO3"] * 4  # then the capped ones fill what room is left


def test_ucb_picks_what_the_surrogate_ranks_best_and_random_does_not(prior):
    reward = get_task("PerovskiteLowHHI").make_reward()
    pool = crystals()
    ucb, rnd = agent(prior), agent(prior, acquisition="random")
    result = reward(pool)
    for a in (ucb, rnd):
        a.surrogate.observe(pool, result.properties, result.ok)
    truth = result.values
    pick_ucb = ucb.select(as_pool(pool), 20).indices
    pick_rnd = rnd.select(as_pool(pool), 20).indices
    assert truth[pick_ucb].mean() > truth[pick_rnd].mean() + 0.1
    assert truth[pick_ucb].mean() > np.quantile(truth, 0.6)


TINY = TrainConfig(env_id="LatticeGym/PerovskiteLowHHI-v0", agent="active", iterations=4, batch_size=6, steps=10, seed=0, agent_options={"oversample": 3, "min_train": 6})
POOL = {**TINY.agent_options, "baseline": "pool"}


def test_only_evaluated_crystals_are_counted_scored_and_recorded(tmp_path):
    """Surrogate-scored crystals (on here) join the update, and nothing else."""
    trainer = Trainer(replace(TINY, out=str(tmp_path), agent_options={**POOL, "surrogate_scored": 4}))
    trainer.run(progress=False)
    metrics, evaluated = pd.read_csv(tmp_path / "metrics.csv"), pd.read_csv(tmp_path / "evaluated.csv")
    assert (metrics.sampled.diff().dropna() == 18).all() and (metrics.evaluated <= 6).all()  # 18 sampled, at most 6 evaluated
    assert len(evaluated) == metrics.evaluations.iloc[-1] == trainer.reward.evaluations <= 24  # screened crystals cost nothing
    np.testing.assert_allclose(metrics.success_rate, evaluated.groupby("iteration").success.mean())
    assert metrics["surrogate/train_size"].iloc[-1] <= 24  # trained on evaluated crystals only
    assert metrics.surrogate_scored.max() == 4  # PPO saw them, once the surrogate was ready


def test_killed_active_run_resumes_exactly(tmp_path):
    Trainer(replace(TINY, out=str(tmp_path / "reference"))).run(progress=False)
    victim = Trainer(replace(TINY, out=str(tmp_path / "victim")))
    real_step, calls = victim.step, []

    def dies_in_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return real_step(*args)

    victim.step = dies_in_the_third
    with pytest.raises(RuntimeError, match="killed"):
        victim.run(progress=False)
    Trainer(replace(TINY, out=str(tmp_path / "victim"))).run(resume=True, progress=False)
    a, b = pd.read_csv(tmp_path / "reference" / "metrics.csv"), pd.read_csv(tmp_path / "victim" / "metrics.csv")
    same = [c for c in a.columns if not c.startswith("t_")]
    pd.testing.assert_frame_equal(a[same], b[same])
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "reference" / "evaluated.csv"), pd.read_csv(tmp_path / "victim" / "evaluated.csv"))


def test_a_crystal_outside_the_trusted_region_is_scored_below_its_mean(prior, monkeypatch):
    a = agent(prior, kappa=0.0)
    pool = [abx3("Sr", "Ti"), abx3("Ba", "Zr"), abx3("Ca", "Ti")]
    seen = a.reward(crystals()[:40])
    a.surrogate.observe(crystals()[:40], seen.properties, seen.ok)
    draws = np.array([[0.6, 0.5, 0.1], [0.6, 0.5, 0.1], [0.6, 0.5, 0.1], [0.0, 0.5, 0.1]])  # crystal 0: mean 0.45, std 0.26
    monkeypatch.setattr(a.surrogate, "predicted_rewards", lambda s, d, r: (draws, np.array([False, True, True])))
    assert a.select(as_pool(pool), 1).indices.tolist() == [1]  # untrusted 0.45 - 0.26 < trusted 0.5
    monkeypatch.setattr(a.surrogate, "predicted_rewards", lambda s, d, r: (draws, np.array([True, True, True])))
    assert a.select(as_pool(pool), 1).indices.tolist() == [1]  # kappa 0: the means decide
    a.cfg.kappa = 1.0
    assert a.select(as_pool(pool), 1).indices.tolist() == [0]  # UCB: 0.45 + 0.26 > 0.5


def test_the_pool_baseline_judges_the_batch_against_the_whole_pool(prior, monkeypatch):
    """With baseline="pool": the pool's estimated rewards, true where evaluated, the surrogate's elsewhere, 0 if refused."""
    oxygen = pure_oxygen()
    pool = [abx3("Sr", "Ti"), abx3("Ba", "Zr"), abx3("Ca", "Ti"), oxygen]
    a = agent(prior, baseline="pool")
    seen = a.reward(crystals()[:40])
    a.surrogate.observe(crystals()[:40], seen.properties, seen.ok)
    monkeypatch.setattr(a.surrogate, "predicted_rewards", lambda s, d, r: (np.array([[0.9, 0.2, 0.1]]), np.ones(3, bool)))
    selection = a.select(as_pool(pool, refused=[3]), 1)
    assert selection.indices.tolist() == [0]

    baselines = []
    monkeypatch.setattr(a.ppo, "update", lambda rollout, it, baseline=None, extra=None: baselines.append(baseline) or {})
    monkeypatch.setattr(a.surrogate, "observe", lambda *args: {})
    result = SimpleNamespace(values=np.array([0.7]), properties={}, ok=np.array([True]))
    a.update(Rollout(None, [pool[0]], result, np.zeros(1, bool), 0.0, context=selection.context), 1)
    estimate = np.array([0.7, 0.2, 0.1, 0.0])  # evaluated: its true 0.7, not the predicted 0.9; oxygen: refused
    np.testing.assert_allclose(baselines[0], (estimate.mean(), estimate.std()))

    a.cfg.baseline = "batch"
    selection = a.select(as_pool(pool, refused=[3]), 1)
    a.update(Rollout(None, [pool[0]], result, np.zeros(1, bool), 0.0, context=selection.context), 2)
    assert selection.context == {} and baselines[1] is None  # PPO normalises against the batch itself


def test_surrogate_scored_crystals_are_unevaluated_pool_members_valued_with_distrust(prior, monkeypatch):
    oxygen = pure_oxygen()
    pool = [abx3("Sr", "Ti"), abx3("Ba", "Zr"), abx3("Ca", "Ti"), oxygen]
    marked = Trajectories(  # pool member i carries frac == i, to see which were picked
        torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 5, 3).clone(), torch.arange(4.0).view(1, 4, 1, 1).expand(2, 4, 5, 3).clone(),
        torch.zeros(2, 4, 3, 3), torch.ones(4, 5, dtype=torch.bool), torch.zeros(1, 4), torch.zeros(4),
    )
    a = agent(prior, baseline="pool", surrogate_scored=3)
    seen = a.reward(crystals()[:40])
    a.surrogate.observe(crystals()[:40], seen.properties, seen.ok)
    draws = np.array([[0.9, 0.6, 0.1], [0.9, 0.2, 0.1]])  # means 0.9, 0.4, 0.1; crystal 1 untrusted, std 0.2
    monkeypatch.setattr(a.surrogate, "predicted_rewards", lambda s, d, r: (draws, np.array([True, False, True])))
    selection = a.select(as_pool(pool, refused=[3], trajectories=marked), 1)
    assert selection.indices.tolist() == [0]
    extra = selection.context["surrogate_scored"]
    picked = extra.frac[0, :, 0, 0].long().tolist()
    assert sorted(picked) == [1, 2, 3]  # every crystal not evaluated, never the evaluated one
    value = dict(zip(picked, extra.rewards.tolist()))
    assert value == pytest.approx({1: 0.4 - 0.2, 2: 0.1, 3: 0.0})  # untrusted: mean - std; refused: 0


def test_select_spends_nothing_on_a_formula_the_diversity_filter_has_used_up(prior, monkeypatch):
    a = agent(prior, baseline="pool")
    diversity = DiversityFilter("composition", tol=3, buffer=6)
    a.reward.filters.append(diversity)
    a.attach(a.reward)
    seen = a.reward(crystals()[:40])
    a.surrogate.observe(crystals()[:40], seen.properties, seen.ok)
    pool = [abx3("Sr", "Ti")] * 3 + [abx3("Ba", "Zr")] * 3 + [abx3("Ca", "Ti")]
    diversity.counts.update({"SrTiO3": 3, "BaZrO3": 1, **diversity.counts})
    draws = np.array([[0.9] * 3 + [0.5] * 3 + [0.1]])
    monkeypatch.setattr(a.surrogate, "predicted_rewards", lambda s, d, r: (draws, np.ones(7, bool)))
    before = dict(diversity.counts)
    selection = a.select(as_pool(pool), 4)
    formulas = [pool[i].composition.reduced_formula for i in selection.indices]
    assert formulas == ["BaZrO3", "BaZrO3", "CaTiO3", "SrTiO3"]  # SrTiO3 is at tol: no room, so it only fills the batch
    assert dict(diversity.counts) == before  # looking ahead changes no memory
    np.testing.assert_allclose(selection.context["pool_estimate"][0], [0.9 * 2 / 3] * 3 + [0.5] * 3 + [0.1])
