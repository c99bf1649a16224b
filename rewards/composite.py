"""The standard reward: guards, then property sources shaped into components, combined, then filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np
from pymatgen.core import Structure

from ..crystal import MAX_ATOMS_PER_A3, compositional_validity, nearest_neighbour_distances, structural_validity
from .base import PropertySource, RewardResult
from .shaping import Identity, combine


@dataclass
class Objective:
    """One shaped property: `shaping(source(structure))` becomes the component `name`."""

    source: PropertySource
    shaping: Callable[[np.ndarray], np.ndarray] = Identity()
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.source.name


@dataclass
class Guards:
    """Checks before any property is computed; a crystal that fails one is a failure with a reason.

    Every guard is on by default. `compositional_validity` is SMACT charge neutrality with the
    Pauling test (CDVAE's rule); `min_elements` guards against the single-element winners that
    reward hacking produces (set it to 1 for one-element tasks such as carbon).
    `max_atoms_per_a3` refuses crushed cells before an MLIP sees them (their neighbour graphs cost
    gigabytes); the default is `crystal.MAX_ATOMS_PER_A3`, set from the shared data with a margin.
    `neighbour_range` bounds each atom's nearest-neighbour distance (periodic images included), for
    one-element tasks whose bonds have a known length, such as carbon.
    """

    structural_validity: bool = True
    compositional_validity: bool = True
    min_elements: int = 2
    max_atoms_per_a3: float | None = MAX_ATOMS_PER_A3
    neighbour_range: tuple[float, float] | None = None  # Å: every atom's nearest neighbour must lie inside

    def check(self, structure: Structure) -> str:
        """Why `structure` must not be scored ("" when it passes every guard)."""
        if self.structural_validity:
            v = structural_validity(structure)
            if not v:
                return f"invalid structure: {v.reason}"
        if self.max_atoms_per_a3 is not None and structure.volume > 0:
            density = len(structure) / structure.volume
            if density > self.max_atoms_per_a3:
                return f"{structure.composition.reduced_formula} is crushed: {density:.3f} atoms/Å^3 > {self.max_atoms_per_a3}"
        if self.neighbour_range is not None:
            lo, hi = self.neighbour_range
            nearest = nearest_neighbour_distances(structure)
            i = int(np.argmax((nearest < lo) | (nearest > hi)))
            if not lo <= nearest[i] <= hi:
                return f"atom {i}'s nearest neighbour is {nearest[i]:.2f} Å away, outside [{lo}, {hi}] Å"
        if len(structure.composition.elements) < self.min_elements:
            return f"{structure.composition.reduced_formula} has fewer than {self.min_elements} elements"
        if self.compositional_validity:
            v = compositional_validity(structure.composition)
            if not v:
                return f"invalid composition: {v.reason}"
        return ""


class Filter(Protocol):
    """Post-processing of combined rewards (diversity, SUN); returns new values and its own components."""

    def __call__(self, structures: Sequence[Structure], values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]: ...


class CompositeReward:
    """The standard reward: guards, then shaped property objectives combined into one value, then filters.

    A crystal that fails a guard or whose property cannot be computed gets `failure_value` and
    `ok=False` with the reason; no property is computed for a guarded-out crystal.

    Args:
        objectives: the shaped properties.
        combine: "mean", "min", "weighted" or "product".
        weights: per-objective weights for "weighted".
        guards: checks before any property is computed (default `Guards()`).
        failure_value: the reward of a crystal that could not be scored.
        filters: post-processing of the combined values (diversity, SUN), in order.
    """
    def __init__(
        self,
        objectives: Sequence[Objective],
        combine: str = "mean",
        weights: dict[str, float] | None = None,
        guards: Guards | None = None,
        failure_value: float = 0.0,
        filters: Sequence[Filter] = (),
    ):
        if not objectives:
            raise ValueError("a reward needs at least one objective")
        self.objectives = list(objectives)
        self.how = combine
        self.weights = weights
        self.guards = guards or Guards()
        self.failure_value = failure_value
        self.filters = list(filters)

    def __repr__(self) -> str:
        objectives = ", ".join(f"{o.name}:{type(o.shaping).__name__}" for o in self.objectives)
        filters = ", ".join(type(f).__name__ for f in self.filters) or "none"
        return f"CompositeReward([{objectives}], combine={self.how!r}, guards={self.guards}, filters=[{filters}])"

    @property
    def sources(self) -> list[PropertySource]:
        unique: dict[int, PropertySource] = {}
        for obj in self.objectives:
            unique.setdefault(id(obj.source), obj.source)
        for f in self.filters:
            for source in getattr(f, "sources", []):
                unique.setdefault(id(source), source)
        return list(unique.values())

    @property
    def evaluations(self) -> int:
        """Property evaluations so far, over every source this reward uses."""
        return sum(s.evaluations for s in self.sources)

    def state_dict(self) -> dict:
        """Evaluation counts, caches and diversity memory: what a resumed training run must restore."""
        return {
            "sources": [s.state_dict() for s in self.sources],
            "filters": [f.state_dict() if hasattr(f, "state_dict") else None for f in self.filters],
        }

    def load_state_dict(self, state: dict) -> None:
        for source, s in zip(self.sources, state["sources"], strict=True):
            source.load_state_dict(s)
        for f, s in zip(self.filters, state["filters"], strict=True):
            if s is not None:
                f.load_state_dict(s)

    def __call__(self, structures: Sequence[Structure]) -> RewardResult:
        structures = list(structures)
        n = len(structures)
        reasons = [self._guard(s) for s in structures]
        properties = {obj.name: np.full(n, np.nan) for obj in self.objectives}
        for obj in self.objectives:
            idx = [i for i in range(n) if not reasons[i]]
            result = obj.source([structures[i] for i in idx])
            properties[obj.name][idx] = result.values
            for i, reason in zip(idx, result.reasons):
                reasons[i] = reason
        ok = np.array([not r for r in reasons], dtype=bool)
        components = {obj.name: np.where(ok, obj.shaping(np.nan_to_num(properties[obj.name])), 0.0) for obj in self.objectives}
        values = np.where(ok, combine(components, self.how, self.weights), self.failure_value)
        for f in self.filters:
            values, extra_properties, extra_components = f(structures, values, ok)
            properties.update(extra_properties)
            components.update(extra_components)
        return RewardResult(values, properties, components, ok, reasons)

    def shape_and_combine(self, properties: dict[str, np.ndarray]) -> np.ndarray:
        """The combined value that property values (one array per objective) would get, before any filter.

        For crystals that pass the guards: what a surrogate of the properties predicts the reward to be.
        """
        return combine({obj.name: obj.shaping(np.asarray(properties[obj.name], float)) for obj in self.objectives}, self.how, self.weights)

    def screen(self, structures: Sequence[Structure]) -> list[str]:
        """Why each crystal would be refused before any property is computed ("" where it passes every guard)."""
        return [self._guard(s) for s in structures]

    def _guard(self, structure: Structure) -> str:
        try:
            return self.guards.check(structure)
        except Exception as exc:  # a crystal too broken even to check
            return f"invalid structure: {type(exc).__name__}: {exc}"
