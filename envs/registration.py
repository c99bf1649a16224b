"""Gymnasium ids in the LatticeGym namespace; entry points are strings so registering imports nothing heavy."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from .tasks import TASKS

ENTRY = "latticegym.envs.denoising:CrystalDenoisingEnv"
VECTOR_ENTRY = "latticegym.envs.denoising:CrystalDenoisingVectorEnv"
CUSTOM_ID = "LatticeGym/Custom-v0"


def register_envs(overwrite: str | None = None) -> None:
    """Register every task id and `LatticeGym/Custom-v0` with Gymnasium (idempotent; done on import); `overwrite` re-registers one id."""
    import gymnasium  # here, not above: the package registers from a hook that runs as Gymnasium finishes loading

    for task in TASKS.values():
        if task.env_id not in gymnasium.registry or task.env_id == overwrite:
            gymnasium.register(task.env_id, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY, kwargs={"task": task.name})
    if CUSTOM_ID not in gymnasium.registry:
        gymnasium.register(CUSTOM_ID, entry_point=ENTRY, vector_entry_point=VECTOR_ENTRY)


def env_ids() -> list[str]:
    """Every registered latticegym id."""
    return [t.env_id for t in TASKS.values()] + [CUSTOM_ID]


TASK_FILE_KEYS = {"name", "prior", "reward", "success", "target", "reward_kwargs", "num_steps", "experimental"}


def load_plugins(plugins) -> None:
    """Make the tasks and rewards of `plugins` exist here: import each module name or .py file, or register
    each YAML task file (the arguments of `register_task`; `reward` may be a reward config inline)."""
    for plugin in plugins:
        path = Path(plugin)
        if plugin.endswith((".yaml", ".yml")):
            register_task_file(path)
        elif plugin.endswith(".py"):
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


def register_task_file(path: Path) -> None:
    """Register the task a YAML file describes (see `load_plugins`); registering the same file again replaces it."""
    import yaml

    from .tasks import register_task

    if not path.is_file():
        raise FileNotFoundError(f"task file {path} does not exist")
    spec = yaml.safe_load(path.read_text())
    if not isinstance(spec, dict) or not {"name", "prior", "reward"} <= set(spec) or set(spec) - TASK_FILE_KEYS:
        raise ValueError(f"{path}: a task file is a mapping with name, prior and reward, and optionally {sorted(TASK_FILE_KEYS - {'name', 'prior', 'reward'})}")
    register_task(**spec, overwrite=True)
