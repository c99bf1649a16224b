"""The pretrained policy as an agent: `PriorAgent` acts in an env; `PriorOnly`, the floor of every
comparison, samples from the prior, is scored like any agent, and never updates."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..envs.denoising import ACTION_FIELDS, obs_to_state
from ..policies import DiffusionPolicy, DiffusionState
from .pipeline import FirstSurvivors
from .rollout import Rollout


class PriorAgent:
    """The pretrained policy as a ready agent: `act(obs)` samples the prior's reverse step."""

    def __init__(self, policy: DiffusionPolicy, seed: int | None = None):
        self.policy = policy
        self.generator = torch.Generator(device=policy.device)
        self.seed(seed)

    def seed(self, seed: int | None) -> None:
        """Reseed the agent's sampling (None: from fresh entropy)."""
        self.generator.manual_seed(np.random.SeedSequence(seed).generate_state(1)[0].item())

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The prior's next state for a (batched or single) observation; finished crystals echo their state."""
        batched = np.ndim(obs["t"]) == 1
        if not batched:
            obs = {key: np.asarray(v)[None] for key, v in obs.items()}
        state = obs_to_state(obs, self.policy.device)
        k = torch.as_tensor(np.asarray(obs["t"]), device=self.policy.device)
        live = k > 0  # a finished crystal's action is ignored (next-step autoreset): echo its state
        nxt = state
        if live.all():
            nxt, _ = self.policy.sample(state, k, self.generator)
        elif live.any():
            moved, _ = self.policy.sample(state.index(live), k[live], self.generator)
            nxt = DiffusionState(state.types.clone(), state.frac.clone(), state.lattice.clone(), state.mask)
            for f in ACTION_FIELDS:
                getattr(nxt, f)[live] = getattr(moved, f)
        action = {name: getattr(nxt, name).cpu().numpy() for name in ACTION_FIELDS}
        return action if batched else {key: v[0] for key, v in action.items()}


@dataclass
class PriorOnlyConfig:
    """The prior agent has no settings."""


class PriorOnly(FirstSurvivors):
    """Samples and is scored like every agent but never changes the policy.

    Args:
        policy: the policy, which stays the pretrained prior.
        prior: its frozen copy (unused).
        config: `PriorOnlyConfig()`.
        seed: unused; sampling is seeded by the trainer.
    """

    name = "prior"
    default_diversity: dict | None = None

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: PriorOnlyConfig | None = None, seed: int = 0):
        self.policy = policy

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
