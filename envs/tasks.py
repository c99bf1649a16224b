"""The registered tasks: which prior, which reward, what counts as success, and what a step costs."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..targets import BAND_GAP_WINDOW, LOW_HHI

COST_CHEAP, COST_SINGLE_POINT, COST_RELAXATION = "cheap", "MLIP single-point", "MLIP relaxation"
# Each family's chemistry, from the data its prior learned (`python -m latticegym.benchmarks.measure.guard_thresholds`):
# - perov_5 is ABX3 with X = N, O or F (the most electronegative element of all 3,787 crystals), at 60% of
#   the atoms (3,233 crystals) or 40% (554, a second anion such as S or Te); a perovskite task keeps
#   them at 40-60%, which also refuses all-metal alloys that SMACT's alloy rule passes; the densest
#   perov_5 crystal has 0.139 atoms/Å^3, so at most 0.18 (30% above, as the generic bounds sit beyond
#   the data) instead of the 0.25 that carbon at 10 GPa needs;
# - carbon is one-element by design. Every atom's nearest neighbour lies at a C-C bond length
#   (1.218-1.582 Å over all 2,032 carbon_24 crystals, so [1.15, 1.70] Å with a margin), and within 1.70 Å
#   each atom has 2 to 4 neighbours (2 for 15 of 18,686 atoms) with a crystal's mean at least 2.83, so
#   chains (a mean of 2) are refused at 2.75.
PEROVSKITE = {"guards": {"anions": (("N", "O", "F"), 0.4, 0.6), "max_atoms_per_a3": 0.18}}
ONE_ELEMENT = {"guards": {"min_elements": None, "neighbour_range": (1.15, 1.70), "coordination": (1.70, 2, 4, 2.75)}}
WEAK_CARBON_PRIOR = "the carbon_24 prior is far from real carbon (COV-P 4% against a 98.5% ceiling at 200 samples; README, Shipped priors)"
WEAK_GAP_PREDICTOR = "1 of the band-gap predictor's 19 in-window calls on our held-out perov_5 split is right (README, Band-gap predictor)"


@dataclass(frozen=True)
class Task:
    """A registered task.

    Attributes:
        name: the id's middle part (`LatticeGym/<name>-v0`).
        prior: the prior it fine-tunes: a shipped prior's name, a checkpoint or a run directory.
        reward: a registered reward name, "module:attr" naming a factory, a YAML/JSON reward config, or a factory.
        target: the goal, for humans.
        cost: what one evaluation costs ("cheap", "MLIP single-point", "MLIP relaxation").
        success: (property, "<=" | ">=" | "in", value) conditions that must all hold; "reward" names the reward itself.
        reward_kwargs: arguments of the reward factory.
        num_steps: default T.
        experimental: why the task is not yet a benchmark ("" when it is); such tasks stay out of the standard suite.
    """

    name: str
    prior: str
    reward: str | Callable  # anything `latticegym.rewards.registry.resolve` takes: a name, "module:attr", a YAML file, a factory
    target: str  # for humans
    cost: str
    success: tuple[tuple[str, str, Any], ...]  # (property or "reward", "<=" | ">=" | "in", value); all must hold
    reward_kwargs: dict = field(default_factory=dict)
    num_steps: int = 100
    experimental: str = ""  # why its successes are not yet evidence (shown by `latticegym envs`); "" for a benchmark task

    @property
    def env_id(self) -> str:
        return f"LatticeGym/{self.name}-v0"

    def make_reward(self):
        """A fresh instance of the task's reward."""
        from ..rewards.registry import resolve

        return resolve(self.reward, **self.reward_kwargs)

    def is_success(self, result, i: int) -> bool:
        """Whether crystal `i` of a RewardResult was scored and meets every success condition."""
        return meets(self.success, result, i)


# A task of your own without success conditions succeeds where its reward is at its maximum (rewards shaped to [0, 1]).
FULL_REWARD = (("reward", ">=", 1.0),)
OPERATORS = ("<=", ">=", "in")


def meets(success: tuple[tuple[str, str, Any], ...], result, i: int) -> bool:
    """Whether crystal `i` of a RewardResult was scored and meets every (property or "reward", op, value) condition."""
    if not result.ok[i]:
        return False
    for prop, op, value in success:
        x = float(result.values[i] if prop == "reward" else result.properties[prop][i])
        if not np.isfinite(x):
            return False
        if op == "<=" and not x <= value:
            return False
        if op == ">=" and not x >= value:
            return False
        if op == "in" and not value[0] <= x <= value[1]:
            return False
    return True


def check_success(success) -> tuple[tuple[str, str, Any], ...]:
    """`success` as a tuple of conditions, or a ValueError that says which one is malformed."""
    conditions = tuple(tuple(c) for c in success)
    for c in conditions:
        if len(c) != 3 or not isinstance(c[0], str) or c[1] not in OPERATORS:
            raise ValueError(f"a success condition is (property, one of {OPERATORS}, value), got {c!r}")
        if c[1] == "in" and (not isinstance(c[2], (tuple, list)) or len(c[2]) != 2):
            raise ValueError(f"success condition {c!r}: 'in' takes (low, high)")
    return conditions


TASKS = {
    t.name: t
    for t in [
        Task("PerovskiteLowHHI", "perov_5", "low_hhi", f"HHI (production) <= {LOW_HHI:g}", COST_CHEAP, (("hhi", "<=", LOW_HHI),), {**PEROVSKITE, "max_hhi": LOW_HHI}),
        Task(
            "PerovskiteFormationEnergy",
            "perov_5",
            "formation_energy",
            "CHGNet formation energy <= -1.5 eV/atom (lower is better)",
            COST_SINGLE_POINT,
            (("formation_energy", "<=", -1.5),),
            PEROVSKITE,
        ),
        Task(
            "PerovskiteBandGap",
            "perov_5",
            "band_gap_window",
            f"predicted band gap in [{BAND_GAP_WINDOW[0]}, {BAND_GAP_WINDOW[1]}] eV",
            COST_CHEAP,
            (("band_gap", "in", BAND_GAP_WINDOW),),
            {**PEROVSKITE, "lo": BAND_GAP_WINDOW[0], "hi": BAND_GAP_WINDOW[1]},
            experimental=WEAK_GAP_PREDICTOR,
        ),
        Task("PerovskiteMagnet", "perov_5", "magnetic_density", "CHGNet magnetic density >= 0.05 μB/Å^3", COST_SINGLE_POINT, (("magnetic_density", ">=", 0.05),), PEROVSKITE),
        Task(
            "PerovskiteMagnetLowHHI",
            "perov_5",
            "magnet_low_hhi",
            "min of the magnet and HHI rewards; success: both targets",
            COST_SINGLE_POINT,
            (("magnetic_density", ">=", 0.05), ("hhi", "<=", LOW_HHI)),
            {**PEROVSKITE, "max_hhi": LOW_HHI},
        ),
        Task("CarbonDensity", "carbon_24", "density_target", "density 3.6 ± 0.05 g/cm^3", COST_CHEAP, (("density", "in", (3.55, 3.65)),), ONE_ELEMENT, experimental=WEAK_CARBON_PRIOR),
        Task(
            "CarbonLowEnergy",
            "carbon_24",
            "carbon_low_energy",
            "CHGNet energy above diamond <= 0.05 eV/atom",
            COST_SINGLE_POINT,
            (("energy_above_reference", "<=", 0.05),),
            ONE_ELEMENT,
            experimental=WEAK_CARBON_PRIOR,
        ),
        Task("CarbonBulkModulus", "carbon_24", "bulk_modulus", "CHGNet bulk modulus >= 400 GPa (superhard)", COST_RELAXATION, (("bulk_modulus", ">=", 400.0),), ONE_ELEMENT, experimental=WEAK_CARBON_PRIOR),
    ]
}


def register_task(
    name: str,
    prior: str,
    reward: str | Callable,
    success: Sequence[tuple] = FULL_REWARD,
    target: str = "",
    reward_kwargs: dict | None = None,
    num_steps: int = 100,
    experimental: str = "",
    overwrite: bool = False,
) -> Task:
    """Register a task of your own as `LatticeGym/<name>-v0`, for `gymnasium.make`, `latticegym train` and `bench`.

    Args:
        name: the id's middle part; letters, digits and underscores.
        prior: the prior to fine-tune: a shipped prior's name, a checkpoint or a run directory.
        reward: a registered reward name, "module:attr" naming a factory, a YAML/JSON reward config,
            or a factory (called with `reward_kwargs` for each env and run, so state is never shared).
        success: (property or "reward", "<=" | ">=" | "in", value) conditions that must all hold
            (default: the reward at its maximum, 1).
        target: the goal in words, for `latticegym envs` and the bench table.
        reward_kwargs: the factory's keyword arguments.
        num_steps: default T.
        experimental: why its successes are not yet evidence ("" for none).
        overwrite: replace a task of the same name.
    """
    if not name.replace("_", "").isalnum():
        raise ValueError(f"a task name is letters, digits and underscores, got {name!r}")
    if name in TASKS and not overwrite:
        raise ValueError(f"a task named {name!r} is already registered; pass overwrite=True to replace it")
    conditions = check_success(success)
    task = Task(name, prior, reward, target or " and ".join(f"{p} {op} {v}" for p, op, v in conditions), "yours", conditions, reward_kwargs or {}, num_steps, experimental)
    TASKS[name] = task
    from .registration import register_envs

    register_envs(overwrite=task.env_id)
    return task


def get_task(name: str) -> Task:
    """A task by id ("LatticeGym/PerovskiteLowHHI-v0") or by name ("PerovskiteLowHHI"); a KeyError suggests the closest ids."""
    key = name.removeprefix("LatticeGym/").removesuffix("-v0")
    if key not in TASKS:
        close = difflib.get_close_matches(key, list(TASKS), n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(TASKS[c].env_id for c in close)}? " if close else ""
        raise KeyError(f"no task {name!r}; {hint}ids: {', '.join(t.env_id for t in TASKS.values())} (see `latticegym envs`)")
    return TASKS[key]
