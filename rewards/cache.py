"""Never evaluate the same crystal twice: a cache keyed by structure, up to symmetry and a tight tolerance."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from pymatgen.core import Structure

from ..crystal import SAME_VALUE, MatchIndex, MatchTolerance
from .base import PropertySource, PropertyValues


class Cached(PropertySource):
    """Wraps a property source; a crystal that is the same as one seen before (`crystal.SAME_VALUE`) reuses its value.

    Duplicates within one batch are evaluated once too. `evaluations` counts real evaluations only;
    `hits` counts reuses.
    """

    def __init__(self, source: PropertySource, tolerance: MatchTolerance = SAME_VALUE):
        self.source = source
        self.name, self.unit, self.cost = source.name, source.unit, source.cost
        self._index = MatchIndex(tolerance=tolerance)
        self._entries: list[tuple[float, str]] = []  # (value, reason) per entry of the index
        self.hits = 0

    @property
    def evaluations(self) -> int:
        return self.source.evaluations

    def set_guard(self, check) -> None:
        self.source.set_guard(check)

    def state_dict(self) -> dict:
        return {"source": self.source.state_dict(), "structures": list(self._index.structures), "entries": list(self._entries), "hits": self.hits}

    def load_state_dict(self, state: dict) -> None:
        self.source.load_state_dict(state["source"])
        self._index = MatchIndex(state["structures"], self._index.tolerance)
        self._entries = [tuple(e) for e in state["entries"]]
        self.hits = state["hits"]

    def compute(self, structures: Sequence[Structure]):
        return self(structures).values

    def __call__(self, structures: Sequence[Structure]) -> PropertyValues:
        structures = list(structures)
        ids = self._index.find(structures)
        unseen = [i for i, j in enumerate(ids) if j is None]
        twins = MatchIndex(tolerance=self._index.tolerance).place([structures[i] for i in unseen])  # one evaluation per crystal of the batch
        first = [i for i, (_, new) in zip(unseen, twins) if new]
        result = self.source([structures[i] for i in first])  # the index grows only once values exist
        offset = len(self._index)
        self._index.add([structures[i] for i in first])
        self._entries += list(zip(result.values.tolist(), result.reasons))
        for i, (twin, _) in zip(unseen, twins):
            ids[i] = offset + twin
        self.hits += len(structures) - len(first)
        return PropertyValues(np.array([self._entries[j][0] for j in ids], dtype=float), [self._entries[j][1] for j in ids])
