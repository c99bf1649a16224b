"""Small crystals built with pymatgen, shared by the tests."""

import numpy as np
from pymatgen.core import Lattice, Structure


def rocksalt() -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(5.64), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def perovskite() -> Structure:
    return Structure(
        Lattice.cubic(3.905),
        ["Sr", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )


def diamond() -> Structure:
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]]).get_primitive_structure()


def triclinic(seed: int = 0) -> Structure:
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(4.1, 5.3, 6.2, 81.0, 97.0, 104.0)
    return Structure(lattice, ["Li", "Fe", "P", "O", "O", "O", "O"], rng.random((7, 3)))
