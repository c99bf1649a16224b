"""Turn a raw property into a score in [0, 1] (MatInvent's scalings plus threshold and window)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _clip(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 1.0)


@dataclass(frozen=True)
class Ascending:
    """0 at or below `lo`, 1 at or above `hi`, linear between: higher is better."""

    lo: float
    hi: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _clip((np.asarray(x, float) - self.lo) / (self.hi - self.lo))


@dataclass(frozen=True)
class Descending:
    """1 at or below `lo`, 0 at or above `hi`: lower is better."""

    lo: float
    hi: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _clip((self.hi - np.asarray(x, float)) / (self.hi - self.lo))


@dataclass(frozen=True)
class Target:
    """1 at `target`, falling linearly to 0 at `target +- width`."""

    target: float
    width: float

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return _clip(1.0 - np.abs(np.asarray(x, float) - self.target) / self.width)


@dataclass(frozen=True)
class Threshold:
    """1 where the value is on the good side of `threshold`, else 0."""

    threshold: float
    above: bool = True

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        return (x >= self.threshold if self.above else x <= self.threshold).astype(float)


@dataclass(frozen=True)
class Window:
    """1 inside [lo, hi], falling linearly to 0 over `margin` outside."""

    lo: float
    hi: float
    margin: float = 0.5

    def __call__(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, float)
        outside = np.maximum(self.lo - x, x - self.hi).clip(min=0.0)
        return _clip(1.0 - outside / self.margin)


@dataclass(frozen=True)
class Identity:
    """The raw value, unscaled (for objectives that are already rewards)."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, float)


SHAPINGS = {"ascending": Ascending, "descending": Descending, "target": Target, "threshold": Threshold, "window": Window, "identity": Identity}


def combine(components: dict[str, np.ndarray], how: str = "mean", weights: dict[str, float] | None = None) -> np.ndarray:
    """Mean, min, product or weighted sum of per-objective scores."""
    if not components:
        raise ValueError("nothing to combine")
    stacked = np.stack(list(components.values()))
    if how == "mean":
        return stacked.mean(0)
    if how == "min":
        return stacked.min(0)
    if how == "product":
        return stacked.prod(0)
    if how == "weighted":
        if not weights or set(weights) != set(components):
            raise ValueError(f"weighted combination needs one weight per component {sorted(components)}, got {weights}")
        return sum(weights[k] * v for k, v in components.items())
    raise ValueError(f"unknown combination {how!r}; use mean, min, product or weighted")
