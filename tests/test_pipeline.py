"""The one path from sample to update: the screen, selection, the counted cost and SUN discoveries."""

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from helpers import perovskite, rocksalt
from pymatgen.core import Lattice, Structure

from latticegym.agents.active import ActiveConfig, ActiveLearning
from latticegym.agents.pipeline import Pool, Screen, ScreenConfig, Screened, Selection, first_survivors
from latticegym.agents.rollout import Rollout
from latticegym.agents.trainer import TrainConfig, Trainer, evaluated_per_iteration
from latticegym.envs.tasks import get_task
from latticegym.policies import load_prior
from latticegym.rewards.base import RewardResult

TINY = TrainConfig(env_id="LatticeGym/PerovskiteLowHHI-v0", agent="ppo", iterations=2, batch_size=6, steps=10, seed=0)


def abx3(a: str, b: str, x: str = "O", size: float = 3.9) -> Structure:
    return Structure(Lattice.cubic(size), [a, b, x, x, x], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


def squeezed_oxygen() -> Structure:
    return Structure(Lattice.cubic(2.0), ["O"] * 5, [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])


@pytest.fixture(scope="module")
def screen():
    reward = get_task("PerovskiteLowHHI").make_reward()
    return Screen(reward.refusal, [abx3("Ba", "Zr"), abx3("Sr", "Zr", size=4.15)], ScreenConfig(e_hull=0.1))


def test_the_screen_refuses_guards_repeats_known_and_unstable_crystals_and_says_why(screen):
    strained = Structure(Lattice.tetragonal(3.6, 4.9), abx3("Sr", "Zr").species, abx3("Sr", "Zr").frac_coords)  # passes every guard, far above the hull
    pool = [perovskite(), perovskite(), squeezed_oxygen(), abx3("Ba", "Zr"), strained, abx3("Ca", "Ti")]
    out = screen(pool)
    reasons = out.reasons
    assert reasons[0] == "" and out.stable[0] and out.novel[0] and out.unique[0] and out.e_hull[0] <= 0.1
    assert "repeat of an earlier crystal of this pool" in reasons[1]
    assert reasons[2] and not out.guarded[2]  # the task's guards, before any MLIP call
    assert "not novel" in reasons[3] and np.isnan(out.e_hull[3])  # no MLIP call spent on a known crystal
    assert "not stable" in reasons[4] and out.e_hull[4] > 0.1
    assert out.passed.tolist() == [True, False, False, False, False, True]
    calls = screen.single_points
    screen.remember([pool[0]])
    again = screen([perovskite()])
    assert "evaluated earlier in the run" in again.reasons[0] and screen.single_points == calls  # a repeat costs nothing


def test_an_unscreened_pool_offers_every_crystal_but_keeps_the_flags(screen):
    screened = screen([squeezed_oxygen(), abx3("Ca", "Zr")])
    pool = Pool(None, [squeezed_oxygen(), abx3("Ca", "Zr")], screened, drop=False)
    assert pool.candidates.tolist() == [0, 1] and screened.sun.tolist() == [False, True]
    assert first_survivors(Pool(None, pool.structures, screened), 5).indices.tolist() == [1]


class Spy:
    """The task's reward, recording every crystal it is asked to score."""

    def __init__(self, reward):
        self.reward, self.seen = reward, []

    def __call__(self, structures):
        self.seen += list(structures)
        return self.reward(structures)

    def __getattr__(self, name):
        return getattr(self.reward, name)


def test_a_screened_out_crystal_is_never_evaluated_nor_counted(tmp_path, perov_path, monkeypatch):
    trainer = Trainer(replace(TINY, out=str(tmp_path), iterations=3, novelty_reference=str(perov_path), hull_references=100))
    trainer.reward = spy = Spy(trainer.reward)
    pools, real = [], Screen.__call__
    monkeypatch.setattr(Screen, "__call__", lambda self, s: pools.append((s, real(self, s))) or pools[-1][1])
    trainer.run(progress=False)
    metrics, evaluated = pd.read_csv(tmp_path / "metrics.csv"), pd.read_csv(tmp_path / "evaluated.csv")
    assert sum((~screened.passed).sum() for _, screened in pools) > 0, "the test needs refused crystals"
    passed = {id(s) for structures, screened in pools for s, ok in zip(structures, screened.passed) if ok}
    assert spy.seen and {id(s) for s in spy.seen} <= passed
    assert len(spy.seen) == metrics.evaluations.iloc[-1] == len(evaluated) == sum(min(screened.passed.sum(), 6) for _, screened in pools)
    assert evaluated.stable.all() and evaluated.novel.all() and evaluated.unique.all() and (evaluated.e_hull <= 0.1).all()
    # screening calls are reported apart and never enter the property count
    assert metrics.screen_single_points.iloc[-1] > 0
    assert metrics["calls/hhi"].iloc[-1] == metrics.evaluations.iloc[-1]
    assert metrics.sampled.iloc[-1] == 3 * 6


def test_a_multi_property_reward_counts_each_crystal_once_and_each_source_apart(tmp_path, perov_path):
    cfg = replace(TINY, env_id="LatticeGym/PerovskiteMagnetLowHHI-v0", out=str(tmp_path), iterations=1, batch_size=8, novelty_reference=str(perov_path), hull_references=100)
    Trainer(cfg).run(progress=False)
    last = pd.read_csv(tmp_path / "metrics.csv").iloc[-1]
    assert last.evaluations == last.evaluated == len(pd.read_csv(tmp_path / "evaluated.csv")) > 0
    calls = [last["calls/hhi"], last["calls/magnetic_density"]]
    assert max(calls) == last.evaluations and min(calls) <= last.evaluations  # not their sum


def test_a_discovery_is_a_stable_novel_success_distinct_from_earlier_ones(tmp_path):
    trainer = Trainer(replace(TINY, out=str(tmp_path)))
    crystals = [perovskite(), perovskite(), abx3("Ba", "Zr"), abx3("Ca", "Ti"), rocksalt()]
    n = len(crystals)
    flags = dict(stable=np.array([1, 1, 0, 1, 1], bool), novel=np.array([1, 1, 1, 0, 1], bool), unique=np.ones(n, bool))
    pool = Pool(None, crystals, Screened([""] * n, np.ones(n, bool), e_hull=np.zeros(n), **flags))
    success = np.array([1, 1, 1, 1, 0], bool)
    found = trainer._discover(pool, list(range(n)), success)
    assert found.tolist() == [True, False, False, False, False]  # the repeat, the unstable, the known and the failure are not
    assert trainer._discover(pool, [1], np.array([True])).tolist() == [False]  # distinct from every earlier discovery
    assert len(trainer.discovered) == 1


def test_matinvent_samples_twelve_times_sixteen_and_takes_the_first_survivors(tmp_path):
    cfg = replace(TINY, agent="matinvent", batch_size=None, agent_options={"timesteps": 4})
    assert evaluated_per_iteration(cfg) == 16
    trainer = Trainer(replace(cfg, out=str(tmp_path)))
    assert (trainer.batch_size, trainer.pool_size) == (16, 192)
    n = 20
    passed = np.arange(n) % 3 == 0
    pool = Pool(None, [None] * n, Screened([("" if p else "x") for p in passed], passed, passed, passed, passed, np.zeros(n)))
    selection = trainer.agent.select(pool, 4)
    assert selection.indices.tolist() == [0, 3, 6, 9] and selection.context == {"eval_size": 4}


def test_the_trainer_refuses_a_selection_outside_the_survivors(tmp_path):
    trainer = Trainer(replace(TINY, out=str(tmp_path), iterations=1))
    trainer.agent.select = lambda pool, n: Selection(np.flatnonzero(~pool.screened.passed)[:1] if (~pool.screened.passed).any() else np.arange(n + 1))
    with pytest.raises(RuntimeError, match="screen's survivors"):
        trainer.run(progress=False)


@pytest.fixture(scope="module")
def active():
    prior = load_prior("perov_5", num_steps=4).frozen_copy()
    agent = ActiveLearning(load_prior("perov_5", num_steps=4), prior, ActiveConfig(min_train=16, baseline="pool"))
    agent.attach(get_task("PerovskiteLowHHI").make_reward())
    return agent


def test_select_hands_its_state_to_update_in_the_selection(active, monkeypatch):
    pool_crystals = [abx3(a, b) for a in ("Sr", "Ba", "Ca") for b in ("Ti", "Zr")]
    n = len(pool_crystals)
    seen = active.reward(pool_crystals * 4)
    active.surrogate.observe(pool_crystals * 4, seen.properties, seen.ok)
    ones = np.ones(n, bool)
    pool = Pool(None, pool_crystals, Screened([""] * n, ones, ones, ones, ones, np.zeros(n)))
    selection = active.select(pool, 2)
    assert "pool_estimate" in selection.context and not hasattr(active, "pool_estimate")
    result = RewardResult(np.array([0.3, 0.5]))
    with_context = Rollout(None, [pool_crystals[i] for i in selection.indices], result, np.zeros(2, bool), 0.0, context=selection.context)
    estimate = selection.context["pool_estimate"][0].copy()
    estimate[selection.indices] = [0.3, 0.5]
    assert active.baseline(with_context) == pytest.approx((estimate.mean(), estimate.std()))
    assert active.baseline(replace(with_context, context={})) is None  # no context: the batch's own baseline


def test_the_corrected_active_update_has_no_expected_push_between_equal_arms():
    """Two arms of equal true reward, a surrogate that always prefers arm 0. The batch baseline gives zero
    expected push on the arm logits; the pool baseline pushes the preferred arm up (the bias it carries)."""
    rng = np.random.default_rng(0)
    probs = np.array([0.5, 0.5])
    pushes = {"batch": [], "pool": []}
    for _ in range(4000):
        arms = rng.choice(2, size=16, p=probs)  # the pool
        chosen = np.flatnonzero(arms == 0)[:4]  # the surrogate's pick: arm 0 first
        chosen = np.r_[chosen, np.flatnonzero(arms == 1)[: 4 - len(chosen)]]
        rewards = 1.0 + rng.normal(0, 0.1, len(chosen))  # equal true rewards
        surrogate = np.where(arms == 0, 1.0, 0.6)  # it prefers arm 0
        estimate = surrogate.copy()
        estimate[chosen] = rewards
        grad_log = np.eye(2)[arms[chosen]] - probs  # d log pi(arm) / d logits
        for name, (mean, std) in {"batch": (rewards.mean(), rewards.std()), "pool": (estimate.mean(), estimate.std())}.items():
            advantages = (rewards - mean) / (std + 1e-8)
            pushes[name].append(advantages @ grad_log / len(chosen))
    batch, pool = np.mean(pushes["batch"], axis=0), np.mean(pushes["pool"], axis=0)
    assert np.abs(batch).max() < 0.02
    assert pool[0] > 0.1 and pool[1] < -0.1
    # the agent's default is the unbiased one, and its pool baseline is what the toy's "pool" computes
    assert ActiveConfig().baseline == "batch"
    result = RewardResult(np.array([1.0, 0.8]))
    rollout = Rollout(None, [None, None], result, np.zeros(2, bool), 0.0, context={"pool_estimate": (np.array([0.6, 0.0, 0.9]), np.array([2, 0]))})
    assert ActiveLearning.baseline(None, rollout) == pytest.approx((np.mean([0.8, 0.0, 1.0]), np.std([0.8, 0.0, 1.0])))


def test_learning_from_screened_crystals_is_the_agents_choice(tmp_path, perov_path):
    cfg = replace(TINY, out=str(tmp_path / "ppo"), iterations=1, novelty_reference=str(perov_path), hull_references=100)
    seen = []
    for agent, out in (("ppo", "ppo"), ("rwkl", "rwkl")):
        trainer = Trainer(replace(cfg, agent=agent, out=str(tmp_path / out), agent_options={"timesteps": 4} if agent == "rwkl" else {}))
        trainer.agent.update = lambda rollout, it: seen.append(rollout) or {}
        trainer.run(progress=False)
    ppo, rwkl = seen
    assert rwkl.evaluated.all()
    assert (~ppo.evaluated).any(), "the test needs refused crystals"
    refused = ~ppo.evaluated
    assert (ppo.result.values[refused] == 0.0).all() and not ppo.result.ok[refused].any()
    assert all(r.startswith("screened out") for r, e in zip(ppo.result.reasons, ppo.evaluated) if not e)
    assert torch.equal(ppo.trajectories.rewards.cpu(), torch.as_tensor(ppo.result.values, dtype=torch.float32))

