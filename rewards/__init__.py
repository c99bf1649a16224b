"""Pluggable reward modules: the reward contract, building blocks, and the registry of named rewards."""

from .base import PropertySource, PropertyValues, Reward, RewardResult
from .cache import Cached
from .composite import CompositeReward, Guards, Objective
from .filters import DiversityFilter
from .registry import available, from_config, make, register
from .shaping import Ascending, Descending, Identity, Target, Threshold, Window, combine

__all__ = [
    "Ascending",
    "Cached",
    "CompositeReward",
    "Descending",
    "DiversityFilter",
    "Guards",
    "Identity",
    "Objective",
    "PropertySource",
    "PropertyValues",
    "Reward",
    "RewardResult",
    "Target",
    "Threshold",
    "Window",
    "available",
    "combine",
    "from_config",
    "make",
    "register",
]
