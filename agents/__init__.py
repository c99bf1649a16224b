"""RL fine-tuning of the diffusion prior on one sample -> screen -> select -> evaluate -> update path
(pipeline.py): PPO and GRPO over denoising steps, MatInvent's pipeline and its reward-weighted update,
REINFORCE, active learning, two floors, trajectory replay, and the resumable trainer behind `latticegym train`.

`AGENTS` is the registry: each name `latticegym train --agent` and `latticegym bench --agents` accept,
with its class and config dataclass.
"""

from .active import ActiveConfig, ActiveLearning
from .base import Agent
from .grpo import GRPO, GRPOConfig
from ..options import parse_options
from .pipeline import Screen, ScreenConfig, Selection
from .ppo import PPO, PPOConfig
from .prior_only import PriorAgent, PriorOnly, PriorOnlyConfig
from .random_crystals import RandomCrystals, RandomCrystalsConfig
from .reinforce import REINFORCE, REINFORCEConfig
from .rwkl import MatInvent, MatInventConfig, RewardWeightedKL, RWKLConfig

AGENTS: dict[str, tuple[type, type]] = {
    "ppo": (PPO, PPOConfig),
    "rwkl": (RewardWeightedKL, RWKLConfig),
    "reinforce": (REINFORCE, REINFORCEConfig),
    "prior": (PriorOnly, PriorOnlyConfig),
    "active": (ActiveLearning, ActiveConfig),
    "matinvent": (MatInvent, MatInventConfig),
    "grpo": (GRPO, GRPOConfig),
    "pyxtal": (RandomCrystals, RandomCrystalsConfig),
}


def make_agent(name: str, policy, prior, options: dict | None = None, seed: int = 0) -> Agent:
    """Build agent `name` (a key of `AGENTS`) on `policy` and its frozen `prior`, with `options` parsed by its config's field types."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; agents: {', '.join(AGENTS)}")
    cls, config_cls = AGENTS[name]
    return cls(policy, prior, config_cls(**parse_options(config_cls, options or {}, f"agent {name!r}")), seed=seed)


from .trainer import TrainConfig, Trainer  # noqa: E402  (after the registry, which the trainer reads)

__all__ = [
    "AGENTS", "ActiveConfig", "ActiveLearning", "Agent", "GRPO", "GRPOConfig", "MatInvent", "MatInventConfig", "PPO", "PPOConfig",
    "PriorAgent", "PriorOnly", "PriorOnlyConfig", "REINFORCE", "REINFORCEConfig", "RandomCrystals", "RandomCrystalsConfig", "RewardWeightedKL",
    "RWKLConfig", "Screen", "ScreenConfig", "Selection", "TrainConfig", "Trainer", "make_agent",
]  # fmt: skip
