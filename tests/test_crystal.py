import numpy as np
import pytest
from helpers import diamond, perovskite, rocksalt, triclinic
from latticegym.crystal import (
    CrystalBatch,
    MatchIndex,
    canonical,
    compositional_validity,
    lattice_validity,
    structural_validity,
    unique_indices,
    validity,
)
from pymatgen.core import Composition, Lattice, Structure


def test_round_trip_is_exact():
    structures = [perovskite(), rocksalt(), diamond(), triclinic(1)]
    batch = CrystalBatch.from_structures(structures, n_max=12)
    assert batch.atom_types.shape == (4, 12)
    assert list(batch.num_atoms) == [len(s) for s in structures]
    assert not batch.mask[0, 5:].any() and (batch.atom_types[0, 5:] == 0).all()
    for original, back in zip(structures, batch.to_structures()):
        assert [s.specie for s in original] == [s.specie for s in back]
        np.testing.assert_array_equal(original.frac_coords, back.frac_coords)
        np.testing.assert_array_equal(original.lattice.matrix, back.lattice.matrix)
    again = CrystalBatch.from_structures(batch.to_structures(), n_max=12)
    for name in ("atom_types", "frac_coords", "lattice", "mask"):
        np.testing.assert_array_equal(getattr(batch, name), getattr(again, name))


def test_from_structures_rejects_too_many_atoms():
    with pytest.raises(ValueError, match="structure 0 has 5 atoms, more than n_max=3"):
        CrystalBatch.from_structures([perovskite()], n_max=3)


def test_batch_checks_shapes():
    with pytest.raises(ValueError, match="lattice has shape"):
        CrystalBatch(np.zeros((2, 3), int), np.zeros((2, 3, 3)), np.zeros((3, 3, 3)), np.ones((2, 3), bool))


def test_canonical_keeps_the_crystal():
    s = triclinic(2)
    c = canonical(s)
    assert c.lattice.volume == pytest.approx(s.lattice.volume)
    assert c.matches(s)


def test_real_crystals_are_valid():
    for s in (perovskite(), rocksalt(), diamond()):
        assert validity(s), validity(s).reason


def test_overlapping_atoms_are_invalid_with_reason():
    s = perovskite()
    s.append("O", [0.51, 0.5, 0.0])
    v = structural_validity(s)
    assert not v and "Å apart" in v.reason and "O" in v.reason


def test_periodic_image_distance_counts():
    # Atoms at 0.02 and 0.98 are 0.04 * 10 Å = 0.4 Å apart only through the boundary.
    s = Structure(Lattice.cubic(10.0), ["C", "C"], [[0.02, 0.5, 0.5], [0.98, 0.5, 0.5]])
    assert not structural_validity(s)
    s = Structure(Lattice.tetragonal(0.3, 5.0), ["C"], [[0, 0, 0]])
    v = structural_validity(s)
    assert not v and "own periodic image" in v.reason


@pytest.mark.parametrize(
    "matrix, reason",
    [
        (np.full((3, 3), np.nan), "NaN"),
        (np.diag([4.0, 4.0, np.inf]), "NaN or inf"),
        (np.array([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 0]]), "degenerate"),
        (np.array([[4.0, 0, 0], [0, 4.0, 0], [4.0, 4.0, 0.01]]), "nearly flat"),
        (np.diag([4.0, 4.0, 1e5]), "longer than"),
    ],
)
def test_bad_lattices_have_reasons(matrix, reason):
    v = lattice_validity(matrix)
    assert not v and reason in v.reason


def test_zero_atoms_is_invalid():
    s = Structure(Lattice.cubic(4.0), [], [])
    v = structural_validity(s)
    assert not v and "no atoms" in v.reason


def test_compositional_validity_follows_smact():
    assert compositional_validity(Composition("NaCl"))
    assert compositional_validity(Composition("SrTiO3"))
    assert compositional_validity(Composition("C8"))  # one element
    assert compositional_validity(Composition("Fe3Al"))  # all-metal alloys pass
    v = compositional_validity(Composition("NaCl3"))
    assert not v and "NaCl3" in v.reason
    v = compositional_validity(Composition("NaF2"))
    assert not v and "no charge-neutral" in v.reason
    assert not compositional_validity(Composition())


def test_uniqueness_and_novelty_use_structure_matching():
    a = perovskite()
    b = perovskite()
    b.perturb(0.01, 0.0)
    scaled = perovskite()
    scaled.scale_lattice(scaled.volume * 1.05)
    other = rocksalt()
    assert unique_indices([a, b, scaled, other]) == [0, 3]
    assert list(MatchIndex([b]).contains([a, other, diamond()])) == [True, False, False]


def test_a_flat_cell_is_never_niggli_reduced_and_matches_only_its_exact_copy(monkeypatch):
    from pymatgen.analysis.structure_matcher import StructureMatcher

    # From a 3-step denoising run: a + c is 0.3 Å long; pymatgen took 30 to 50 s to Niggli-reduce it, and minutes to fit two.
    flat_lattice = [[-20.17, -20.22, 20.09], [-18.78, -20.31, -7.11], [20.25, 20.29, -20.39]]
    flat = Structure(flat_lattice, ["Hf", "Hf", "Ag", "S", "Hf"], [[0.52, 0.47, 0.72], [0.64, 0.54, 0.73], [0.29, 0.51, 0.18], [0.85, 0.98, 0.28], [0.27, 0.57, 0.67]])
    reduce, fit = StructureMatcher._get_reduced_structure, StructureMatcher.fit

    def refuse_flat(*structures):  # pytest.fail, not an Exception, so that no caller can swallow it
        if any(s.composition == flat.composition for s in structures):
            pytest.fail("pymatgen was handed the flat cell")

    def reduce_unless_flat(structure, *args, **kwargs):
        refuse_flat(structure)
        return reduce(structure, *args, **kwargs)

    def fit_unless_flat(self, a, b, *args, **kwargs):
        refuse_flat(a, b)
        return fit(self, a, b, *args, **kwargs)

    monkeypatch.setattr(StructureMatcher, "_get_reduced_structure", staticmethod(reduce_unless_flat))
    monkeypatch.setattr(StructureMatcher, "fit", fit_unless_flat)
    nudged = flat.copy()
    nudged.translate_sites([0], [0.01, 0, 0])
    placed = MatchIndex().place([flat, flat.copy(), perovskite(), perovskite(), nudged])
    assert placed == [(0, True), (0, False), (1, True), (1, False), (2, True)]  # only an exact copy matches


def test_one_match_index_places_crystals_incrementally_with_a_named_tolerance():
    from latticegym.crystal import SAME_VALUE

    a, scaled, other = perovskite(), perovskite(), rocksalt()
    scaled.scale_lattice(scaled.volume * 1.05)
    supercell = perovskite() * (2, 1, 1)
    index = MatchIndex()
    assert index.place([a, scaled, other, supercell]) == [(0, True), (0, False), (1, True), (0, False)]
    assert index.find([rocksalt(), diamond()]) == [1, None] and len(index) == 2
    assert index.add([diamond()]) == [2] and index.structures[2].composition.reduced_formula == "C"
    strict = MatchIndex([a], SAME_VALUE)  # the cache's "same value": a 5% volume change is another crystal
    assert list(strict.contains([perovskite(), scaled, supercell])) == [True, False, False]
