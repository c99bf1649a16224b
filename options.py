"""Settings, checked one way everywhere: typed parsing of `--set KEY=VALUE`, and range and choice checks
on config dataclasses (agents, training) and on env arguments. A base module: it imports nothing of the package."""

from __future__ import annotations

import argparse
import math
import numbers
import typing
from dataclasses import fields

TRUE, FALSE, NONE = ("true", "yes", "1", "on"), ("false", "no", "0", "off"), ("none", "null")


def _types(config_cls: type) -> dict[str, tuple[type, bool]]:
    """Field name -> (base type, None allowed)."""
    out = {}
    for name, hint in typing.get_type_hints(config_cls).items():
        args = typing.get_args(hint)
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hint) if args else hint
        out[name] = (base, optional)
    return out


def parse_option(config_cls: type, key: str, value, owner: str = ""):
    """`value` (a CLI string or a Python value) as the type of `config_cls.key`; ValueError names key, value and type."""
    types = _types(config_cls)
    if key not in types:
        raise ValueError(f"unknown option {key!r} for {owner or config_cls.__name__}; options: {', '.join(types)}")
    base, optional = types[key]
    expected = base.__name__ + (" or none" if optional else "")
    text = value.strip().lower() if isinstance(value, str) else None
    if optional and (value is None or text in NONE):
        return None
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if text in TRUE or text in FALSE:
                return text in TRUE
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value.strip() if isinstance(value, str) else value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            parsed = float(value)
            if math.isfinite(parsed):
                return parsed
            raise ValueError
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {key}={value!r}: expected a finite {expected}" if base is float else f"option {key}={value!r}: expected {expected}") from None
    return value


def parse_options(config_cls: type, options: dict, owner: str = "") -> dict:
    """`parse_option` for every key of `options`."""
    return {k: parse_option(config_cls, k, v, owner) for k, v in options.items()}


LARGEST = 1e9


def _check(owner: str, value, ok, wanted: str) -> None:
    if value is None:
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{owner} must be a finite number, got {value}")
    if not ok(value):
        raise ValueError(f"{owner} must be {wanted}, got {value!r}")


def check_ranges(
    cfg,
    positive: tuple[str, ...] = (),
    at_least_one: tuple[str, ...] = (),
    non_negative: tuple[str, ...] = (),
    unit: tuple[str, ...] = (),
    fraction: tuple[str, ...] = (),
    choices: dict[str, tuple] | None = None,
) -> None:
    """Raise a ValueError naming the first field of `cfg` out of its range or choices (None passes);
    `unit` means (0, 1], `fraction` [0, 1).

    Every range stops at `LARGEST`: beyond it a setting is a typo that would overflow or exhaust memory.
    """
    names = {f.name for f in fields(cfg)}
    for group, ok, wanted in (
        (positive, lambda v: 0 < v <= LARGEST, f"in (0, {LARGEST:g}]"),
        (at_least_one, lambda v: 1 <= v <= LARGEST, f"in [1, {LARGEST:g}]"),
        (non_negative, lambda v: 0 <= v <= LARGEST, f"in [0, {LARGEST:g}]"),
        (unit, lambda v: 0 < v <= 1, "in (0, 1]"),
        (fraction, lambda v: 0 <= v < 1, "in [0, 1)"),
    ):
        for name in group:
            assert name in names, name
            _check(f"{type(cfg).__name__}.{name}", getattr(cfg, name), ok, wanted)
    for name, allowed in (choices or {}).items():
        assert name in names, name
        _check(f"{type(cfg).__name__}.{name}", getattr(cfg, name), lambda v: v in allowed, f"one of {allowed}")


def bounded(kind: type, low: float, high: float, what: str):
    """An argparse type: a finite `kind` number in [low, high], checked as every setting is; `what`
    says what is expected, and argparse names the option."""

    def parse(text: str):
        try:
            value = kind(text)
            _check("the value", value, lambda v: low <= v <= high, what)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        return value

    parse.__name__ = what
    return parse


def check_count(name: str, value, low: int, required: bool = False) -> None:
    """An argument that must be an integer in [low, LARGEST]; None passes (its default) unless `required`."""
    integer = lambda v: not isinstance(v, bool) and isinstance(v, numbers.Integral) and low <= v <= LARGEST  # noqa: E731
    wanted = f"an integer in [{low}, {LARGEST:g}]"
    if value is None and required:
        raise ValueError(f"{name} must be {wanted}, got None")
    _check(name, value, integer, wanted)
