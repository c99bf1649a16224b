"""No crystal a chemist would reject wins a task, and every guard is needed to keep it so."""

import pytest

from conftest import shared_file

from latticegym.benchmarks.measure import adversarial, guard_thresholds
from latticegym.benchmarks.measure.adversarial import catalogue, crushed, on_perovskite_sites
from latticegym.datasets import read_csv
from latticegym.envs.tasks import TASKS, get_task
from latticegym.rewards.composite import Guards
from latticegym.rewards.registry import make

FAMILY_TASK = guard_thresholds.FAMILY_TASK


@pytest.fixture(scope="module")
def crystals():
    return catalogue()


@pytest.mark.parametrize("task", list(TASKS))
def test_no_catalogue_crystal_succeeds(task, crystals):
    t = get_task(task)
    result = t.make_reward()(list(crystals.values()))
    winners = [name for i, name in enumerate(crystals) if t.is_success(result, i)]
    assert winners == [], f"{task} rewards {winners}"


def guards_of(family_name: str, **off) -> Guards:
    """The guards of a task family ("generic": a custom task's defaults), with some switched off."""
    if family_name == "generic":
        return Guards(**off)
    t = get_task(FAMILY_TASK[family_name])
    return make(t.reward, **{**t.reward_kwargs, "guards": {**t.reward_kwargs.get("guards", {}), **off}}).guards


# Every guard, and a catalogue crystal that it alone refuses: switched off, the guard lets it through.
WITNESSES = [
    ("generic", "structural_validity", "NiTiO3 in a nearly flat cell"),
    ("generic", "max_cell_edge", "NiTiO3 in a cell with a 27.6 Å edge"),
    ("generic", "max_atoms_per_a3", "LiBeF3 at 0.3x volume"),
    ("generic", "min_atoms_per_a3", "NiTiO3 spread thin through a 297 Å^3 box"),
    ("generic", "min_contact_ratio", "NiTiO3 with a 1.2 Å Ti-O contact"),
    ("generic", "max_neighbour_ratio", "NiTiO3 with an O adrift"),
    ("generic", "mean_contact_range", "NiTiO3 expanded to a 5.4 Å cube"),
    ("generic", "max_vacuum_gap", "NiTiO3 slab with 10 Å of vacuum"),
    ("generic", "min_elements", "O5 in a 3.03 Å cube"),
    ("generic", "compositional_validity", "Li2F3 (not charge balanced)"),
    ("perov_5", "anions", "Fe4Co alloy, 2.0 Å contacts"),
    ("perov_5", "max_atoms_per_a3", "ScAlO2F at 0.4x volume"),
    ("carbon_24", "neighbour_range", "carbon with a 1.05 Å C-C contact at 3.6 g/cm^3"),
    ("carbon_24", "coordination", "carbon chains 2.06 Å apart at 3.6 g/cm^3"),
]


@pytest.mark.parametrize("family_name", ["generic", *FAMILY_TASK])
def test_every_guard_has_a_witness(family_name):
    witnessed = {g for f, g, _ in WITNESSES if f in ("generic", family_name)}
    on = set(guards_of(family_name).checks())
    if family_name == "carbon_24":
        on.discard("compositional_validity")  # one element is always charge-neutral by SMACT's rule
    assert on <= witnessed, f"{family_name} guards without a witness: {on - witnessed}"


@pytest.mark.parametrize("family_name, guard, name", WITNESSES)
def test_each_guard_alone_refuses_its_witness(family_name, guard, name, crystals):
    checks = guards_of(family_name).checks()
    refusing = [g for g, check in checks.items() if check(crystals[name])]
    assert refusing == [guard], f"{name}: refused by {refusing}"
    assert guards_of(family_name, **{guard: None}).check(crystals[name]) == ""


# (task, the guard switched off, a catalogue crystal that then wins the task)
LOAD_BEARING = [
    ("PerovskiteLowHHI", {"min_elements": None, "anions": None}, "O5 in a 3.03 Å cube"),
    ("PerovskiteFormationEnergy", {"compositional_validity": False}, "Li2F3 (not charge balanced)"),
    ("PerovskiteLowHHI", {"min_atoms_per_a3": None}, "NiTiO3 spread thin through a 297 Å^3 box"),
    ("PerovskiteLowHHI", {"mean_contact_range": None}, "NiTiO3 expanded to a 5.4 Å cube"),
    ("PerovskiteLowHHI", {"min_contact_ratio": None}, "NiTiO3 with a 1.2 Å Ti-O contact"),
    ("PerovskiteLowHHI", {"max_neighbour_ratio": None}, "NiTiO3 with an O adrift"),
    ("PerovskiteLowHHI", {"max_vacuum_gap": None}, "NiTiO3 slab with 10 Å of vacuum"),
    ("PerovskiteLowHHI", {"max_cell_edge": None}, "NiTiO3 in a cell with a 27.6 Å edge"),
    ("PerovskiteLowHHI", {"structural_validity": False}, "NiTiO3 in a nearly flat cell"),
    ("PerovskiteBandGap", {"max_atoms_per_a3": 0.25}, "ScAlO2F at 0.4x volume"),  # the perovskite family's 0.18 relaxed to the generic bound
    ("PerovskiteMagnet", {"anions": None}, "Fe4Co alloy, 2.0 Å contacts"),
    ("PerovskiteMagnet", {"anions": None}, "AlFe4 alloy, 2.0 Å contacts"),
    ("CarbonDensity", {"neighbour_range": None}, "carbon with a 1.05 Å C-C contact at 3.6 g/cm^3"),
    ("CarbonDensity", {"coordination": None}, "carbon chains 2.06 Å apart at 3.6 g/cm^3"),
]


@pytest.mark.parametrize("task, off, winner", LOAD_BEARING)
def test_each_guard_is_load_bearing(task, off, winner, crystals):
    t = get_task(task)
    kwargs = {**t.reward_kwargs, "guards": {**t.reward_kwargs.get("guards", {}), **off}}
    result = make(t.reward, **kwargs)([crystals[winner]])
    assert t.is_success(result, 0), f"without {off}, {winner} should win {task}: the guard would then be doing nothing ({result.reasons[0]})"


def test_the_pressure_guard_is_load_bearing(crystals):
    t = get_task("PerovskiteMagnet")
    result = make(t.reward, **{**t.reward_kwargs, "max_pressure_gpa": None})([crystals["MnFeO3 at 0.6x volume"]])
    assert t.is_success(result, 0)


def test_a_real_magnet_is_not_caught_by_the_pressure_guard():
    t = get_task("PerovskiteMagnet")
    honest = on_perovskite_sites(["Mn", "Fe", "O", "O", "O"])
    result = t.make_reward()([honest, crushed(honest, 0.6)])
    assert result.ok.tolist() == [True, False] and "pressure" in result.reasons[1]


def test_the_recorded_shares_describe_the_guards_in_force():
    recorded = guard_thresholds.shares()
    for family_name in FAMILY_TASK:
        assert recorded[family_name]["guards"] == guards_of(family_name).describe(), "rerun python -m latticegym.benchmarks.measure.guard_thresholds --write"


@pytest.mark.parametrize("family_name", list(FAMILY_TASK))
def test_real_crystals_keep_their_pass_rate(family_name):
    structures = read_csv(shared_file(f"{family_name}_val.csv.gz"), skip_bad=True, limit=400).structures
    measured = guard_thresholds.summary(guard_thresholds.refusals(guards_of(family_name), structures))
    assert measured["pass_rate"] >= 0.97 * measured["pass_rate_earlier_guards"], measured
    new = set(measured["refused"]) - set(guard_thresholds.EARLIER_GUARDS) - {"compositional_validity"}
    assert all(measured["refused"][g] == 0.0 for g in new), measured["refused"]  # every bound sits beyond the data


def test_perturbing_the_carbon_catalogue_wins_nothing(capsys):
    adversarial.main(["--tasks", "CarbonDensity"])
    assert "0 perturbed catalogue crystals win a task (CarbonDensity)" in capsys.readouterr().out
