import json

import numpy as np
import pytest
from helpers import diamond, perovskite, rocksalt
from latticegym.rewards import registry
from latticegym.rewards.base import PropertySource, Reward, RewardResult
from latticegym.rewards.cache import Cached
from latticegym.rewards.composite import CompositeReward, Guards, Objective
from latticegym.rewards.filters import DiversityFilter
from latticegym.rewards.properties import HHI, Density
from latticegym.rewards.shaping import (
    Ascending,
    Descending,
    Target,
    Threshold,
    Window,
    combine,
)
from pymatgen.analysis.hhi import HHIModel
from pymatgen.core import Lattice, Structure


def bad_crystals() -> dict[str, Structure]:
    overlapping = perovskite()
    overlapping.replace(1, "Ti", [0.01, 0.0, 0.0])
    return {
        "overlapping": overlapping,
        "nan": Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]]),
        "flat": Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-4]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]]),
        "empty": Structure(Lattice.cubic(4.0), [], []),
    }


def test_shapings():
    x = np.array([0.0, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(Ascending(1, 3)(x), [0, 0, 0.5, 1])
    np.testing.assert_allclose(Descending(1, 3)(x), [1, 1, 0.5, 0])
    np.testing.assert_allclose(Target(2, 1)(x), [0, 0, 1, 0])
    np.testing.assert_allclose(Threshold(2)(x), [0, 0, 1, 1])
    np.testing.assert_allclose(Threshold(2, above=False)(x), [1, 1, 1, 0])
    np.testing.assert_allclose(Window(1, 2, margin=0.5)(np.array([0.5, 0.75, 1.5, 2.25, 3.0])), [0, 0.5, 1, 0.5, 0])


def test_combinations():
    c = {"a": np.array([0.2, 1.0]), "b": np.array([0.6, 0.5])}
    np.testing.assert_allclose(combine(c, "mean"), [0.4, 0.75])
    np.testing.assert_allclose(combine(c, "min"), [0.2, 0.5])
    np.testing.assert_allclose(combine(c, "product"), [0.12, 0.5])
    np.testing.assert_allclose(combine(c, "weighted", {"a": 2.0, "b": -1.0}), [-0.2, 1.5])
    with pytest.raises(ValueError, match="one weight per component"):
        combine(c, "weighted", {"a": 1.0})
    with pytest.raises(ValueError, match="unknown combination"):
        combine(c, "max")


def test_hhi_reward_matches_pymatgen_and_bad_crystals_fail_with_reasons():
    reward = CompositeReward([Objective(HHI(), Descending(1250, 5000))], failure_value=-1.0)
    assert isinstance(reward, Reward)
    bad = bad_crystals()
    result = reward([perovskite(), *bad.values()])
    expected = HHIModel().get_hhi_production(perovskite().composition)
    assert result.properties["hhi"][0] == pytest.approx(expected)
    assert result.values[0] == pytest.approx(Descending(1250, 5000)(expected))
    assert result.ok.tolist() == [True, False, False, False, False]
    assert (result.values[1:] == -1.0).all()
    assert "Å apart" in result.reasons[1] and "NaN" in result.reasons[2] and "degenerate" in result.reasons[3] and "no atoms" in result.reasons[4]
    assert reward.evaluations == 1  # guards stop bad crystals before any evaluation
    info = result.info(0)
    assert info["properties"]["hhi"] == pytest.approx(expected) and info["ok"]


class Flaky(PropertySource):
    name = "flaky"

    def compute(self, structures):
        if any(s.composition.reduced_formula == "NaCl" for s in structures):
            raise RuntimeError("model crashed")
        return [float(len(s)) for s in structures]


def test_a_crashing_model_fails_only_its_crystal_and_counts_once():
    source = Flaky()
    result = CompositeReward([Objective(source)], guards=Guards(min_elements=1))([perovskite(), rocksalt(), diamond()])
    assert result.ok.tolist() == [True, False, True]
    assert result.properties["flaky"][0] == 5 and result.properties["flaky"][2] == 2
    assert "model crashed" in result.reasons[1]
    assert source.evaluations == 3


def test_guards_are_on_by_default():
    result = CompositeReward([Objective(Density())])([diamond(), perovskite(), Structure(Lattice.cubic(4.0), ["Li", "Li", "F", "F", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]])])
    assert result.ok.tolist() == [False, True, False]
    assert "fewer than 2 elements" in result.reasons[0] and "invalid composition" in result.reasons[2]  # Li2F3 is not charge balanced
    assert CompositeReward([Objective(Density())], guards=Guards(min_elements=1))([diamond()]).ok[0]


def test_cache_never_evaluates_the_same_crystal_twice():
    source = Density()
    cached = Cached(source)
    rotated = perovskite()
    rotated.apply_operation(__import__("pymatgen.core.operations", fromlist=["SymmOp"]).SymmOp.from_axis_angle_and_translation([0, 0, 1], 90))
    shifted = perovskite()
    shifted.translate_sites(list(range(5)), [0.1, 0.2, 0.3])
    first = cached([perovskite(), rocksalt(), perovskite()])
    assert source.evaluations == 2 and cached.hits == 1  # duplicate inside one batch
    second = cached([rotated, shifted, diamond()])
    assert source.evaluations == 3 and cached.hits == 3
    np.testing.assert_allclose(second.values[:2], first.values[0])
    assert cached.evaluations == source.evaluations


def test_diversity_filter_follows_matinvent_rule():
    # MatInvent: the whole batch enters the memory, then each crystal's occurrence count includes its batch-mates.
    f = DiversityFilter(tol=3, buffer=6)
    ok = np.ones(2, dtype=bool)
    factors = [f([perovskite(), perovskite()], np.ones(2), ok)[2]["diversity"].tolist() for _ in range(4)]
    np.testing.assert_allclose(factors, [[1, 1], [2 / 3, 2 / 3], [0, 0], [0, 0]])  # occ = 2, 4, 6, 8 after each batch
    values, _, comps = DiversityFilter(tol=3, buffer=6)([perovskite()] * 5 + [rocksalt()], np.full(6, 0.5), np.ones(6, dtype=bool))
    np.testing.assert_allclose(comps["diversity"], [1 / 3] * 5 + [1])  # occ 5: (6 - 5) / (6 - 3)
    np.testing.assert_allclose(values, 0.5 * comps["diversity"])


def test_diversity_structure_mode_does_not_count_polymorphs():
    layered = [[0, 0, 0], [0, 0, 0.5], [0.5, 0.5, 0], [0.5, 0.5, 0.5], [0.5, 0, 0.25]]
    polymorph = Structure(Lattice.tetragonal(4.0, 8.0), ["Sr", "Ti", "O", "O", "O"], layered)
    by_comp = DiversityFilter(mode="composition", tol=1, buffer=3)
    by_struct = DiversityFilter(mode="structure", tol=1, buffer=3)
    batch = [perovskite(), polymorph]
    ok = np.ones(2, dtype=bool)
    assert by_comp(batch, np.ones(2), ok)[2]["diversity"].tolist() == [0.5, 0.5]  # one formula, seen twice
    assert by_struct(batch, np.ones(2), ok)[2]["diversity"].tolist() == [1.0, 1.0]  # two polymorphs, once each


def test_registry_and_configs(tmp_path):
    class Constant:
        def __call__(self, structures):
            return RewardResult(np.full(len(structures), 0.5))

    registry.register("test_constant", lambda: Constant(), overwrite=True)
    assert "test_constant" in registry.available() and "low_hhi" in registry.available()
    assert registry.make("test_constant")([perovskite()]).values.tolist() == [0.5]
    with pytest.raises(ValueError, match="already registered"):
        registry.register("test_constant", lambda: Constant())
    with pytest.raises(KeyError, match="no reward named 'nope'"):
        registry.make("nope")
    by_name = registry.from_config({"name": "low_hhi", "kwargs": {"max_hhi": 1000}})
    assert by_name([perovskite()]).properties["hhi"][0] > 0
    yaml_file = tmp_path / "reward.yaml"
    yaml_file.write_text(
        "objectives:\n"
        "  - source: density\n    shaping: {kind: target, target: 5.0, width: 2.0}\n"
        "  - source: hhi\n    shaping: {kind: descending, lo: 1250, hi: 5000}\n"
        "combine: min\nguards: {min_elements: 2}\ndiversity: {mode: structure}\n"
    )
    reward = registry.from_config(yaml_file)
    result = reward([perovskite(), diamond()])
    assert set(result.components) == {"density", "hhi", "diversity"}
    assert result.ok.tolist() == [True, False]
    assert result.values[0] == pytest.approx(min(result.components["density"][0], result.components["hhi"][0]))
    with pytest.raises(ValueError, match="unknown shaping"):
        registry.from_config({"objectives": [{"source": "density", "shaping": {"kind": "sigmoid"}}]})


def test_crushed_cells_are_refused_before_any_property_is_computed():
    crushed = perovskite()
    crushed.scale_lattice(len(crushed) / 0.86)  # 0.86 atoms/Å^3, yet every distance is above 0.5 Å
    assert min(crushed.distance_matrix[np.triu_indices(5, 1)]) > 0.5
    source = Density()
    result = CompositeReward([Objective(source)])([crushed, perovskite()])
    assert not result.ok[0] and "crushed" in result.reasons[0] and result.ok[1]
    assert source.evaluations == 1  # only the real perovskite reached the source
    contacts_only = CompositeReward([Objective(Density())], guards=Guards(max_atoms_per_a3=None))([crushed])
    assert not contacts_only.ok[0] and "fused" in contacts_only.reasons[0]  # 0.86 atoms/Å^3 squeezes every contact too
    off = Guards(max_atoms_per_a3=None, min_contact_ratio=None, mean_contact_range=None)
    assert CompositeReward([Objective(Density())], guards=off)([crushed]).ok[0]


def test_cache_gives_strained_and_displaced_copies_their_own_value():
    from pymatgen.core.operations import SymmOp

    source = Density()
    cached = Cached(source)
    original = perovskite()
    cached([original])
    strained = [original.copy() for _ in range(4)]
    strained[0].scale_lattice(original.volume * 0.8)
    strained[1].scale_lattice(original.volume * 1.25)
    strained[2].apply_strain([0.01, 0.0, 0.0])  # 1% along a
    strained[3].translate_sites([1], [0.05 / original.lattice.a, 0, 0])  # Ti moved 0.05 Å
    same = original.copy()
    same.apply_operation(SymmOp.from_axis_angle_and_translation([0, 0, 1], 90))
    same.translate_sites(list(range(5)), [0.25, 0.5, 0.125])
    result = cached(strained + [same])
    assert source.evaluations == 1 + 4 and cached.hits == 1  # four new crystals, one true repeat
    np.testing.assert_allclose(result.values[:4], [s.density for s in strained])
    assert result.values[0] != result.values[1] != result.values[4]


class ExpandingMLIP:
    """Relaxes every crystal into a 3x larger cell: what a relaxation gone wrong hands the property."""

    model_name = "expanding"

    def check_elements(self, structure):
        pass

    def relax(self, structure, **_):
        from latticegym.rewards.mlip import Relaxed

        out = structure.copy()
        out.scale_lattice(structure.volume * 3.0)
        return Relaxed(out, -1.0, 1, True)


def test_a_relaxed_crystal_must_pass_the_guards_too():
    from latticegym.rewards.properties import EnergyPerAtom

    relaxing = Cached(EnergyPerAtom(ExpandingMLIP(), relax=True))
    result = CompositeReward([Objective(relaxing)])([perovskite()])
    assert not result.ok[0] and "relaxed crystal fails a guard" in result.reasons[0] and "expanded" in result.reasons[0]
    assert relaxing.evaluations == 1  # the relaxation was spent, and counted
    unguarded = EnergyPerAtom(ExpandingMLIP(), relax=True)([perovskite()])  # a bare source reads what it relaxed
    assert unguarded.values[0] == -1.0


def test_the_reference_cache_never_overrides_shipped_energies(tmp_path, monkeypatch):
    from latticegym.rewards.properties import FormationEnergy

    monkeypatch.setenv("LATTICEGYM_CACHE", str(tmp_path))
    (tmp_path / "references").mkdir()
    honest = FormationEnergy()([perovskite()]).values[0]
    (tmp_path / "references" / "chgnet.json").write_text(json.dumps({"O": 5.0, "Sr": 0.0}))
    assert FormationEnergy()([perovskite()]).values[0] == pytest.approx(honest)
    (tmp_path / "references" / "chgnet.json").write_text('{"O": 5.')  # truncated
    assert FormationEnergy()([perovskite()]).values[0] == pytest.approx(honest)
    assert FormationEnergy(references={"Sr": 0.0, "Ti": 0.0, "O": 0.0})([perovskite()]).values[0] != pytest.approx(honest)  # explicit overrides work
