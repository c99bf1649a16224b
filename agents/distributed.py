"""Rollouts on Ray: workers with their own copy of the policy sample trajectories in parallel.

Each iteration the learner puts its weights in the object store once and every worker loads them
before sampling its share of the batch, so all trajectories come from the current policy. Workers
step their own vector env but do not score: the final crystals come back to the learner, whose one
reward (with its cache, diversity memory and evaluation count) scores the whole batch. Seeds are
drawn from the learner's generator, so a resumed run samples exactly what it would have.
"""

from __future__ import annotations

import numpy as np
import torch

from ..envs.denoising import CrystalDenoisingVectorEnv
from ..policies import DiffusionPolicy, load_prior
from .rollout import Trajectories, collect, unscored


class _RolloutWorker:
    def __init__(self, prior: str, steps: int, batch: int, correctors: int):
        torch.set_num_threads(1)
        self.policy = load_prior(prior, num_steps=steps)
        self.env = CrystalDenoisingVectorEnv(num_envs=batch, prior=self.policy, reward=unscored, num_steps=steps, correctors=correctors)

    def ready(self) -> bool:
        return True

    def sample(self, weights: dict, seed: int) -> tuple[Trajectories, list]:
        self.policy.network.load_state_dict(weights)
        rollout = collect(self.env, self.policy, torch.Generator().manual_seed(seed), seed=seed)
        return rollout.trajectories, rollout.structures


class RolloutWorkers:
    """Ray actors that each sample a share of the batch with the learner's broadcast weights."""
    def __init__(self, prior: str, steps: int, batch_size: int, num_workers: int, correctors: int = 0, num_gpus: float = 0.0):
        import ray

        if num_workers < 1 or num_workers > batch_size:
            raise ValueError(f"rollout workers must be in 1..batch_size ({batch_size}), got {num_workers}")
        self.shares = [len(c) for c in np.array_split(np.arange(batch_size), num_workers)]
        remote = ray.remote(num_cpus=1, num_gpus=num_gpus)(_RolloutWorker)
        self.workers = [remote.remote(prior, steps, n, correctors) for n in self.shares]
        ray.get([w.ready.remote() for w in self.workers])  # placed: what CPUs are left is now known

    def collect(self, policy: DiffusionPolicy, seeds: list[int]) -> tuple[Trajectories, list]:
        """Broadcast `policy`'s weights, sample one share per worker with `seeds`, and gather trajectories and crystals."""
        import ray

        weights = ray.put({k: v.detach().cpu() for k, v in policy.network.state_dict().items()})
        parts = ray.get([w.sample.remote(weights, seed) for w, seed in zip(self.workers, seeds)])
        trajectories = Trajectories.cat([p[0] for p in parts]).to(policy.device)
        return trajectories, [s for p in parts for s in p[1]]

    def close(self) -> None:
        """Stop the actors."""
        import ray

        for w in self.workers:
            ray.kill(w)
