"""Energy above the convex hull with MLIP energies, and the SUN (stable, unique, novel) filter."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Structure

from ..crystal import MatchIndex, unique_indices
from ..files import read_cache, write_cache
from .base import PropertySource
from .mlip import MLIP
from .properties import EnergyPerAtom, MLIPSource
from .references import elemental_references


def _energy(value) -> bool:
    """What a hull cache may hold per crystal: a finite energy in eV/atom, or None for a crystal the MLIP failed on."""
    return value is None or (isinstance(value, (int, float)) and bool(np.isfinite(value)) and abs(value) < 1e3)


class ConvexHull:
    """Hulls against a reference set whose energies come from the same MLIP.

    Reference energies are single points on the given (DFT-relaxed) structures, computed once and
    cached on disk keyed by the structures and the model. A hull is built per chemical system on
    demand from the references inside it plus the MLIP's elemental references, so a 56-element
    vocabulary never needs one 56-dimensional hull.
    """

    def __init__(self, reference: Sequence[Structure], mlip: MLIP | None = None, cache_dir: str | Path | None = None):
        self.mlip = mlip or MLIP()
        self.reference = list(reference)
        self._entries = self._reference_entries(cache_dir)
        self._diagrams: dict[tuple[str, ...], PhaseDiagram] = {}

    def _reference_entries(self, cache_dir) -> list[PDEntry]:
        key = hashlib.sha256("".join(s.to(fmt="poscar") for s in self.reference).encode() + self.mlip.model_name.encode()).hexdigest()[:16]
        from ..datasets import cache_dir as default_cache

        path = Path(cache_dir or default_cache() / "hulls") / f"{key}.json"
        n = len(self.reference)
        energies = read_cache(path, lambda p: json.loads(p.read_text()), lambda e: isinstance(e, list) and len(e) == n and all(_energy(v) for v in e))
        if energies is None:
            values = EnergyPerAtom(self.mlip)(self.reference).values  # a failing reference crystal is left out
            energies = [float(v) if np.isfinite(v) else None for v in values]
            write_cache(path, lambda handle: handle.write(json.dumps(energies).encode()))
        return [PDEntry(s.composition, e * len(s)) for s, e in zip(self.reference, energies) if e is not None]

    def diagram(self, composition: Composition) -> PhaseDiagram:
        """The phase diagram of the chemical system of `composition` (built once per system)."""
        chemsys = tuple(sorted(e.symbol for e in composition.elements))
        if chemsys not in self._diagrams:
            inside = [e for e in self._entries if {el.symbol for el in e.composition.elements} <= set(chemsys)]
            terminals = [PDEntry(Composition(el), mu) for el, mu in elemental_references(chemsys, self.mlip).items()]
            self._diagrams[chemsys] = PhaseDiagram(inside + terminals)
        return self._diagrams[chemsys]

    def e_above_hull(self, composition: Composition, energy_per_atom: float) -> float:
        """Energy above the hull in eV/atom of a crystal of `composition` at `energy_per_atom` (eV/atom)."""
        entry = PDEntry(composition, energy_per_atom * composition.num_atoms)
        return float(self.diagram(composition).get_e_above_hull(entry, allow_negative=True))


class EHull(MLIPSource):
    """Energy above the MLIP hull (eV/atom), on the crystal as given or after MLIP relaxation."""

    name = "e_hull"
    unit = "eV/atom"

    def __init__(self, hull: ConvexHull, relax: bool = False, **relax_kwargs):
        super().__init__(hull.mlip, relax, **relax_kwargs)
        self.hull = hull

    def read(self, structures: Sequence[Structure], energies: np.ndarray | None):
        return [self.hull.e_above_hull(s.composition, e) for s, e in zip(structures, self.energies(structures, energies))]


class SUNFilter:
    """Zero the reward of crystals that are not stable (E_hull <= threshold), unique in the batch and novel.

    Novelty is against `known` (the prior's training set); uniqueness keeps the first of each group
    of matching crystals in the batch.
    """

    def __init__(self, hull_source: EHull, known: Sequence[Structure], threshold: float = 0.1):
        self.hull_source, self.threshold = hull_source, threshold
        self.known = MatchIndex(known)

    @property
    def sources(self) -> list[PropertySource]:
        return [self.hull_source]

    def __call__(self, structures: Sequence[Structure], values: np.ndarray, ok: np.ndarray):
        n = len(structures)
        idx = np.flatnonzero(ok)
        e_hull = np.full(n, np.nan)
        e_hull[idx] = self.hull_source([structures[i] for i in idx]).values
        stable = np.nan_to_num(e_hull, nan=np.inf) <= self.threshold
        unique = np.zeros(n, dtype=bool)
        unique[idx[unique_indices([structures[i] for i in idx])]] = True
        novel = np.zeros(n, dtype=bool)
        novel[idx] = ~self.known.contains([structures[i] for i in idx])
        sun = stable & unique & novel & ok
        components = {"stable": stable.astype(float), "unique": unique.astype(float), "novel": novel.astype(float), "sun": sun.astype(float)}
        return np.where(sun, values, 0.0), {"e_hull": e_hull}, components
