"""Padded crystal batches <-> pymatgen Structures, and the validity checks used everywhere.

This module is the base of the package: it imports nothing else from latticegym.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
from collections import defaultdict
import warnings
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Element, Lattice, Structure
from tqdm import tqdm

MIN_DISTANCE = 0.5  # Å, CDVAE's structural-validity cutoff
# Densest crystals in the shared data: 0.139 (perov_5) and 0.184 (carbon_24, at 10 GPa) atoms/Å^3;
# anything above this bound (a 36% margin) is a crushed cell, not a solid.
MAX_ATOMS_PER_A3 = 0.25
# Geometry guards, set from the shared data by `python -m latticegym.benchmarks.measure.guard_thresholds`
# (real crystals: perov_5 3,787, carbon_24 2,032; the script prints the share each bound rejects):
# - closest contact d / (r_i + r_j), Cordero covalent radii: lowest 0.667 (perov_5), 0.834 (carbon_24);
MIN_CONTACT_RATIO = 0.6
# - each atom's nearest neighbour by that ratio: at most 1.758 (perov_5), 1.083 (carbon_24); beyond: a gas;
MAX_NEIGHBOUR_RATIO = 1.8
# - that ratio's mean over a crystal's atoms, which a crushed or expanded cell moves as a whole:
#   0.716-1.224 (perov_5), 0.934-1.043 (carbon_24);
MEAN_CONTACT_RANGE = (0.7, 1.25)
# - density: lowest 0.0286 atoms/Å^3 (perov_5), 0.111 (carbon_24); a 30% margin below perov_5's;
MIN_ATOMS_PER_A3 = 0.02
# - the widest empty slab along a lattice plane: at most 2.80 Å (perov_5), 2.95 Å (carbon_24); wider: a slab.
MAX_VACUUM_GAP = 3.5  # Å
# MatInvent's `invalid_filter` (pipeline/filters/opt_filter.py) refuses any cell edge of 25 Å or more;
# the longest edge in the shared data is 5.6 Å (perov_5), 12.3 Å (carbon_24).
MAX_CELL_EDGE = 25.0  # Å
MAX_ATOMS = 1000  # atoms per crystal latticegym reads or samples; the shared data has at most 24
MIN_VOLUME = 0.1  # Å^3
MIN_SHAPE_FACTOR = 0.05  # V / (abc); a flat cell has 0, a cube 1
MAX_LENGTH = 1000.0  # Å; longer lattice vectors mean the sampler exploded


@dataclass
class CrystalBatch:
    """B crystals padded to N_max atoms.

    atom_types: (B, N_max) atomic numbers, 0 on padding.
    frac_coords: (B, N_max, 3) fractional coordinates.
    lattice: (B, 3, 3) lattice vectors as rows, in Å.
    mask: (B, N_max) True on real atoms; real atoms come first.
    """

    atom_types: np.ndarray
    frac_coords: np.ndarray
    lattice: np.ndarray
    mask: np.ndarray

    def __post_init__(self) -> None:
        b, n = self.atom_types.shape
        if self.frac_coords.shape != (b, n, 3):
            raise ValueError(f"frac_coords has shape {self.frac_coords.shape}, expected {(b, n, 3)}")
        if self.lattice.shape != (b, 3, 3):
            raise ValueError(f"lattice has shape {self.lattice.shape}, expected {(b, 3, 3)}")
        if self.mask.shape != (b, n):
            raise ValueError(f"mask has shape {self.mask.shape}, expected {(b, n)}")

    def __len__(self) -> int:
        return self.atom_types.shape[0]

    @property
    def n_max(self) -> int:
        return self.atom_types.shape[1]

    @property
    def num_atoms(self) -> np.ndarray:
        return self.mask.sum(axis=1)

    @classmethod
    def from_structures(cls, structures: Sequence[Structure], n_max: int | None = None) -> CrystalBatch:
        """Pad `structures` to `n_max` atoms (default: the largest) into one batch."""
        sizes = [len(s) for s in structures]
        n_max = max(sizes, default=0) if n_max is None else n_max
        if sizes and max(sizes) > n_max:
            i = int(np.argmax(sizes))
            raise ValueError(f"structure {i} has {sizes[i]} atoms, more than n_max={n_max}")
        b = len(structures)
        atom_types = np.zeros((b, n_max), dtype=np.int64)
        frac = np.zeros((b, n_max, 3))
        lattice = np.zeros((b, 3, 3))
        mask = np.zeros((b, n_max), dtype=bool)
        for i, s in enumerate(structures):
            n = len(s)
            atom_types[i, :n] = [site.specie.Z for site in s]
            frac[i, :n] = s.frac_coords
            lattice[i] = s.lattice.matrix
            mask[i, :n] = True
        return cls(atom_types, frac, lattice, mask)

    def structure(self, i: int) -> Structure:
        """Crystal `i` as a pymatgen Structure (padding dropped)."""
        m = self.mask[i]
        species = [Element.from_Z(int(z)) for z in self.atom_types[i, m]]
        return Structure(Lattice(self.lattice[i]), species, self.frac_coords[i, m])

    def to_structures(self) -> list[Structure]:
        """Every crystal of the batch as a pymatgen Structure."""
        return [self.structure(i) for i in range(len(self))]


def canonical(structure: Structure) -> Structure:
    """Niggli-reduced cell in pymatgen's standard orientation, as CDVAE builds its datasets."""
    reduced = structure.get_reduced_structure()
    lattice = Lattice.from_parameters(*reduced.lattice.parameters)
    return Structure(lattice, reduced.species, reduced.frac_coords)


@dataclass(frozen=True)
class Validity:
    """The outcome of a check: `ok`, and why not."""

    ok: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.ok


VALID = Validity(True)


def lattice_validity(matrix: np.ndarray) -> Validity:
    """Whether a 3x3 lattice (rows in Å) is usable: finite, non-degenerate, volume >= 0.1 Å^3, sane lengths and angles."""
    matrix = np.asarray(matrix, dtype=float)
    if matrix.shape != (3, 3):
        return Validity(False, f"lattice has shape {matrix.shape}, expected (3, 3)")
    if not np.all(np.isfinite(matrix)):
        return Validity(False, "lattice contains NaN or inf")
    lengths = np.linalg.norm(matrix, axis=1)
    if lengths.max() > MAX_LENGTH:
        return Validity(False, f"lattice vector of {lengths.max():.3g} Å is longer than {MAX_LENGTH:g} Å")
    volume = abs(float(np.linalg.det(matrix)))
    if volume < MIN_VOLUME:
        return Validity(False, f"cell volume {volume:.3g} Å^3 is below {MIN_VOLUME} Å^3 (degenerate cell)")
    shape = volume / float(np.prod(lengths))
    if shape < MIN_SHAPE_FACTOR:
        return Validity(False, f"cell is nearly flat: V/(abc) = {shape:.3g} < {MIN_SHAPE_FACTOR}")
    return VALID


def self_image_validity(lattice: Lattice, min_distance: float = MIN_DISTANCE) -> Validity:
    """Every atom is at least `min_distance` Å from its own periodic images: no lattice vector is shorter."""
    shortest = min(lattice.get_lll_reduced_lattice().abc)
    if shortest < min_distance:
        return Validity(False, f"an atom is {shortest:.3f} Å from its own periodic image (< {min_distance} Å)")
    return VALID


def structural_validity(structure: Structure, min_distance: float = MIN_DISTANCE) -> Validity:
    """Every interatomic distance, periodic images included, is at least `min_distance` Å."""
    lattice = lattice_validity(structure.lattice.matrix)
    if not lattice:
        return lattice
    if len(structure) == 0:
        return Validity(False, "structure has no atoms")
    if not np.all(np.isfinite(structure.frac_coords)):
        return Validity(False, "fractional coordinates contain NaN or inf")
    images = self_image_validity(structure.lattice, min_distance)
    if not images:
        return images
    if len(structure) > 1:
        dist = structure.distance_matrix + np.diag(np.full(len(structure), np.inf))
        i, j = np.unravel_index(np.argmin(dist), dist.shape)
        if dist[i, j] < min_distance:
            return Validity(
                False,
                f"atoms {i} ({structure[i].specie}) and {j} ({structure[j].specie}) are "
                f"{dist[i, j]:.3f} Å apart (< {min_distance} Å)",
            )
    return VALID


def compositional_validity(composition: Composition, pauling_test: bool = True, include_alloys: bool = True) -> Validity:
    """SMACT charge neutrality plus the Pauling electronegativity test, following CDVAE's `smact_validity`."""
    import smact
    from smact.screening import pauling_test as smact_pauling_test

    amounts = composition.get_el_amt_dict()
    if not amounts:
        return Validity(False, "composition is empty")
    symbols = sorted(amounts, key=lambda s: Element(s).Z)
    if len(symbols) == 1:
        return VALID
    if include_alloys and all(s in smact.metals for s in symbols):
        return VALID
    counts = np.array([int(round(amounts[s])) for s in symbols])
    counts = counts // np.gcd.reduce(counts)
    try:
        space = smact.element_dictionary(tuple(symbols))
    except Exception as exc:  # smact lacks data for some elements
        return Validity(False, f"SMACT has no data for {symbols}: {exc}")
    elements = [space[s] for s in symbols]
    electronegativities = [e.pauling_eneg for e in elements]
    threshold = int(counts.max())
    stoichs = [(int(c),) for c in counts]
    neutral_found = False
    for oxidation_states in itertools.product(*[e.oxidation_states for e in elements]):
        if not smact.neutral_ratios(oxidation_states, stoichs=stoichs, threshold=threshold):
            continue
        neutral_found = True
        if not pauling_test:
            return VALID
        try:
            if smact_pauling_test(oxidation_states, electronegativities):
                return VALID
        except TypeError:  # missing electronegativity data counts as a pass, as in CDVAE
            return VALID
    formula = composition.reduced_formula
    if neutral_found:
        return Validity(False, f"{formula}: charge-neutral oxidation states all fail the electronegativity test")
    return Validity(False, f"{formula}: no charge-neutral combination of oxidation states")


def validity(structure: Structure) -> Validity:
    """Structural then compositional validity: CDVAE's `valid`."""
    structural = structural_validity(structure)
    if not structural:
        return structural
    return compositional_validity(structure.composition)


def structure_from_cif(cif: str) -> Structure:
    """Parse one CIF block, silencing pymatgen's chatter about rounding and occupancies."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return Structure.from_str(cif, fmt="cif")


def structure_to_cif(structure: Structure) -> str:
    """The CIF text of `structure` (CDVAE's `cif` column format)."""
    return structure.to(fmt="cif")


@functools.lru_cache(maxsize=2)
def magpie(impute_nan: bool):
    """matminer's Magpie composition featurizer, for the coverage metric and the reward surrogate.
    The metric keeps NaNs, as CDVAE does; the surrogate imputes them, since its trees need every feature."""
    from matminer.featurizers.composition.composite import ElementProperty

    return ElementProperty.from_preset("magpie", impute_nan=impute_nan)


def nearest_neighbour_distances(structure: Structure) -> np.ndarray:
    """Each atom's distance to its nearest neighbour, periodic images (its own included) counted, in Å."""
    d = structure.distance_matrix.copy()
    np.fill_diagonal(d, min(structure.lattice.abc))  # an atom's own nearest periodic image
    return d.min(axis=1)


def covalent_radii(structure: Structure) -> np.ndarray:
    """Each atom's covalent radius in Å (Cordero et al. 2008, as pymatgen tabulates them)."""
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    missing = sorted({sp.symbol for sp in structure.species} - set(CovalentRadius.radius))
    if missing:
        raise ValueError(f"no covalent radius for {', '.join(missing)}")
    return np.array([CovalentRadius.radius[sp.symbol] for sp in structure.species])


def contact_ratios(structure: Structure) -> np.ndarray:
    """(N, N) distances over the sum of covalent radii, periodic images included (the diagonal: an atom's own image).

    1 is a typical bond; far below 1 atoms are fused, far above it they do not touch.
    """
    r = covalent_radii(structure)
    d = structure.distance_matrix.copy()
    np.fill_diagonal(d, min(structure.lattice.get_lll_reduced_lattice().abc))
    return d / (r[:, None] + r[None, :])


def vacuum_gap(structure: Structure) -> float:
    """The widest empty slab parallel to a lattice plane, in Å: the largest gap between atoms projected on each axis."""
    spacings = 1.0 / np.array(structure.lattice.reciprocal_lattice_crystallographic.abc)  # interplanar distances
    widest = 0.0
    for axis in range(3):
        f = np.sort(structure.frac_coords[:, axis] % 1.0)
        gaps = np.diff(np.append(f, f[0] + 1.0))
        widest = max(widest, float(gaps.max() * spacings[axis]))
    return widest


def coordination_numbers(structure: Structure, cutoff: float) -> np.ndarray:
    """Each atom's number of neighbours within `cutoff` Å, every periodic image counted."""
    centres = structure.get_neighbor_list(cutoff)[0]
    return np.bincount(centres, minlength=len(structure))


@dataclass(frozen=True)
class MatchTolerance:
    """How alike two crystals must be to count as the same: pymatgen StructureMatcher's settings."""

    ltol: float = 0.2
    stol: float = 0.3
    angle_tol: float = 5.0
    primitive_cell: bool = True
    scale: bool = True
    attempt_supercell: bool = False

    def matcher(self) -> StructureMatcher:
        """A pymatgen StructureMatcher with these settings."""
        return StructureMatcher(**asdict(self))


SAME_STRUCTURE = MatchTolerance()
"""pymatgen's defaults, as the field's uniqueness and novelty use them (CDVAE, DiffCSP, MatterGen): a
crystal, its other settings and cells, and itself a little strained or uniformly scaled are one."""

SAME_VALUE = MatchTolerance(ltol=0.002, stol=0.005, angle_tol=0.1, primitive_cell=False, scale=False)
"""For reusing a computed property: no volume scaling, no supercells, and tolerances under what changes
an MLIP value: 0.2% in lattice lengths, 0.1° in angles, 0.005 in site displacement normalised by
(V/N)^(1/3) (about 0.01 Å for a perovskite). A 1% strain or a 0.05 Å displacement is another crystal;
an origin shift, a permutation of sites or another setting of the same cell is not."""


def _reducible(lattice: Lattice) -> bool:
    """Whether to compare a cell with StructureMatcher: pymatgen's Niggli reduction and fit take minutes on a
    nearly flat cell or one with a lattice vector shorter than an atom (as an early denoising step gives)."""
    return bool(lattice_validity(lattice.matrix)) and bool(self_image_validity(lattice))


class MatchIndex:
    """The one answer to "is this the same crystal?": crystals added so far, to ask which new ones match one of them.

    Uniqueness, novelty, the run's history, discoveries, polymorph keys, the best list and the
    property cache all use it, each with its `tolerance`. StructureMatcher.fit reduces both crystals
    on every call, and can only match reduced cells of the same composition and size; the index
    reduces each crystal once (as pymatgen's own group_structures does) and compares only within
    (formula, size) buckets, which gives the same answers far faster. Entry ids count from 0 in the
    order crystals were added; `structures` holds them as given.
    """

    def __init__(self, known: Sequence[Structure] = (), tolerance: MatchTolerance = SAME_STRUCTURE):
        self.tolerance = tolerance
        self._matcher = tolerance.matcher()
        self.structures: list[Structure] = []
        self._reduced: list[Structure] = []
        self._buckets: dict[tuple[str, int, bool], list[int]] = defaultdict(list)
        self.add(known)

    def __len__(self) -> int:
        return len(self.structures)

    def _reduce(self, structure: Structure) -> tuple[Structure, tuple[str, int, bool]]:
        """The crystal to compare and its bucket: (formula, size, whether StructureMatcher compares it)."""
        if not _reducible(structure.lattice):  # no real crystal; only an exact copy matches it
            return structure, (structure.composition.reduced_formula, len(structure), False)
        reduced = structure  # a cell pymatgen fails to reduce is compared as it is
        with contextlib.suppress(Exception):
            reduced = StructureMatcher._get_reduced_structure(structure, primitive_cell=self.tolerance.primitive_cell, niggli=True)
        return reduced, (reduced.composition.reduced_formula, len(reduced), True)

    def _find(self, reduced: Structure, key: tuple[str, int, bool]) -> int | None:
        if not key[2]:
            return next((j for j in self._buckets[key] if reduced == self._reduced[j]), None)
        return next((j for j in self._buckets[key] if self._matcher.fit(reduced, self._reduced[j], skip_structure_reduction=True)), None)

    def _append(self, structure: Structure, reduced: Structure, key: tuple[str, int, bool]) -> int:
        self._buckets[key].append(len(self.structures))
        self.structures.append(structure)
        self._reduced.append(reduced)
        return len(self.structures) - 1

    def add(self, structures: Sequence[Structure]) -> list[int]:
        """Add every crystal, matching or not (a run's history grows this way); returns their ids."""
        return [self._append(s, *self._reduce(s)) for s in structures]

    def find(self, structures: Sequence[Structure], progress: bool = False) -> list[int | None]:
        """For each crystal, the id of the first entry it matches, or None."""
        return [self._find(*self._reduce(s)) for s in tqdm(structures, desc="matching known structures", disable=not progress)]

    def contains(self, structures: Sequence[Structure], progress: bool = False) -> np.ndarray:
        """For each crystal, whether it matches an entry."""
        return np.array([i is not None for i in self.find(structures, progress)], dtype=bool)

    def place(self, structures: Sequence[Structure], progress: bool = False) -> list[tuple[int, bool]]:
        """For each crystal in order, the id of the entry it matches and False, or, matching none, its own new id and True."""
        placed = []
        for s in tqdm(structures, desc="uniqueness", disable=not progress):
            reduced, key = self._reduce(s)
            found = self._find(reduced, key)
            placed.append((found, False) if found is not None else (self._append(s, reduced, key), True))
        return placed


def unique_indices(structures: Sequence[Structure], progress: bool = False) -> list[int]:
    """One representative (the first) of each group of matching crystals (`SAME_STRUCTURE`)."""
    return [i for i, (_, new) in enumerate(MatchIndex().place(structures, progress)) if new]
