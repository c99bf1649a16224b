"""Filters applied to combined rewards: MatInvent's diversity filter, and the SUN filter."""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import numpy as np
from pymatgen.core import Structure

from ..crystal import MatchIndex


class CrystalKeys:
    """Names crystals so that repeats share a name: the reduced formula, or formula plus polymorph.

    `mode="structure"` matches each crystal (`crystal.MatchIndex`) against the crystals named so far,
    so the names depend on the order crystals arrive in; the state is saved with a run.
    """

    def __init__(self, mode: str = "composition"):
        if mode not in ("composition", "structure"):
            raise ValueError(f"mode must be 'composition' or 'structure', got {mode!r}")
        self.mode = mode
        self._polymorphs = MatchIndex()

    def __call__(self, structure: Structure) -> str:
        formula = structure.composition.reduced_formula
        return formula if self.mode == "composition" else f"{formula}#{self._polymorphs.place([structure])[0][0]}"

    def peek(self, structure: Structure) -> str:
        """The name `structure` would get, without registering a new polymorph (all new ones of a formula share "#new")."""
        formula = structure.composition.reduced_formula
        if self.mode == "composition":
            return formula
        found = self._polymorphs.find([structure])[0]
        return f"{formula}#{'new' if found is None else found}"

    def state_dict(self) -> dict:
        return {"polymorphs": list(self._polymorphs.structures)}

    def load_state_dict(self, state: dict) -> None:
        self._polymorphs = MatchIndex(state["polymorphs"])


class DiversityFilter:
    """Penalise repeats across the whole run, as MatInvent's released code does (`memory/ltm.py`).

    Every scored crystal of the batch first enters the memory (`ltm.extend` runs before
    `div_filter`); then, with occ the number of crystals in memory with the same key (the crystal
    itself and its batch-mates included), the reward is kept while occ <= tol, multiplied by
    (buffer - occ) / (buffer - tol) between, and set to 0 at occ >= buffer. MatInvent's settings
    are tol 3, buffer 6 (`configs/pipeline/mat_invent.yaml`). `mode="composition"` keys by reduced
    formula (MatInvent); `mode="structure"` by structure match, so polymorphs are not repeats.
    Every agent gets this one filter.
    """

    def __init__(self, mode: str = "composition", tol: int = 3, buffer: int = 6):
        if not 0 <= tol < buffer:
            raise ValueError(f"need 0 <= tol < buffer, got tol={tol}, buffer={buffer}")
        self.tol, self.buffer = tol, buffer
        self.keys = CrystalKeys(mode)
        self.counts: Counter = Counter()

    @property
    def mode(self) -> str:
        return self.keys.mode

    def state_dict(self) -> dict:
        return {"counts": dict(self.counts), "keys": self.keys.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.counts = Counter(state["counts"])
        self.keys.load_state_dict(state["keys"])

    def multiplier(self, occ: int) -> float:
        """The reward factor for a key seen `occ` times before: 1, then a linear ramp, then 0."""
        if occ <= self.tol:
            return 1.0
        if occ >= self.buffer:
            return 0.0
        return (self.buffer - occ) / (self.buffer - self.tol)

    def outlook(self, structures: Sequence[Structure]) -> tuple[list[str], np.ndarray, np.ndarray]:
        """For crystals not yet scored, changing nothing: each one's key, how many more of that key the
        memory takes at full reward, and the factor one more would get now."""
        keys = [self.keys.peek(s) for s in structures]
        room = np.array([max(self.tol - self.counts[k], 0) for k in keys], dtype=int)
        return keys, room, np.array([self.multiplier(self.counts[k] + 1) for k in keys])

    def __call__(self, structures: Sequence[Structure], values: np.ndarray, ok: np.ndarray):
        keys = {i: self.keys(s) for i, s in enumerate(structures) if ok[i]}
        self.counts.update(keys.values())  # the whole batch enters the memory first
        factors = np.ones(len(structures))
        for i, key in keys.items():
            factors[i] = self.multiplier(self.counts[key])
        return values * factors, {}, {"diversity": factors}
