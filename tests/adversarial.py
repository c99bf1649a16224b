"""A catalogue of crystals no chemist would accept, each of which has won a task without its guards."""

import numpy as np
from pymatgen.core import Lattice, Structure

PEROVSKITE_SITES = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]


def on_perovskite_sites(species: list[str], a: float = 3.9) -> Structure:
    return Structure(Lattice.cubic(a), species, PEROVSKITE_SITES)


def crushed(structure: Structure, factor: float) -> Structure:
    out = structure.copy()
    out.scale_lattice(structure.volume * factor)
    return out


def loose_carbon(seed: int = 0, atoms: int = 8, density: float = 3.6) -> Structure:
    """Carbon atoms whose nearest neighbours are 0.5 to 1.1 Å away, scaled to `density` g/cm^3."""
    rng = np.random.default_rng(seed)
    while True:
        s = Structure(Lattice.cubic(4.0), ["C"] * atoms, rng.random((atoms, 3)))
        s.scale_lattice(float(s.composition.weight) * 1.66054 / density)  # amu -> g/cm^3 for Å^3
        d = s.distance_matrix + np.eye(atoms) * 99
        if 0.5 < d.min() and d.min(axis=1).max() < 1.1:
            return s


def catalogue() -> dict[str, Structure]:
    return {
        "O5 in a 4 Å cube": on_perovskite_sites(["O"] * 5, 4.0),
        "AlO4 (not charge balanced)": on_perovskite_sites(["Al", "O", "O", "O", "O"]),
        "Li2F3 (not charge balanced)": on_perovskite_sites(["Li", "Li", "F", "F", "F"], 3.6),
        "Y2O2F (not charge balanced)": on_perovskite_sites(["Y", "Y", "O", "O", "F"], 4.2),
        "a lone Sr in a 3 Å cube": Structure(Lattice.cubic(3.0), ["Sr"], [[0, 0, 0]]),
        "Fe5": on_perovskite_sites(["Fe"] * 5, 3.6),
        "Co5": on_perovskite_sites(["Co"] * 5, 3.6),
        "ScCoO2F at 0.4x volume": crushed(on_perovskite_sites(["Sc", "Co", "O", "O", "F"]), 0.4),
        "SrTiO3 at 0.17x volume": crushed(on_perovskite_sites(["Sr", "Ti", "O", "O", "O"]), 0.17),
        "loose carbon at 3.6 g/cm^3": loose_carbon(),
        "carbon atoms 0.3 Å apart": Structure(Lattice.cubic(3.0), ["C", "C"], [[0, 0, 0], [0.1, 0, 0]]),
    }
