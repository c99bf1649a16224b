"""Wrappers: a flat Box action for libraries that cannot take a Dict action (Stable-Baselines3)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from .denoising import ACTION_FIELDS, BOUND


class FlattenAction(gym.ActionWrapper):
    """The Dict action (types, frac, lattice) as one Box, concatenated in ACTION_FIELDS order, row-major.

    The Box has the env's finite bounds (±1e4), far beyond any denoising step, so SB3's clipping of
    actions to the space never changes a sampled step.
    """

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.shapes = [(name, env.action_space[name].shape) for name in ACTION_FIELDS]
        size = sum(math.prod(shape) for _, shape in self.shapes)
        self.action_space = spaces.Box(-BOUND, BOUND, (size,), np.float32)

    def action(self, action: np.ndarray) -> dict[str, np.ndarray]:
        action = np.asarray(action)
        if action.shape != self.action_space.shape:
            raise ValueError(f"flat action has shape {action.shape}, expected {self.action_space.shape}")
        out, start = {}, 0
        for name, shape in self.shapes:
            size = math.prod(shape)
            out[name] = action[start : start + size].reshape(shape)
            start += size
        return out
