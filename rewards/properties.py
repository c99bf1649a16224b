"""Property sources: formulas (HHI, density) and MLIP-derived properties."""

from __future__ import annotations

import functools
from abc import abstractmethod
from typing import Callable, Sequence

import numpy as np

from pymatgen.core import Structure

from .base import PropertySource, PropertyValues
from .mlip import MLIP, MLIPError


@functools.cache
def _hhi_model():
    from pymatgen.analysis.hhi import HHIModel

    return HHIModel()


class HHI(PropertySource):
    """Herfindahl-Hirschman index of the elements' production (or reserves), weighted by mass fraction, as pymatgen computes it."""

    name = "hhi"
    unit = ""

    def __init__(self, kind: str = "production"):
        super().__init__()
        if kind not in ("production", "reserve"):
            raise ValueError(f"kind must be 'production' or 'reserve', got {kind!r}")
        self.kind = kind

    def compute(self, structures: Sequence[Structure]) -> list[float]:
        model = _hhi_model()
        get = model.get_hhi_production if self.kind == "production" else model.get_hhi_reserve
        values = []
        for s in structures:
            missing = [e.symbol for e in s.composition.elements if (model.symbol_hhip_hhir.get(e.symbol) is None)]
            if missing:
                raise ValueError(f"no HHI data for {', '.join(missing)}")
            values.append(float(get(s.composition)))
        return values


class Density(PropertySource):
    """Mass density in g/cm^3 of the crystal as given."""

    name = "density"
    unit = "g/cm^3"

    def compute(self, structures: Sequence[Structure]) -> list[float]:
        return [float(s.density) for s in structures]


class MLIPSource(PropertySource):
    """A property computed from MLIP energies, on the crystal as given or after relaxation.

    Subclasses implement `read` on the crystals the property is read on. With `relax`, those are the
    relaxed crystals, and a relaxed crystal that fails the reward's guards (`set_guard`) fails too:
    a relaxation can fuse atoms or blow a cell apart after the input passed every guard.
    """

    def __init__(self, mlip=None, relax: bool = False, fmax: float = 0.1, steps: int = 200, timeout_s: float = 120.0):
        super().__init__()
        self.mlip = mlip or MLIP()
        self.relax = relax
        self.relax_kwargs = {"fmax": fmax, "steps": steps, "timeout_s": timeout_s}
        self.cost = "mlip_relaxation" if relax else "mlip_single_point"
        self.guard: Callable[[Structure], str] | None = None
        self.relax_steps = 0  # MLIP calls spent relaxing: the cost of a relaxation is its steps, not its crystals

    def set_guard(self, check: Callable[[Structure], str]) -> None:
        """Refuse a relaxed crystal that `check` refuses (it says why, or "")."""
        self.guard = check

    def screen(self, structure: Structure) -> str:
        """Why the MLIP cannot evaluate `structure` (an element it does not cover), or ""."""
        try:
            self.mlip.check_elements(structure)
        except MLIPError as exc:
            return str(exc)
        return ""

    @abstractmethod
    def read(self, structures: Sequence[Structure], energies: np.ndarray | None) -> Sequence[float] | PropertyValues:
        """The property of `structures` as they are; `energies` (eV/atom) where a relaxation already computed them."""

    def energies(self, structures: Sequence[Structure], known: np.ndarray | None) -> np.ndarray:
        """MLIP energies in eV/atom: the `known` relaxed ones, or single points."""
        if known is not None:
            return known
        return np.array([p.energy_per_atom for p in self.mlip.predict(structures)])

    def state_dict(self) -> dict:
        return {**super().state_dict(), "relax_steps": self.relax_steps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.relax_steps = state.get("relax_steps", 0)

    def compute(self, structures: Sequence[Structure]) -> Sequence[float] | PropertyValues:
        if not self.relax:
            return self.read(structures, None)
        relaxed = []
        for s in structures:
            relaxed.append(self.mlip.relax(s, **self.relax_kwargs))
            self.relax_steps += relaxed[-1].steps
        refused = [self.guard(r.structure) if self.guard else "" for r in relaxed]
        keep = [i for i, why in enumerate(refused) if not why]
        values = np.full(len(structures), np.nan)
        reasons = [f"{self.name}: the relaxed crystal fails a guard: {why}" if why else "" for why in refused]
        if keep:
            read = self.read([relaxed[i].structure for i in keep], np.array([relaxed[i].energy_per_atom for i in keep]))
            read = read if isinstance(read, PropertyValues) else PropertyValues(np.asarray(read, dtype=float), [""] * len(keep))
            values[keep] = read.values
            for i, why in zip(keep, read.reasons):
                reasons[i] = why
        return PropertyValues(values, reasons)


class EnergyPerAtom(MLIPSource):
    """MLIP energy in eV/atom."""

    name = "energy_per_atom"
    unit = "eV/atom"

    def read(self, structures, energies):
        return self.energies(structures, energies)


class FormationEnergy(MLIPSource):
    """E_form per atom against MLIP-relaxed elemental references (chemical potentials)."""

    name = "formation_energy"
    unit = "eV/atom"

    def __init__(self, mlip=None, relax: bool = False, references: dict[str, float] | None = None, **kwargs):
        super().__init__(mlip, relax, **kwargs)
        self._references = references

    def chemical_potential(self, element: str) -> float:
        """The elemental reference energy of `element` in eV/atom (shipped, cached or computed once)."""
        from .references import elemental_references

        if self._references is None or element not in self._references:
            self._references = {**(self._references or {}), **elemental_references([element], self.mlip)}
        return self._references[element]

    def read(self, structures, energies):
        energies = self.energies(structures, energies)
        out = []
        for s, e in zip(structures, energies):
            fractions = s.composition.fractional_composition.get_el_amt_dict()
            out.append(e - sum(x * self.chemical_potential(el) for el, x in fractions.items()))
        return out


class EnergyAboveReference(MLIPSource):
    """Energy per atom above a reference crystal (for carbon: above MLIP-relaxed diamond)."""

    name = "energy_above_reference"
    unit = "eV/atom"

    def __init__(self, reference: Structure, mlip=None, relax: bool = False, **kwargs):
        super().__init__(mlip, relax, **kwargs)
        self.reference = reference
        self._reference_energy: float | None = None

    def read(self, structures, energies):
        if self._reference_energy is None:
            relaxed = self.mlip.relax(self.reference, fmax=0.02, steps=500)
            self._reference_energy = relaxed.energy_per_atom
        return self.energies(structures, energies) - self._reference_energy


class MagneticDensity(MLIPSource):
    """Total absolute magnetic moment per volume (μB/Å^3) from CHGNet's predicted magmoms.

    Anything divided by volume grows when a cell is crushed, so by default the crystal must also be
    near mechanical equilibrium: its CHGNet pressure within ±`max_pressure_gpa`. On 64 real perov_5
    crystals the pressure spans -13.6 to 4.4 GPa (1st-99th percentile; largest |P| 14.8), on 64 prior
    samples -18.1 to 23.0 GPa (largest 23.7), while ScCoO2F crushed to 0.6 and 0.4 of its volume is
    at 172 and 494 GPa
    (`python -m latticegym.benchmarks.measure.pressure`).
    `relax=True` instead reads the moments on the CHGNet-relaxed cell. None disables the bound.
    """

    name = "magnetic_density"
    unit = "μB/Å^3"

    def __init__(self, mlip=None, relax: bool = False, max_pressure_gpa: float | None = 25.0, **kwargs):
        super().__init__(mlip, relax, **kwargs)
        self.max_pressure_gpa = max_pressure_gpa

    def read(self, structures, energies):
        guarded = self.max_pressure_gpa is not None
        points = self.mlip.predict(structures, task="esm" if guarded else "em")
        if any(p.magmoms is None for p in points):
            raise ValueError(f"{self.mlip.model_name} predicts no magnetic moments; use CHGNet")
        values, reasons = [], []
        for s, p in zip(structures, points):
            pressure = -float(np.trace(p.stress)) / 3 if guarded else 0.0
            if guarded and abs(pressure) > self.max_pressure_gpa:
                values.append(np.nan)
                reasons.append(f"{self.name}: CHGNet pressure {pressure:.0f} GPa is beyond ±{self.max_pressure_gpa:g} GPa: a crushed or stretched cell")
            else:
                values.append(float(np.abs(p.magmoms).sum() / s.volume))
                reasons.append("")
        return PropertyValues(np.array(values), reasons)


class BulkModulus(MLIPSource):
    """Bulk modulus (GPa) from a Birch-Murnaghan fit of MLIP energies over isotropic strains."""

    name = "bulk_modulus"
    unit = "GPa"

    def __init__(self, mlip=None, relax: bool = False, max_strain: float = 0.05, points: int = 7, **kwargs):
        super().__init__(mlip, relax, **kwargs)
        self.scales = np.linspace(1 - max_strain, 1 + max_strain, points)

    def read(self, structures, energies):
        from pymatgen.analysis.eos import EOS

        strained = []
        for s in structures:
            for scale in self.scales:
                t = s.copy()
                t.scale_lattice(s.volume * scale)
                strained.append(t)
        energies = np.array([p.energy_per_atom for p in self.mlip.predict(strained)]).reshape(len(structures), -1)
        out = []
        for s, e in zip(structures, energies):
            volumes = s.volume * self.scales / len(s)
            fit = EOS("birch_murnaghan").fit(volumes, e)
            if not volumes.min() <= fit.v0 <= volumes.max():
                raise ValueError(f"{s.composition.reduced_formula}: E(V) has no minimum inside ±{(self.scales[-1] - 1):.0%} strain")
            out.append(float(fit.b0_GPa))
        return out
