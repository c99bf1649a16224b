"""The reward contract: a batch of Structures in, a RewardResult out, never an exception for a bad crystal."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
from pymatgen.core import Structure

log = logging.getLogger(__name__)

COST_CLASSES = ("cheap", "mlip_single_point", "mlip_relaxation")


@dataclass
class RewardResult:
    """Per-crystal rewards of a batch. `ok[i]` is False where crystal i could not be scored, and `reasons[i]` says why."""

    values: np.ndarray
    properties: dict[str, np.ndarray] = field(default_factory=dict)
    components: dict[str, np.ndarray] = field(default_factory=dict)
    ok: np.ndarray | None = None
    reasons: list[str] | None = None

    def __post_init__(self) -> None:
        raw = np.asarray(self.values)
        if raw.dtype.kind not in "biuf" or raw.ndim != 1:
            raise ValueError(f"reward values must be one real number per crystal, got dtype {raw.dtype} and shape {raw.shape}")
        self.values = raw.astype(float)
        n = len(self.values)
        self.ok = np.ones(n, dtype=bool) if self.ok is None else np.asarray(self.ok, dtype=bool)
        self.reasons = [""] * n if self.reasons is None else list(self.reasons)
        for name, arr in {**self.properties, **self.components}.items():
            if len(arr) != n:
                raise ValueError(f"{name!r} has {len(arr)} entries for a batch of {n}")

    def __len__(self) -> int:
        return len(self.values)

    def info(self, i: int) -> dict:
        """What an env puts in `info` for crystal i."""
        return {
            "reward": float(self.values[i]),
            "ok": bool(self.ok[i]),
            "reason": self.reasons[i],
            "properties": {k: float(v[i]) for k, v in self.properties.items()},
            "components": {k: float(v[i]) for k, v in self.components.items()},
        }


@runtime_checkable
class Reward(Protocol):
    """The reward contract: a batch of Structures in, a RewardResult out, never raising on a bad crystal."""
    def __call__(self, structures: Sequence[Structure]) -> RewardResult: ...


@dataclass
class PropertyValues:
    """Raw values of one property for a batch; NaN with a reason where it failed."""

    values: np.ndarray
    reasons: list[str]


class PropertySource(ABC):
    """Something that computes one raw property per crystal: an MLIP, a predictor, a formula.

    Subclasses implement `compute` for a batch and may raise; `__call__` isolates failures to the
    crystals that caused them and counts every evaluation.
    """

    name: str = "property"
    unit: str = ""
    cost: str = "cheap"

    def __init__(self) -> None:
        self.evaluations = 0

    @abstractmethod
    def compute(self, structures: Sequence[Structure]) -> Sequence[float] | PropertyValues:
        """Raw values for a batch (NaN allowed), or a PropertyValues that says why a value is NaN."""

    def screen(self, structure: Structure) -> str:
        """Why this source cannot evaluate `structure` at all ("" if it can); screened crystals never reach `compute`."""
        return ""

    def set_guard(self, check: Callable[[Structure], str]) -> None:
        """The reward's guards, for a source that reads its property on another crystal than its input (a relaxed one).

        The default reads the input itself, which the reward has already guarded, so it ignores them.
        """

    def state_dict(self) -> dict:
        """What a resumed run needs to continue exactly: the evaluation count (subclasses add caches)."""
        return {"evaluations": self.evaluations}

    def load_state_dict(self, state: dict) -> None:
        self.evaluations = state["evaluations"]

    def __call__(self, structures: Sequence[Structure]) -> PropertyValues:
        structures = list(structures)
        self.evaluations += len(structures)
        return self._evaluate(structures)

    def _evaluate(self, structures: list[Structure]) -> PropertyValues:
        if not structures:
            return PropertyValues(np.zeros(0), [])
        screened = [self.screen(s) for s in structures]
        if any(screened):
            keep = [i for i, why in enumerate(screened) if not why]
            inner = self._evaluate([structures[i] for i in keep])
            values, reasons = np.full(len(structures), np.nan), [f"{self.name}: {why}" for why in screened]
            values[keep] = inner.values
            for j, i in enumerate(keep):
                reasons[i] = inner.reasons[j]
            return PropertyValues(values, reasons)
        try:
            computed = self.compute(structures)
        except Exception as exc:
            if len(structures) == 1:
                log.debug("%s failed on %s", self.name, structures[0].composition, exc_info=True)
                return PropertyValues(np.array([np.nan]), [f"{self.name} failed: {type(exc).__name__}: {exc}"])
            # Find the culprits one by one rather than failing the whole batch.
            parts = [self._evaluate([s]) for s in structures]
            return PropertyValues(np.concatenate([p.values for p in parts]), [p.reasons[0] for p in parts])
        if isinstance(computed, PropertyValues):  # a source that names its own failures
            values, given = np.asarray(computed.values, dtype=float), computed.reasons
        else:
            values, given = np.asarray(computed, dtype=float), [""] * len(structures)
        return PropertyValues(values, [why or ("" if np.isfinite(v) else f"{self.name} is not finite") for v, why in zip(values, given)])
