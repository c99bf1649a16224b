"""The floor of every comparison: sample from the prior, score like any agent, never update."""

from __future__ import annotations

from dataclasses import dataclass

from ..policies import DiffusionPolicy
from .pipeline import FirstSurvivors
from .rollout import Rollout


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
