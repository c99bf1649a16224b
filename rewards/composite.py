"""The standard reward: guards, then property sources shaped into components, combined, then filters."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable, Protocol, Sequence

import numpy as np
from pymatgen.core import Structure

from ..crystal import (
    MAX_ATOMS_PER_A3,
    MAX_CELL_EDGE,
    MAX_NEIGHBOUR_RATIO,
    MAX_VACUUM_GAP,
    MEAN_CONTACT_RANGE,
    MIN_ATOMS_PER_A3,
    MIN_CONTACT_RATIO,
    compositional_validity,
    contact_ratios,
    coordination_numbers,
    nearest_neighbour_distances,
    structural_validity,
    vacuum_gap,
)
from .base import PropertySource, RewardResult
from .shaping import Identity, combine


@dataclass
class Objective:
    """One shaped property: `shaping(source(structure))` becomes the component `name`."""

    source: PropertySource
    shaping: Callable[[np.ndarray], np.ndarray] = Identity()
    name: str = ""

    def __post_init__(self) -> None:
        self.name = self.name or self.source.name


@dataclass
class Guards:
    """Checks before any property is computed; a crystal that fails one is a failure with a reason.

    Every geometry guard is on by default, its threshold set from the shared data (see the constants in
    `crystal` and `python -m latticegym.benchmarks.measure.guard_thresholds`):
    - `structural_validity`: CDVAE's check (atoms >= 0.5 Å apart, a sound cell);
    - `max_cell_edge`: MatInvent's bound on the cell as given;
    - `max_atoms_per_a3` / `min_atoms_per_a3`: neither crushed nor expanded;
    - `min_contact_ratio`: no two atoms closer than this fraction of their covalent radii's sum;
    - `max_neighbour_ratio`: every atom has a neighbour within this multiple of that sum (no gas);
    - `mean_contact_range`: the mean over atoms of that nearest-neighbour ratio (neither crushed nor expanded);
    - `max_vacuum_gap`: no empty slab wider than this (no slab);
    - `compositional_validity`: SMACT charge neutrality with the Pauling test (CDVAE's rule);
    - `min_elements`: against the single-element winners reward hacking produces (None for carbon).
    Task families add their chemistry:
    - `anions`: (elements, lowest, highest share of the atoms): perov_5 is ABX3 with X in N, O, F
      at 40-60% of the atoms, which refuses all-metal alloys whatever SMACT's alloy rule says;
    - `neighbour_range`: every atom's nearest neighbour lies in [lo, hi] Å (carbon's bond lengths);
    - `coordination`: (cutoff Å, fewest, most, least mean): neighbours within cutoff per atom, and their mean.
    """

    structural_validity: bool = True
    max_cell_edge: float | None = MAX_CELL_EDGE
    max_atoms_per_a3: float | None = MAX_ATOMS_PER_A3
    min_atoms_per_a3: float | None = MIN_ATOMS_PER_A3
    min_contact_ratio: float | None = MIN_CONTACT_RATIO
    max_neighbour_ratio: float | None = MAX_NEIGHBOUR_RATIO
    mean_contact_range: tuple[float, float] | None = MEAN_CONTACT_RANGE
    max_vacuum_gap: float | None = MAX_VACUUM_GAP
    neighbour_range: tuple[float, float] | None = None
    coordination: tuple[float, int, int, float] | None = None
    min_elements: int | None = 2
    anions: tuple[tuple[str, ...], float, float] | None = None
    compositional_validity: bool = True

    def checks(self) -> dict[str, Callable[[Structure], str]]:
        """The guards that are on, by field name, in the order they run: each says why it refuses a crystal, or ""."""
        on = {name: getattr(self, name) for name in GUARD_CHECKS}
        return {name: functools.partial(GUARD_CHECKS[name], value) for name, value in on.items() if value not in (None, False)}

    def check(self, structure: Structure) -> str:
        """Why `structure` must not be scored ("" when it passes every guard)."""
        for check in self.checks().values():
            reason = check(structure)
            if reason:
                return reason
        return ""

    def describe(self) -> dict[str, str]:
        """Each guard that is on, with its threshold, for humans."""
        return {name: GUARD_TEXT[name].format(value=getattr(self, name)) for name in self.checks()}


def _structural(_: bool, s: Structure) -> str:
    v = structural_validity(s)
    return "" if v else f"invalid structure: {v.reason}"


def _cell_edge(bound: float, s: Structure) -> str:
    edge = max(s.lattice.abc)
    return f"a cell edge of {edge:.1f} Å is at least {bound:g} Å (MatInvent's bound)" if edge >= bound else ""


def _crushed(bound: float, s: Structure) -> str:
    density = len(s) / s.volume
    return f"{s.composition.reduced_formula} is crushed: {density:.3f} atoms/Å^3 > {bound}" if density > bound else ""


def _expanded(bound: float, s: Structure) -> str:
    density = len(s) / s.volume
    return f"{s.composition.reduced_formula} is expanded: {density:.4f} atoms/Å^3 < {bound}" if density < bound else ""


def _fused(floor: float, s: Structure) -> str:
    ratio = contact_ratios(s)
    i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
    if ratio[i, j] >= floor:
        return ""
    return f"atoms {i} ({s[i].specie}) and {j} ({s[j].specie}) are fused: {ratio[i, j]:.2f} of their covalent radii's sum < {floor}"


def _gas(bound: float, s: Structure) -> str:
    nearest = contact_ratios(s).min(axis=1)
    i = int(np.argmax(nearest))
    if nearest[i] <= bound:
        return ""
    return f"atom {i} ({s[i].specie}) is isolated: its nearest neighbour is {nearest[i]:.2f} times their covalent radii's sum away (> {bound}), a gas"


def _strained(window: tuple[float, float], s: Structure) -> str:
    lo, hi = window
    mean = float(contact_ratios(s).min(axis=1).mean())
    if mean < lo:
        return f"{s.composition.reduced_formula} is crushed: its atoms' nearest neighbours average {mean:.2f} of their covalent radii's sum (< {lo})"
    if mean > hi:
        return f"{s.composition.reduced_formula} is expanded: its atoms' nearest neighbours average {mean:.2f} times their covalent radii's sum (> {hi})"
    return ""


def _slab(bound: float, s: Structure) -> str:
    gap = vacuum_gap(s)
    return f"{gap:.1f} Å of vacuum along a lattice plane (> {bound} Å): a slab or a cluster, not a bulk crystal" if gap > bound else ""


def _neighbours(bounds: tuple[float, float], s: Structure) -> str:
    lo, hi = bounds
    nearest = nearest_neighbour_distances(s)
    i = int(np.argmax((nearest < lo) | (nearest > hi)))
    return "" if lo <= nearest[i] <= hi else f"atom {i}'s nearest neighbour is {nearest[i]:.2f} Å away, outside [{lo}, {hi}] Å"


def _coordination(window: tuple[float, int, int, float], s: Structure) -> str:
    cutoff, fewest, most, least_mean = window
    cn = coordination_numbers(s, cutoff)
    i = int(np.argmax((cn < fewest) | (cn > most)))
    if not fewest <= cn[i] <= most:
        return f"atom {i} has {cn[i]} neighbours within {cutoff} Å, outside [{fewest}, {most}]"
    if cn.mean() < least_mean:
        return f"mean coordination {cn.mean():.2f} within {cutoff} Å is below {least_mean} (chains or molecules, not a framework)"
    return ""


def _elements(fewest: int, s: Structure) -> str:
    return f"{s.composition.reduced_formula} has fewer than {fewest} elements" if len(s.composition.elements) < fewest else ""


def _anions(anions: tuple[tuple[str, ...], float, float], s: Structure) -> str:
    elements, lo, hi = anions
    share = sum(s.composition[el] for el in s.composition.elements if el.symbol in elements) / s.composition.num_atoms
    if lo <= share <= hi:
        return ""
    return f"{s.composition.reduced_formula}: anions ({', '.join(elements)}) make up {share:.0%} of the atoms, outside this task's {lo:.0%}-{hi:.0%}"


def _charge(_: bool, s: Structure) -> str:
    v = compositional_validity(s.composition)
    return "" if v else f"invalid composition: {v.reason}"


GUARD_CHECKS: dict[str, Callable[[Any, Structure], str]] = {
    "structural_validity": _structural,
    "max_cell_edge": _cell_edge,
    "max_atoms_per_a3": _crushed,
    "min_atoms_per_a3": _expanded,
    "min_contact_ratio": _fused,
    "max_neighbour_ratio": _gas,
    "mean_contact_range": _strained,
    "max_vacuum_gap": _slab,
    "neighbour_range": _neighbours,
    "coordination": _coordination,
    "min_elements": _elements,
    "anions": _anions,
    "compositional_validity": _charge,
}
GUARD_TEXT = {
    "structural_validity": "atoms >= 0.5 Å apart and a sound cell (CDVAE)",
    "max_cell_edge": "cell edges < {value:g} Å (MatInvent)",
    "max_atoms_per_a3": "<= {value} atoms/Å^3 (not crushed)",
    "min_atoms_per_a3": ">= {value} atoms/Å^3 (not expanded)",
    "min_contact_ratio": "closest contact >= {value} x covalent radii's sum (no fused atoms)",
    "max_neighbour_ratio": "every atom's nearest neighbour <= {value} x covalent radii's sum (no gas)",
    "mean_contact_range": "mean nearest neighbour in {value} x covalent radii's sum",
    "max_vacuum_gap": "no empty slab wider than {value} Å (no slab)",
    "neighbour_range": "every nearest neighbour in {value} Å",
    "coordination": "(cutoff Å, fewest, most, least mean) neighbours: {value}",
    "min_elements": ">= {value} elements",
    "anions": "anions, lowest and highest share of the atoms: {value}",
    "compositional_validity": "SMACT charge neutrality + Pauling test",
}


class Filter(Protocol):
    """Post-processing of combined rewards (diversity, SUN); returns new values and its own components."""

    def __call__(self, structures: Sequence[Structure], values: np.ndarray, ok: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, np.ndarray]]: ...


class CompositeReward:
    """The standard reward: guards, then shaped property objectives combined into one value, then filters.

    A crystal that fails a guard or whose property cannot be computed gets `failure_value` and
    `ok=False` with the reason; no property is computed for a guarded-out crystal.

    Args:
        objectives: the shaped properties.
        combine: "mean", "min", "weighted" or "product".
        weights: per-objective weights for "weighted".
        guards: checks before any property is computed (default `Guards()`).
        failure_value: the reward of a crystal that could not be scored.
        filters: post-processing of the combined values (diversity, SUN), in order.
    """
    def __init__(
        self,
        objectives: Sequence[Objective],
        combine: str = "mean",
        weights: dict[str, float] | None = None,
        guards: Guards | None = None,
        failure_value: float = 0.0,
        filters: Sequence[Filter] = (),
    ):
        if not objectives:
            raise ValueError("a reward needs at least one objective")
        self.objectives = list(objectives)
        self.how = combine
        self.weights = weights
        self.guards = guards or Guards()
        self.failure_value = failure_value
        self.filters = list(filters)
        for source in self.sources:  # a relaxed crystal must pass the same guards as its input
            source.set_guard(self.guards.check)

    def __repr__(self) -> str:
        objectives = ", ".join(f"{o.name}:{type(o.shaping).__name__}" for o in self.objectives)
        filters = ", ".join(type(f).__name__ for f in self.filters) or "none"
        return f"CompositeReward([{objectives}], combine={self.how!r}, guards={self.guards}, filters=[{filters}])"

    @property
    def sources(self) -> list[PropertySource]:
        unique: dict[int, PropertySource] = {}
        for obj in self.objectives:
            unique.setdefault(id(obj.source), obj.source)
        for f in self.filters:
            for source in getattr(f, "sources", []):
                unique.setdefault(id(source), source)
        return list(unique.values())

    @property
    def evaluations(self) -> int:
        """Property evaluations so far, over every source this reward uses."""
        return sum(s.evaluations for s in self.sources)

    def state_dict(self) -> dict:
        """Evaluation counts, caches and diversity memory: what a resumed training run must restore."""
        return {
            "sources": [s.state_dict() for s in self.sources],
            "filters": [f.state_dict() if hasattr(f, "state_dict") else None for f in self.filters],
        }

    def load_state_dict(self, state: dict) -> None:
        for source, s in zip(self.sources, state["sources"], strict=True):
            source.load_state_dict(s)
        for f, s in zip(self.filters, state["filters"], strict=True):
            if s is not None:
                f.load_state_dict(s)

    def __call__(self, structures: Sequence[Structure]) -> RewardResult:
        structures = list(structures)
        n = len(structures)
        reasons = [self.refusal(s) for s in structures]
        properties = {obj.name: np.full(n, np.nan) for obj in self.objectives}
        for obj in self.objectives:
            idx = [i for i in range(n) if not reasons[i]]
            result = obj.source([structures[i] for i in idx])
            properties[obj.name][idx] = result.values
            for i, reason in zip(idx, result.reasons):
                reasons[i] = reason
        ok = np.array([not r for r in reasons], dtype=bool)
        components = {obj.name: np.where(ok, obj.shaping(np.nan_to_num(properties[obj.name])), 0.0) for obj in self.objectives}
        values = np.where(ok, combine(components, self.how, self.weights), self.failure_value)
        for f in self.filters:
            values, extra_properties, extra_components = f(structures, values, ok)
            properties.update(extra_properties)
            components.update(extra_components)
        return RewardResult(values, properties, components, ok, reasons)

    def shape_and_combine(self, properties: dict[str, np.ndarray]) -> np.ndarray:
        """The combined value that property values (one array per objective) would get, before any filter.

        For crystals that pass the guards: what a surrogate of the properties predicts the reward to be.
        """
        return combine({obj.name: obj.shaping(np.asarray(properties[obj.name], float)) for obj in self.objectives}, self.how, self.weights)

    def screen(self, structures: Sequence[Structure]) -> list[str]:
        """Why each crystal would be refused before any property is computed ("" where it passes every guard)."""
        return [self.refusal(s) for s in structures]

    def refusal(self, structure: Structure) -> str:
        """Why the guards refuse `structure` ("" where it passes); a crystal too broken to check is refused, never raised on."""
        try:
            return self.guards.check(structure)
        except Exception as exc:  # a crystal too broken even to check
            return f"invalid structure: {type(exc).__name__}: {exc}"
