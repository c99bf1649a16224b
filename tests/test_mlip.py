"""Real CHGNet (weights from its wheel) behind the reward modules."""

import json

import numpy as np
import pytest
from helpers import perovskite, rocksalt
from latticegym.rewards.cache import Cached
from latticegym.rewards.composite import CompositeReward, Guards, Objective
from latticegym.rewards.filters import DiversityFilter
from latticegym.rewards.library import diamond
from latticegym.rewards.mlip import MLIP, MLIPError
from latticegym.rewards.properties import (
    BulkModulus,
    EnergyAboveReference,
    EnergyPerAtom,
    FormationEnergy,
    MagneticDensity,
)
from latticegym.rewards.references import elemental_references
from latticegym.rewards.stability import ConvexHull, EHull, SUNFilter
from pymatgen.core import Lattice, Structure

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def mlip():
    return MLIP()


def test_single_points_are_batched_and_physical(mlip):
    points = mlip.predict([perovskite(), diamond(), rocksalt()], task="efsm")
    assert len(points) == 3
    assert -10 < points[0].energy_per_atom < -5
    assert points[1].energy_per_atom == pytest.approx(-9.06, abs=0.05)
    assert points[0].forces.shape == (5, 3) and points[0].stress.shape == (3, 3) and points[0].magmoms.shape == (5,)


def test_formation_energy_uses_shipped_elemental_references(mlip):
    refs = elemental_references(["Sr", "Ti", "O"], mlip)
    assert set(refs) == {"Sr", "Ti", "O"}
    fe = FormationEnergy(mlip)([perovskite()])
    assert fe.values[0] < -2.5  # SrTiO3 is strongly bound (DFT: about -3.5 eV/atom)
    assert fe.reasons == [""]


def test_energy_above_diamond_and_magnetism(mlip):
    above = EnergyAboveReference(diamond(), mlip)([diamond()])
    assert abs(above.values[0]) < 0.01
    fe_bcc = Structure(Lattice.cubic(2.87), ["Fe", "Fe"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    mag = MagneticDensity(mlip)([fe_bcc, perovskite()]).values
    assert mag[0] > 0.1 and mag[1] < 0.02  # bcc iron is a magnet, SrTiO3 is not


def test_bulk_modulus_of_diamond_is_superhard(mlip):
    b = BulkModulus(mlip, relax=True)([diamond()])
    assert 350 < b.values[0] < 500, b  # experiment: 443 GPa


def test_relaxation_timeout_and_explosion_are_reported(mlip):
    with pytest.raises(MLIPError, match="timed out"):
        mlip.relax(perovskite(), timeout_s=0.0)
    squeezed = Structure(Lattice.cubic(3.0), ["Sr", "Ti", "O", "O", "O"], perovskite().frac_coords)
    crushed = Structure(Lattice.cubic(2.0), ["Sr", "Ti", "O", "O", "O"], perovskite().frac_coords)
    result = EnergyPerAtom(mlip, relax=True, timeout_s=0.0)([squeezed, crushed])
    assert not np.isfinite(result.values).any() and "timed out" in result.reasons[0]
    assert "crushed cell" in result.reasons[1]  # refused before the MLIP builds its neighbour graph, whoever built the reward


def test_cached_chgnet_reward_reuses_evaluations(mlip):
    source = EnergyPerAtom(mlip)
    reward = CompositeReward([Objective(Cached(source))], guards=Guards(min_elements=1), filters=[DiversityFilter()])
    first = reward([perovskite(), rocksalt()])
    second = reward([perovskite(), rocksalt(), diamond()])
    assert source.evaluations == 3
    np.testing.assert_allclose(second.properties["energy_per_atom"][:2], first.properties["energy_per_atom"])


def test_hull_and_sun_filter(mlip, tmp_path):
    srtio3 = perovskite()
    hull = ConvexHull([srtio3], mlip, cache_dir=tmp_path)
    assert hull.e_above_hull(srtio3.composition, mlip.predict([srtio3])[0].energy_per_atom) == pytest.approx(0.0, abs=1e-6)
    assert list(tmp_path.glob("*.json"))  # reference energies are cached on disk
    strained = perovskite()
    strained.scale_lattice(strained.volume * 1.3)
    baso3 = perovskite()
    baso3.replace_species({"Sr": "Ba"})
    sun = SUNFilter(EHull(hull), known=[srtio3], threshold=0.1)
    values, props, comps = sun([srtio3, strained, baso3, baso3], np.ones(4), np.ones(4, dtype=bool))
    assert comps["novel"].tolist() == [0, 0, 1, 1]  # StructureMatcher matches up to volume scaling
    assert comps["unique"].tolist() == [1, 0, 1, 0]
    assert props["e_hull"][1] > 0.1  # 30% strain is far above the hull
    assert values[0] == 0 and values[1] == 0 and values[3] == 0
    assert sun.hull_source.evaluations == 4


def test_any_matgl_potential_loads_from_a_local_path(tmp_path):
    from matgl.apps.pes import Potential
    from matgl.models import M3GNet

    torch.manual_seed(0)
    Potential(model=M3GNet(element_types=("Sr", "Ti", "O"), nblocks=1, units=16, is_intensive=False)).save(tmp_path / "pot")
    mlip = MLIP(str(tmp_path / "pot"))
    point = mlip.predict([perovskite()], task="efsm")[0]
    assert np.isfinite(point.energy_per_atom) and point.forces.shape == (5, 3) and point.magmoms is None
    relaxed = mlip.relax(perovskite(), steps=3)
    assert relaxed.steps >= 1 and np.isfinite(relaxed.energy_per_atom)
    with pytest.raises(ValueError, match="predicts no magnetic moments"):
        MagneticDensity(mlip).compute([perovskite()])


def test_mlip_works_inside_a_caller_no_grad_block(mlip):
    # Agents sample under torch.no_grad(); forces and stresses still need autograd.
    import torch

    with torch.no_grad():
        point = mlip.predict([perovskite()], task="efsm")[0]
        relaxed = mlip.relax(perovskite(), steps=3)
    assert np.isfinite(point.forces).all() and np.isfinite(relaxed.energy_per_atom)


def test_energy_only_skips_forces_and_autograd_and_matches_the_full_call(mlip):
    import torch

    structures = [perovskite(), diamond(), rocksalt()]
    full = mlip.predict(structures, task="efsm")
    small = MLIP(batch_size=2)  # chunked: two model calls
    energy = small.predict(structures)
    assert all(p.forces is None and p.stress is None and p.magmoms is None for p in energy)
    np.testing.assert_allclose([p.energy_per_atom for p in energy], [p.energy_per_atom for p in full], rtol=1e-5)
    with torch.no_grad():
        small.predict(structures, task="efsm")
        assert not torch.is_grad_enabled()  # the call restores the caller's grad mode
    with pytest.raises(ValueError, match="task must"):
        mlip.predict(structures, task="fs")


def test_elements_chgnet_does_not_cover_are_named(mlip):
    from pymatgen.core import Lattice, Structure

    oganesson = Structure(Lattice.cubic(4.0), ["Og", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    with pytest.raises(MLIPError, match="CHGNet does not cover Og"):
        mlip.predict([oganesson])
    result = FormationEnergy(mlip)([perovskite(), oganesson])
    assert result.reasons[0] == "" and "CHGNet does not cover Og" in result.reasons[1]


def test_a_formation_energy_call_on_256_real_perovskites_stays_under_3_gb(perov_path):
    from latticegym.benchmarks.measure.reward_cost import measure

    figures = measure("PerovskiteFormationEnergy", 256, str(perov_path.parent))
    assert figures.get("ok", 0) > 0.9, figures
    assert figures["peak_mb"] < 3000, figures


def test_guards_run_on_the_crystal_chgnet_relaxed(mlip):
    stretched = Structure(Lattice.cubic(4.3), ["Sr", "Ti", "O", "O", "O"], perovskite().frac_coords)  # 0.063 atoms/Å^3
    source = FormationEnergy(mlip, relax=True, steps=60, fmax=0.05)
    strict = CompositeReward([Objective(source)], guards=Guards(max_atoms_per_a3=0.07))([stretched])
    assert not strict.ok[0] and "the relaxed crystal fails a guard" in strict.reasons[0] and "crushed" in strict.reasons[0]
    default = CompositeReward([Objective(source)])([stretched])
    assert default.ok[0] and default.properties["formation_energy"][0] < -2.5


def test_a_matgl_directory_naming_another_class_is_refused_before_anything_runs(tmp_path):
    from latticegym.rewards.mlip import MLIP, MLIPError

    model = tmp_path / "model"
    model.mkdir()
    (model / "model.json").write_text(json.dumps({"@module": "matgl.apps.pes", "@class": "Potential", "@model_version": 1}))
    torch.save({"model": {"@module": "subprocess", "@class": "Popen", "init_args": {"args": ["touch", str(tmp_path / "marker")]}}}, model / "model.pt")
    torch.save({}, model / "state.pt")
    with pytest.raises(MLIPError, match=r"names classes outside matgl \(subprocess.Popen\)"):
        MLIP(model=str(model))
    assert not (tmp_path / "marker").exists()


def test_an_mlip_refuses_cells_that_would_exhaust_memory():
    from latticegym.rewards.properties import MagneticDensity

    crushed = Structure(Lattice.cubic(1.5), ["Fe", "Co", "O", "O", "O"], perovskite().frac_coords)
    big = perovskite().copy()
    big.make_supercell([5, 5, 5])  # 625 atoms
    result = MagneticDensity(max_pressure_gpa=None)([crushed, big])  # a source outside any guarded reward
    assert "crushed cell" in result.reasons[0] and "625 atoms" in result.reasons[1]
