"""No crystal a chemist would reject wins a task, and every guard is needed to keep it so."""

import pytest
from adversarial import catalogue, crushed, on_perovskite_sites

from latticegym.envs.tasks import TASKS, get_task
from latticegym.rewards.registry import make


@pytest.fixture(scope="module")
def crystals():
    return catalogue()


@pytest.mark.parametrize("task", list(TASKS))
def test_no_catalogue_crystal_succeeds(task, crystals):
    t = get_task(task)
    result = t.make_reward()(list(crystals.values()))
    winners = [name for i, name in enumerate(crystals) if t.is_success(result, i)]
    assert winners == [], f"{task} rewards {winners}"


# (task, the guard switched off, a catalogue crystal that then wins)
LOAD_BEARING = [
    ("PerovskiteLowHHI", {"guards": {"min_elements": 1}}, "O5 in a 4 Å cube"),
    ("PerovskiteLowHHI", {"guards": {"compositional_validity": False}}, "AlO4 (not charge balanced)"),
    ("PerovskiteFormationEnergy", {"guards": {"compositional_validity": False}}, "Li2F3 (not charge balanced)"),
    ("PerovskiteBandGap", {"guards": {"min_elements": 1}}, "a lone Sr in a 3 Å cube"),
    ("PerovskiteBandGap", {"guards": {"max_atoms_per_a3": None}}, "SrTiO3 at 0.17x volume"),
    ("PerovskiteMagnet", {"guards": {"min_elements": 1}}, "O5 in a 4 Å cube"),
    ("PerovskiteMagnet", {"max_pressure_gpa": None}, "ScCoO2F at 0.4x volume"),
    ("CarbonDensity", {"guards": {"min_elements": 1, "neighbour_range": None}}, "loose carbon at 3.6 g/cm^3"),
]


@pytest.mark.parametrize("task, off, winner", LOAD_BEARING)
def test_each_guard_is_load_bearing(task, off, winner, crystals):
    t = get_task(task)
    result = make(t.reward, **{**t.reward_kwargs, **off})([crystals[winner]])
    assert t.is_success(result, 0), f"without {off}, {winner} should win {task}: the guard would then be doing nothing"


def test_a_real_magnet_is_not_caught_by_the_pressure_guard():
    t = get_task("PerovskiteMagnet")
    honest = on_perovskite_sites(["Sc", "Co", "O", "O", "F"])
    result = t.make_reward()([honest, crushed(honest, 0.4)])
    assert result.ok.tolist() == [True, False] and "pressure" in result.reasons[1]
