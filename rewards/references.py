"""Elemental reference energies (chemical potentials) from the MLIP itself, so formation energies are consistent.

For each element, simple prototypes (fcc, bcc, hcp, simple cubic, diamond, and a dimer in a box
for the molecular elements) are scanned over their scale with the MLIP and the lowest energy per
atom is kept.
Results are cached on disk; the CHGNet values for the perov_5 and carbon_24 elements ship with the
package (regenerate with `python -m latticegym.rewards.references --elements ...`).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Iterable

import numpy as np
from pymatgen.core import Element, Lattice, Structure

from ..crystal import MAX_ATOMS_PER_A3
from ..datasets import cache_dir
from ..files import atomic_text, read_cache, write_cache
from .mlip import MLIP, MLIPError

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).parent / "data"
MOLECULAR = {"H", "N", "O", "F", "Cl", "Br", "I"}


def _fcc_primitive(a: float) -> Lattice:
    return Lattice(np.array([[0, 1, 1], [1, 0, 1], [1, 1, 0]]) * a / 2)


def prototypes(symbol: str, d: float) -> list[Structure]:
    """High-symmetry structures of one element with nearest-neighbour distance d (Å)."""
    out = [
        Structure(_fcc_primitive(d * 2**0.5), [symbol], [[0, 0, 0]]),
        Structure(Lattice.cubic(d * 2 / 3**0.5), [symbol] * 2, [[0, 0, 0], [0.5, 0.5, 0.5]]),
        Structure(Lattice.hexagonal(d, d * 1.633), [symbol] * 2, [[1 / 3, 2 / 3, 0.25], [2 / 3, 1 / 3, 0.75]]),
        Structure(Lattice.cubic(d), [symbol], [[0, 0, 0]]),
        Structure(_fcc_primitive(d * 4 / 3**0.5), [symbol] * 2, [[0, 0, 0], [0.25, 0.25, 0.25]]),  # diamond
    ]
    # Denser than any elemental solid: CHGNet's neighbour graphs (and memory) would explode for nothing.
    out = [s for s in out if len(s) / s.volume <= MAX_ATOMS_PER_A3]
    if symbol in MOLECULAR:
        box = 8.0
        out.append(Structure(Lattice.cubic(box), [symbol] * 2, [[0, 0, 0], [d / box, 0, 0]]))
    return out


def compute_reference(symbol: str, mlip: MLIP | None = None) -> float:
    """Lowest MLIP energy per atom over the prototypes, each scanned over its one free length.

    For these prototypes symmetry fixes everything but the scale (the ideal c/a for hcp), so the
    scan is the constrained relaxation, done as batched single points instead of ASE steps.
    """
    mlip = mlip or MLIP()
    el = Element(symbol)
    d0 = 2 * float(el.atomic_radius or el.atomic_radius_calculated or 1.5)
    best = None
    for factors in (np.linspace(0.8, 1.5, 15), None):
        if factors is None:  # refine around the best coarse point
            factors = np.linspace(best[1] * 0.97, best[1] * 1.03, 9)
        for factor in factors:
            for proto in prototypes(symbol, d0 * factor):
                try:
                    energy = mlip.predict([proto])[0].energy_per_atom
                except Exception:  # e.g. CHGNet refuses isolated atoms in a stretched cell: skip that point
                    continue
                if best is None or energy < best[0]:
                    best = (energy, factor)
        if best is None:
            raise MLIPError(f"no prototype of {symbol} gave a physical energy")
    return float(best[0])


def _files(mlip: MLIP) -> tuple[Path, Path]:
    name = Path(mlip.model_name).stem.lower()
    return SHIPPED / f"{name}_elemental_references.json", cache_dir() / "references" / f"{name}.json"


def _valid(values) -> bool:
    return isinstance(values, dict) and all(isinstance(k, str) and isinstance(v, (int, float)) and np.isfinite(v) and abs(v) < 1e3 for k, v in values.items())


def elemental_references(elements: Iterable[str], mlip: MLIP | None = None) -> dict[str, float]:
    """eV/atom per element: shipped values, then the disk cache for elements the package does not ship, then computed (and cached).

    The cache only adds elements: it never overrides a shipped value. To use other values, pass them
    explicitly (`FormationEnergy(references={...})`).
    """
    mlip = mlip or MLIP()
    shipped, cached = _files(mlip)
    known: dict[str, float] = json.loads(shipped.read_text()) if shipped.exists() else {}
    computed = read_cache(cached, lambda p: json.loads(p.read_text()), _valid) or {}
    clashing = sorted(s for s in computed if s in known and computed[s] != known[s])
    if clashing:
        log.warning("%s: ignoring its values for %s, which the package ships; pass references= to override them", cached, ", ".join(clashing))
    known = {**{s: v for s, v in computed.items() if s not in known}, **known}
    missing = [e for e in elements if e not in known]
    if missing:
        for symbol in missing:
            start = time.perf_counter()
            known[symbol] = compute_reference(symbol, mlip)
            log.warning("%s: no shipped %s reference energy; computed it once (%.0f s), cached in %s", symbol, mlip.model_name, time.perf_counter() - start, cached)
        kept = {**{s: v for s, v in computed.items() if s not in clashing}, **{s: known[s] for s in missing}}
        write_cache(cached, lambda handle: handle.write(json.dumps(kept, indent=1, sort_keys=True).encode()))
    return {e: known[e] for e in elements}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Compute MLIP elemental references and write the shipped JSON.")
    parser.add_argument("--elements", nargs="+", required=True)
    parser.add_argument("--model", default="chgnet")
    args = parser.parse_args(argv)
    mlip = MLIP(args.model)
    shipped, _ = _files(mlip)
    values = json.loads(shipped.read_text()) if shipped.exists() else {}
    for symbol in args.elements:
        values[symbol] = compute_reference(symbol, mlip)
        print(f"{symbol}: {values[symbol]:.4f} eV/atom", flush=True)
        atomic_text(shipped, json.dumps(values, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
