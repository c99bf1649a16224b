"""Named rewards: `register(name, factory)`, the `latticegym.rewards` entry-point group, and dict/YAML configs.

`resolve` turns anything a user may pass as a reward into one: a registered name, "module:attr",
a YAML/JSON config file, a factory, or a reward object.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable

from .base import Reward

ENTRY_POINT_GROUP = "latticegym.rewards"
BUILTIN = ("low_hhi", "density_target", "formation_energy", "magnetic_density", "magnet_low_hhi", "carbon_low_energy", "bulk_modulus", "band_gap_window")
_FACTORIES: dict[str, Callable[..., Reward] | str] = {name: f"latticegym.rewards.library:{name}" for name in BUILTIN}


def register(name: str, factory: Callable[..., Reward] | str, overwrite: bool = False) -> None:
    """Make `make(name, **kwargs)` call `factory(**kwargs)`; a "module:attr" string is imported on first use."""
    if name in _FACTORIES and not overwrite:
        raise ValueError(f"a reward named {name!r} is already registered")
    _FACTORIES[name] = factory


def _entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available() -> list[str]:
    """Every reward name: built in, registered, or from the `latticegym.rewards` entry-point group."""
    return sorted(set(_FACTORIES) | set(_entry_points()))


def _resolve(name: str) -> Callable[..., Reward]:
    factory = _FACTORIES.get(name)
    if factory is None:
        ep = _entry_points().get(name)
        if ep is None:
            raise KeyError(f"no reward named {name!r}; available: {', '.join(available())}")
        factory = ep.load()
    elif isinstance(factory, str):
        factory = _import(factory)
    _FACTORIES[name] = factory
    return factory


def make(name: str, **kwargs) -> Reward:
    """Build the reward `name` with the factory's keyword arguments."""
    return _resolve(name)(**kwargs)


def from_config(config: dict | str | Path) -> Reward:
    """Build a reward from {"name": ..., "kwargs": {...}} or from the objectives spec of `build_composite`.

    A string or Path is read as YAML.
    """
    if isinstance(config, (str, Path)):
        import yaml

        config = yaml.safe_load(Path(config).read_text())
    if not isinstance(config, dict):
        raise ValueError(f"a reward config is a mapping, got {type(config).__name__}")
    if "name" in config:
        unknown = set(config) - {"name", "kwargs"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in reward config (expected name, kwargs)")
        return make(config["name"], **config.get("kwargs", {}))
    from .library import build_composite

    return build_composite(**config)


CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def _import(spec: str) -> Callable[..., Reward]:
    module, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"reward {spec!r}: cannot import {attr!r} from module {module!r}: {exc}") from exc


def resolve(spec: str | Path | dict | Callable, **kwargs: Any) -> Reward:
    """A reward from whatever names one.

    Args:
        spec: a registered name ("low_hhi"), "module:attr" naming a factory, a YAML/JSON config
            file or a config dict (`from_config`), a factory (a function or class, called with
            `kwargs`), or a reward object (used as it is; it takes no `kwargs`).
        **kwargs: the factory's keyword arguments.
    """
    if isinstance(spec, dict):
        if kwargs:
            raise ValueError(f"reward config {spec!r} takes its settings inside, not {sorted(kwargs)}")
        return from_config(spec)
    if isinstance(spec, (str, Path)):
        text = str(spec)
        if text.endswith(CONFIG_SUFFIXES):
            if kwargs:
                raise ValueError(f"reward {text!r} is a config file; put its settings in the file, not {sorted(kwargs)}")
            if not Path(text).is_file():
                raise FileNotFoundError(f"reward config {text!r} does not exist")
            return from_config(text)
        if ":" in text:
            return _import(text)(**kwargs)
        return make(text, **kwargs)
    if inspect.isclass(spec) or inspect.isfunction(spec) or inspect.ismethod(spec):
        return spec(**kwargs)
    if callable(spec):
        if kwargs:
            raise ValueError(f"reward {spec!r} is already built; it takes no settings {sorted(kwargs)}")
        return spec
    raise TypeError(f"a reward is a registered name, 'module:attr', a YAML/JSON file, a factory or a callable on Structures; got {type(spec).__name__}")
