"""Gymnasium ids in the LatticeGym namespace; entry points are strings so registering imports nothing heavy."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import gymnasium

from .tasks import TASKS

ENTRY = "latticegym.envs.denoising:CrystalDenoisingEnv"
VECTOR_ENTRY = "latticegym.envs.denoising:CrystalDenoisingVectorEnv"
CUSTOM_ID = "LatticeGym/Custom-v0"


def register_envs(overwrite: str | None = None) -> None:
    """Register every task id and `LatticeGym/Custom-v0` with Gymnasium (idempotent; done on import); `overwrite` re-registers one id."""
    for task in TASKS.values():
        if task.env_id not in gymnasium.registry or task.env_id == overwrite:
            gymnasium.register(task.env_id, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs={"task": task.name})
    if CUSTOM_ID not in gymnasium.registry:
        gymnasium.register(CUSTOM_ID, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY)


def env_ids() -> list[str]:
    """Every registered latticegym id."""
    return [t.env_id for t in TASKS.values()] + [CUSTOM_ID]


def load_plugins(plugins) -> None:
    """Import each module name or .py file of `plugins`, so the tasks and rewards it registers exist here."""
    for plugin in plugins:
        path = Path(plugin)
        if plugin.endswith(".py"):
            if not path.is_file():
                raise FileNotFoundError(f"plugin {plugin!r} does not exist")
            name = f"latticegym_plugin_{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
        else:
            importlib.import_module(plugin)
