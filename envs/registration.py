"""Gymnasium ids in the LatticeGym namespace; entry points are strings so registering imports nothing heavy."""

from __future__ import annotations

import gymnasium

from .tasks import TASKS

ENTRY = "latticegym.envs.denoising:CrystalDenoisingEnv"
VECTOR_ENTRY = "latticegym.envs.denoising:CrystalDenoisingVectorEnv"
CUSTOM_ID = "LatticeGym/Custom-v0"


def register_envs() -> None:
    """Register every task id and `LatticeGym/Custom-v0` with Gymnasium (idempotent; done on import)."""
    for task in TASKS.values():
        if task.env_id not in gymnasium.registry:
            gymnasium.register(task.env_id, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs={"task": task.name})
    if CUSTOM_ID not in gymnasium.registry:
        gymnasium.register(CUSTOM_ID, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY)


def env_ids() -> list[str]:
    """Every registered latticegym id."""
    return [t.env_id for t in TASKS.values()] + [CUSTOM_ID]
