"""Filters applied to combined rewards: MatInvent's diversity filter, and the SUN filter."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Structure


class DiversityFilter:
    """Penalise repeats across the whole run (MatInvent).

    With occ the number of earlier rewarded crystals with the same key, the reward is kept while
    occ <= tol, multiplied by (buffer - occ) / (buffer - tol) between, and set to 0 at occ >= buffer.
    `mode="composition"` keys by reduced formula (MatInvent); `mode="structure"` by structure match,
    so polymorphs of one formula are not repeats. MatInvent's released code counts the crystal itself
    in its own occurrence; `count_self=True` reproduces that for the baseline.
    """

    def __init__(self, mode: str = "composition", tol: int = 3, buffer: int = 6, count_self: bool = False):
        if mode not in ("composition", "structure"):
            raise ValueError(f"mode must be 'composition' or 'structure', got {mode!r}")
        if not 0 <= tol < buffer:
            raise ValueError(f"need 0 <= tol < buffer, got tol={tol}, buffer={buffer}")
        self.mode, self.tol, self.buffer, self.count_self = mode, tol, buffer, count_self
        self.counts: Counter = Counter()
        self._structures: dict[str, list[tuple[Structure, int]]] = {}  # formula -> (representative, key)
        self._matcher = StructureMatcher()

    def key(self, structure: Structure) -> str:
        formula = structure.composition.reduced_formula
        if self.mode == "composition":
            return formula
        reps = self._structures.setdefault(formula, [])
        for rep, k in reps:
            if self._matcher.fit(structure, rep):
                return f"{formula}#{k}"
        reps.append((structure, len(reps)))
        return f"{formula}#{len(reps) - 1}"

    def multiplier(self, occ: int) -> float:
        if occ <= self.tol:
            return 1.0
        if occ >= self.buffer:
            return 0.0
        return (self.buffer - occ) / (self.buffer - self.tol)

    def __call__(self, structures: Sequence[Structure], values: np.ndarray, ok: np.ndarray):
        factors = np.ones(len(structures))
        for i, s in enumerate(structures):
            if not ok[i]:
                continue
            key = self.key(s)
            if self.count_self:
                self.counts[key] += 1
                factors[i] = self.multiplier(self.counts[key])
            else:
                factors[i] = self.multiplier(self.counts[key])
                self.counts[key] += 1
        return values * factors, {}, {"diversity": factors}
