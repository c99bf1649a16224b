"""RL fine-tuning of the diffusion prior on one sample -> screen -> select -> evaluate -> update path
(pipeline.py): PPO over denoising steps, MatInvent's pipeline and its reward-weighted update,
REINFORCE, active learning, trajectory replay, and the resumable trainer behind `latticegym train`."""

from .pipeline import Screen, ScreenConfig, Selection
from .ppo import PPO, PPOConfig
from .reinforce import REINFORCE, REINFORCEConfig
from .rwkl import MatInvent, MatInventConfig, RewardWeightedKL, RWKLConfig
from .trainer import TrainConfig, Trainer

__all__ = [
    "MatInvent", "MatInventConfig", "PPO", "PPOConfig", "REINFORCE", "REINFORCEConfig", "RewardWeightedKL", "RWKLConfig",
    "Screen", "ScreenConfig", "Selection", "TrainConfig", "Trainer",
]  # fmt: skip
