"""Never evaluate the same crystal twice: a cache keyed by structure, up to symmetry and a tight tolerance."""

from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure

from .base import PropertySource, PropertyValues


def same_crystal_matcher() -> StructureMatcher:
    """A matcher for "the same crystal", not pymatgen's default "the same prototype".

    No volume scaling, no supercells, and tolerances under what changes an MLIP value: 0.2% in
    lattice lengths, 0.1° in angles, and 0.005 in site displacement normalised by (V/N)^(1/3)
    (about 0.01 Å for a perovskite). A 1% strain or a 0.05 Å displacement is another crystal; an
    origin shift, a permutation of sites or another setting of the same cell is not.
    """
    return StructureMatcher(ltol=0.002, stol=0.005, angle_tol=0.1, primitive_cell=False, scale=False, attempt_supercell=False)


class Cached(PropertySource):
    """Wraps a property source; a crystal that is the same as one seen before (`same_crystal_matcher`) reuses its value.

    Matching is tried only within the same reduced formula and atom count, so lookups stay cheap.
    Duplicates within one batch are evaluated once too. `evaluations` counts real evaluations only;
    `hits` counts reuses.
    """

    def __init__(self, source: PropertySource, matcher: StructureMatcher | None = None):
        self.source = source
        self.name, self.unit, self.cost = source.name, source.unit, source.cost
        self.matcher = matcher or same_crystal_matcher()
        self._store: dict[str, list[tuple[Structure, float, str]]] = defaultdict(list)
        self.hits = 0

    @property
    def evaluations(self) -> int:
        return self.source.evaluations

    def set_guard(self, check) -> None:
        self.source.set_guard(check)

    def state_dict(self) -> dict:
        return {"source": self.source.state_dict(), "store": {k: list(v) for k, v in self._store.items()}, "hits": self.hits}

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state["source"])
        self._store = defaultdict(list, {k: list(v) for k, v in state["store"].items()})
        self.hits = state["hits"]

    def compute(self, structures: Sequence[Structure]):
        return self(structures).values

    def _lookup(self, structure: Structure, formula: str) -> tuple[float, str] | None:
        for other, value, reason in self._store[formula]:
            if len(other) == len(structure) and self.matcher.fit(structure, other):
                return value, reason
        return None

    def __call__(self, structures: Sequence[Structure]) -> PropertyValues:
        structures = list(structures)
        values = np.full(len(structures), np.nan)
        reasons = [""] * len(structures)
        pending: list[int] = []
        duplicate_of: dict[int, int] = {}
        for i, s in enumerate(structures):
            formula = s.composition.reduced_formula
            found = self._lookup(s, formula)
            if found is not None:
                values[i], reasons[i] = found
                self.hits += 1
                continue
            twin = next((j for j in pending if structures[j].composition.reduced_formula == formula and len(structures[j]) == len(s) and self.matcher.fit(s, structures[j])), None)
            if twin is None:
                pending.append(i)
            else:
                duplicate_of[i] = twin
                self.hits += 1
        result = self.source([structures[i] for i in pending])
        for i, value, reason in zip(pending, result.values, result.reasons):
            values[i], reasons[i] = value, reason
            self._store[structures[i].composition.reduced_formula].append((structures[i], value, reason))
        for i, j in duplicate_of.items():
            values[i], reasons[i] = values[j], reasons[j]
        return PropertyValues(values, reasons)
