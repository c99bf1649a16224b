"""Property sources and rewards by name: what task definitions and reward configs refer to."""

from __future__ import annotations

from typing import Any

from pymatgen.core import Lattice, Structure

from ..targets import BAND_GAP_WINDOW, LOW_HHI
from .base import PropertySource
from .cache import Cached
from .composite import CompositeReward, Guards, Objective
from .filters import DiversityFilter
from .properties import HHI, BulkModulus, Density, EnergyAboveReference, EnergyPerAtom, FormationEnergy, MagneticDensity
from .shaping import SHAPINGS

SOURCES: dict[str, type[PropertySource]] = {
    "hhi": HHI,
    "density": Density,
    "energy_per_atom": EnergyPerAtom,
    "formation_energy": FormationEnergy,
    "magnetic_density": MagneticDensity,
    "bulk_modulus": BulkModulus,
}


def make_source(name: str, **kwargs) -> PropertySource:
    """A property source by registry name ("hhi", "density", "formation_energy", ...) with its keyword arguments."""
    if name == "band_gap":
        from .band_gap import BandGap

        return BandGap(**kwargs)
    if name not in SOURCES:
        raise KeyError(f"no property source named {name!r}; known: {', '.join(sorted(SOURCES) + ['band_gap'])}")
    return SOURCES[name](**kwargs)


def build_composite(
    objectives: list[dict[str, Any]],
    combine: str = "mean",
    weights: dict[str, float] | None = None,
    guards: dict[str, Any] | None = None,
    failure_value: float = 0.0,
    diversity: dict[str, Any] | None = None,
    cache: bool = True,
) -> CompositeReward:
    """A reward from plain data, e.g. {"objectives": [{"source": "hhi", "shaping": {"kind": "descending", "lo": 1250, "hi": 5000}}]}."""
    built = []
    for spec in objectives:
        spec = dict(spec)
        unknown = set(spec) - {"source", "kwargs", "shaping", "name"}
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)} in objective {spec}")
        source = make_source(spec["source"], **spec.get("kwargs", {}))
        if cache and source.cost != "cheap":
            source = Cached(source)
        shaping_spec = dict(spec.get("shaping", {"kind": "identity"}))
        kind = shaping_spec.pop("kind")
        if kind not in SHAPINGS:
            raise ValueError(f"unknown shaping {kind!r}; known: {', '.join(SHAPINGS)}")
        built.append(Objective(source, SHAPINGS[kind](**shaping_spec), spec.get("name", "")))
    filters = [DiversityFilter(**diversity)] if diversity else []
    return CompositeReward(built, combine, weights, Guards(**(guards or {})), failure_value, filters)


def _shaped(source: str, kind: str, kwargs: dict | None = None, **shaping) -> dict:
    return {"source": source, "kwargs": kwargs or {}, "shaping": {"kind": kind, **shaping}}


def low_hhi(max_hhi: float = LOW_HHI, worst: float = 5000.0, **options) -> CompositeReward:
    """Supply risk: reward 1 at HHI <= `max_hhi`, falling linearly to 0 at `worst`."""
    return build_composite([_shaped("hhi", "descending", lo=max_hhi, hi=worst)], **options)


def density_target(target: float = 3.6, width: float = 0.5, **options) -> CompositeReward:
    """Density near `target` g/cm^3: 1 at the target, falling to 0 at ±`width`."""
    return build_composite([_shaped("density", "target", target=target, width=width)], **options)


def formation_energy(best: float = -2.5, worst: float = 0.0, relax: bool = False, **options) -> CompositeReward:
    """Formation energy (eV/atom, CHGNet): 1 at <= `best`, 0 at >= `worst`."""
    return build_composite([_shaped("formation_energy", "descending", {"relax": relax}, lo=best, hi=worst)], **options)


def magnetic_density(target: float = 0.1, relax: bool = False, max_pressure_gpa: float | None = 25.0, **options) -> CompositeReward:
    """Magnetic density (μB/Å^3, CHGNet magmoms): 0 at 0, 1 at >= `target`; a cell beyond ±`max_pressure_gpa` fails."""
    kwargs = {"relax": relax, "max_pressure_gpa": max_pressure_gpa}
    return build_composite([_shaped("magnetic_density", "ascending", kwargs, lo=0.0, hi=target)], **options)


def magnet_low_hhi(target: float = 0.1, max_hhi: float = LOW_HHI, worst: float = 5000.0, max_pressure_gpa: float | None = 25.0, **options) -> CompositeReward:
    """The minimum of the magnetic-density and low-HHI rewards."""
    options.setdefault("combine", "min")
    return build_composite(
        [_shaped("magnetic_density", "ascending", {"max_pressure_gpa": max_pressure_gpa}, lo=0.0, hi=target), _shaped("hhi", "descending", lo=max_hhi, hi=worst)],
        **options,
    )


def diamond() -> Structure:
    """Diamond's primitive cell (a = 3.567 Å)."""
    return Structure.from_spacegroup("Fd-3m", Lattice.cubic(3.567), ["C"], [[0, 0, 0]]).get_primitive_structure()


def carbon_low_energy(worst: float = 1.0, relax: bool = False, **options) -> CompositeReward:
    """CHGNet energy above diamond (eV/atom): 1 at 0, falling to 0 at `worst`."""
    objective = Objective(Cached(EnergyAboveReference(diamond(), relax=relax)), SHAPINGS["descending"](lo=0.0, hi=worst))
    guards = Guards(**options.pop("guards", {}))
    return CompositeReward([objective], guards=guards, **options)


def bulk_modulus(target: float = 400.0, floor: float = 100.0, relax: bool = True, steps: int = 60, timeout_s: float = 60.0, **options) -> CompositeReward:
    """Bulk modulus (GPa) after a bounded relaxation: 0 at <= `floor`, 1 at >= `target`."""
    # A short, bounded relaxation: enough to reach the E(V) minimum of sensible cells, and a
    # per-crystal time limit so one pathological sample cannot stall a training batch.
    kwargs = {"relax": relax, "steps": steps, "fmax": 0.15, "timeout_s": timeout_s}
    return build_composite([_shaped("bulk_modulus", "ascending", kwargs, lo=floor, hi=target)], **options)


def band_gap_window(lo: float = BAND_GAP_WINDOW[0], hi: float = BAND_GAP_WINDOW[1], margin: float = 0.5, **options) -> CompositeReward:
    """Predicted band gap in [`lo`, `hi`] eV: 1 inside, falling to 0 over `margin` outside."""
    return build_composite([_shaped("band_gap", "window", lo=lo, hi=hi, margin=margin)], **options)
