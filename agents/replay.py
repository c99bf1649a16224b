"""Experience replay of whole trajectories: the best distinct crystals so far, with their behaviour log-probs.

Entries are keyed by composition or by structure (`rewards.filters.CrystalKeys`); a key keeps only its
best trajectory. Replayed trajectories keep the log-probs of the policy that sampled them, so a
learner can weigh them by the importance ratio against the current policy.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..rewards.filters import CrystalKeys
from .rollout import Trajectories


class Replay:
    """The best distinct trajectories so far, at most `capacity`, one per key (`dedup`: "composition" or "structure")."""
    def __init__(self, capacity: int = 64, dedup: str = "composition"):
        if capacity < 1:
            raise ValueError(f"replay capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.keys = CrystalKeys(dedup)
        self.buffer: Trajectories | None = None  # extra["key"], extra["iteration"] ride along

    def __len__(self) -> int:
        return 0 if self.buffer is None else len(self.buffer)

    def add(self, batch: Trajectories, structures: Sequence, eligible: np.ndarray, top_k: int, iteration: int, min_reward: float | None = None) -> None:
        """Offer the `top_k` best eligible trajectories of a batch; keep the best per key, then the best `capacity`.

        With `min_reward`, only trajectories whose reward is above it are kept (MatInvent's reward cut-off).
        """
        rewards = batch.rewards.cpu().numpy()
        if min_reward is not None:
            eligible = np.asarray(eligible) & (rewards > min_reward)
        order = [i for i in np.argsort(-rewards, kind="stable") if eligible[i]][:top_k]
        if not order:
            return
        new = batch.index(order).to("cpu")
        new.extra = {"key": np.array([self.keys(structures[i]) for i in order], dtype=object), "iteration": np.full(len(order), iteration)}
        pool = new if self.buffer is None else Trajectories.cat([self.buffer, new])
        best: dict[str, int] = {}
        rewards = pool.rewards.numpy()
        for i, key in enumerate(pool.extra["key"]):
            if key not in best or rewards[i] > rewards[best[key]]:
                best[key] = i
        keep = sorted(best.values(), key=lambda i: -rewards[i])[: self.capacity]
        self.buffer = pool.index(sorted(keep))

    def purge_penalised(self, rollout) -> None:
        """Drop entries whose key the diversity filter zeroed in this batch (MatInvent's `memory_purge`)."""
        factors = rollout.result.components.get("diversity")
        if factors is not None:
            self.purge({self.keys(rollout.structures[i]) for i in np.flatnonzero(np.asarray(factors) == 0)})

    def purge(self, keys: set[str]) -> None:
        """Drop entries whose key is in `keys`."""
        if self.buffer is None or not keys:
            return
        keep = [i for i, k in enumerate(self.buffer.extra["key"]) if k not in keys]
        self.buffer = self.buffer.index(keep) if keep else None

    def sample(self, n: int, generator: torch.Generator) -> Trajectories | None:
        """`n` stored trajectories drawn without replacement (None when empty or `n` <= 0)."""
        if self.buffer is None or n <= 0:
            return None
        n = min(n, len(self.buffer))
        return self.buffer.index(torch.randperm(len(self.buffer), generator=generator, device=generator.device).cpu()[:n].sort().values)

    def state_dict(self) -> dict:
        return {"buffer": self.buffer, "keys": self.keys.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.buffer = state["buffer"]
        self.keys.load_state_dict(state["keys"])
