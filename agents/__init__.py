"""RL fine-tuning of the diffusion prior: PPO over denoising steps, MatInvent-style reward-weighted KL,
REINFORCE, trajectory replay, and the resumable trainer behind `latticegym train`."""

from .ppo import PPO, PPOConfig
from .reinforce import REINFORCE, REINFORCEConfig
from .rwkl import RewardWeightedKL, RWKLConfig
from .trainer import TrainConfig, Trainer

__all__ = ["PPO", "PPOConfig", "REINFORCE", "REINFORCEConfig", "RewardWeightedKL", "RWKLConfig", "TrainConfig", "Trainer"]
