import os
import signal
import sys
import time

import numpy as np
import pytest
from helpers import perovskite, rocksalt

ray = pytest.importorskip("ray")

from latticegym.rewards.base import PropertySource  # noqa: E402
from latticegym.rewards.cache import Cached  # noqa: E402
from latticegym.rewards.library import formation_energy  # noqa: E402
from latticegym.rewards.parallel import RaySource, connect, distribute  # noqa: E402
from latticegym.rewards.properties import EnergyPerAtom  # noqa: E402

# Actors import classes by module name; this test module is not importable there, so ship it by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module")
def cluster():
    connect("local", num_cpus=2)
    yield
    ray.shutdown()


def crystals(n, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = (perovskite() if i % 2 else rocksalt()).copy()
        s.perturb(0.05 + 0.05 * rng.random())
        s.scale_lattice(s.volume * (1 + 0.1 * rng.random()))
        out.append(s)
    return out


def test_results_come_back_in_order_and_are_counted_once(cluster):
    structures = crystals(6)
    local = EnergyPerAtom()
    remote = RaySource(EnergyPerAtom(), num_workers=2)
    got = remote(structures)
    np.testing.assert_allclose(got.values, local(structures).values, rtol=1e-4)
    assert remote.evaluations == 6


class _Broken(PropertySource):
    name = "broken"

    def compute(self, structures):
        if any(len(s) == 5 for s in structures):
            raise RuntimeError("model crashed")
        return [1.0] * len(structures)


def test_a_crashing_model_fails_only_its_crystals(cluster):
    got = RaySource(_Broken(), num_workers=2)([rocksalt(), perovskite(), rocksalt()])
    assert np.isnan(got.values[1]) and "model crashed" in got.reasons[1]
    np.testing.assert_array_equal(got.values[[0, 2]], [1.0, 1.0])


@pytest.mark.slow
def test_killing_an_actor_mid_batch_loses_and_double_counts_nothing(cluster):
    structures = crystals(6, seed=1)
    relax = {"relax": True, "steps": 40, "fmax": 0.01}
    expected = EnergyPerAtom(**relax)(structures).values
    remote = RaySource(EnergyPerAtom(**relax), num_workers=2)
    remote(structures[:2])  # warm the actors up: models loaded
    victim = remote.worker_pids()[0]
    future_kill = time.time() + 1.0

    import threading

    def kill():
        time.sleep(max(0.0, future_kill - time.time()))
        os.kill(victim, signal.SIGKILL)

    killer = threading.Thread(target=kill)
    killer.start()
    start = time.time()
    got = remote(structures)
    killer.join()
    assert time.time() - start > 1.0, "the batch finished before the kill: make it slower"
    assert remote.restarts == 1
    np.testing.assert_allclose(got.values, expected, rtol=1e-3)
    assert remote.evaluations == 2 + 6
    assert victim not in remote.worker_pids()


def test_distribute_keeps_the_cache_in_the_driver(cluster):
    reward = formation_energy()
    local = formation_energy()
    assert distribute(reward, num_workers=2) == 1
    cached = reward.objectives[0].source
    assert isinstance(cached, Cached) and isinstance(cached.source, RaySource)
    structures = crystals(4, seed=2)
    first = reward(structures)
    np.testing.assert_allclose(first.values, local(structures).values, rtol=1e-4)
    evaluations, hits = reward.evaluations, cached.hits
    assert 1 <= evaluations <= 4  # matching crystals inside the batch are evaluated once
    reward(structures)
    assert reward.evaluations == evaluations and cached.hits == hits + 4


def test_rollout_workers_sample_with_the_learners_current_weights(cluster, tmp_path):
    import torch
    from latticegym.agents.distributed import RolloutWorkers
    from latticegym.policies import load_prior

    policy = load_prior("perov_5", num_steps=4)
    with torch.no_grad():
        for p in policy.network.parameters():
            p.add_(1e-3 * torch.randn_like(p))  # the learner has moved away from the shipped prior
    workers = RolloutWorkers("perov_5", steps=4, batch_size=5, num_workers=2)
    traj, structures = workers.collect(policy, seeds=[1, 2])
    assert len(traj) == 5 and len(structures) == 5 and workers.shares == [3, 2]
    with torch.no_grad():
        for k in (4, 1):
            expected = policy.step_distribution(traj.state(k), k).log_prob(traj.state(k - 1))
            torch.testing.assert_close(traj.log_probs[4 - k], expected, rtol=1e-4, atol=1e-2)
    again, _ = workers.collect(policy, seeds=[1, 2])
    torch.testing.assert_close(again.frac, traj.frac)  # seeded: the same batch again
    workers.close()


@pytest.mark.slow
def test_training_with_rollout_workers_and_ray_rewards(cluster, tmp_path):
    import pandas as pd
    from latticegym.agents.trainer import TrainConfig, Trainer

    cfg = TrainConfig(env_id="LatticeGym/PerovskiteFormationEnergy-v0", iterations=2, batch_size=6, steps=10, out=str(tmp_path), rollout_workers=1, ray_address="local")
    Trainer(cfg).run(progress=False)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert list(metrics.iteration) == [0, 1] and metrics.evaluations.iloc[-1] <= 12 and metrics.ok_rate.min() > 0
