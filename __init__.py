"""latticegym: crystal generation as reinforcement learning."""

__version__ = "0.1.0"
