"""Machine-learned interatomic potentials: batched single points and ASE relaxations.

CHGNet is the default; its weights ship inside its wheel. Any matgl `Potential` works too, by
local path or by hub name (`matgl.load_model` downloads it when the machine has a network).
"""

from __future__ import annotations

import contextlib
import json
import functools
import io
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from ..crystal import MAX_ATOMS_PER_A3

log = logging.getLogger(__name__)
MAX_ABS_ENERGY_PER_ATOM = 50.0  # eV/atom; beyond this the model has left its training domain
MAX_FORCE = 1000.0  # eV/Å
CHGNET_MAX_Z = 94  # CHGNet's atom embedding covers H..Pu
MAX_ATOMS = 100  # per crystal in one MLIP call; the shipped priors make at most 24
CHGNET_TASKS = ("e", "ef", "em", "efs", "efsm")


@dataclass
class SinglePoint:
    """What `MLIP.predict` computed; fields its `task` did not ask for are None."""

    energy_per_atom: float  # eV/atom
    forces: np.ndarray | None = None  # (N, 3) eV/Å
    stress: np.ndarray | None = None  # (3, 3) GPa
    magmoms: np.ndarray | None = None  # (N,) μB, where the model predicts them


@dataclass
class Relaxed:
    """A relaxation's result: the final structure, its energy (eV/atom), FIRE steps and whether it converged."""

    structure: Structure
    energy_per_atom: float
    steps: int
    converged: bool


class MLIPError(RuntimeError):
    """A prediction or relaxation that produced nonsense (NaN, explosion, timeout)."""


@contextlib.contextmanager
def _printed_to_log():
    """CHGNet prints on load; send those lines to this module's logger (shown with `-v`) instead of stdout."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        yield
    for line in buffer.getvalue().splitlines():
        log.info(line)


@functools.cache
def _chgnet(device: str):
    from chgnet.model import CHGNet

    with _printed_to_log():
        return CHGNet.load(use_device=device, verbose=False)


@functools.cache
def _matgl_potential(name_or_path: str):
    import matgl

    path = Path(name_or_path)
    if path.exists():
        check_matgl_dir(path)
        return matgl.load_model(path)
    return matgl.load_model(name_or_path)  # a hub name: trusted as matgl trusts its hub


def check_matgl_dir(path: Path) -> None:
    """Refuse a local matgl model directory that names a class outside matgl, before matgl builds anything.

    matgl's loader imports the `@module`/`@class` named in model.json and in model.pt's constructor
    arguments and calls it, so a crafted directory could run any installed class (subprocess.Popen).
    """
    missing = [name for name in ("model.json", "model.pt", "state.pt") if not (path / name).is_file()]
    if missing:
        raise MLIPError(f"{path} is not a matgl model directory: no {', '.join(missing)}")
    try:
        named = [json.loads((path / "model.json").read_text())]
        named.append(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
    except Exception as exc:
        raise MLIPError(f"{path}: unreadable matgl model files ({type(exc).__name__}: {exc})") from None
    outside = sorted({f"{m}.{c}" for m, c in _named_classes(named) if not (m == "matgl" or m.startswith("matgl."))})
    if outside:
        raise MLIPError(f"{path} names classes outside matgl ({', '.join(outside)}); refusing to load it")


def _named_classes(obj) -> list[tuple[str, str]]:
    """Every (@module, @class) pair inside nested dicts and lists."""
    found = []
    if isinstance(obj, dict):
        if "@module" in obj or "@class" in obj:
            found.append((str(obj.get("@module", "")), str(obj.get("@class", ""))))
        for value in obj.values():
            found += _named_classes(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            found += _named_classes(value)
    return found


class MLIP:
    """One potential, loaded once per process and shared by every property source that asks for the same one."""

    def __init__(self, model: str = "chgnet", device: str = "cpu", batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model
        if not self.is_chgnet and Path(model).exists():
            check_matgl_dir(Path(model))  # before anything runs, not at the first crystal
        self.device = device
        self.batch_size = batch_size  # crystals per model call: bounds the memory of neighbour graphs and autograd

    @property
    def is_chgnet(self) -> bool:
        return self.model_name.lower() == "chgnet"

    def calculator(self):
        """An ASE calculator for this potential (CHGNet's, or matgl's with stress in eV/Å^3)."""
        if self.is_chgnet:
            from chgnet.model import CHGNetCalculator

            with _printed_to_log():
                return CHGNetCalculator(model=_chgnet(self.device), use_device=self.device)
        from matgl.ext.ase import PESCalculator

        # ASE's cell filters expect stress in eV/Å^3, not matgl's default GPa.
        return PESCalculator(_matgl_potential(self.model_name), stress_unit="eV/A3")

    def check_elements(self, structure: Structure) -> None:
        """Raise MLIPError if the model cannot take `structure`: an element it lacks, or a cell whose
        neighbour graph would exhaust memory (more than `MAX_ATOMS` atoms, or crushed beyond
        `crystal.MAX_ATOMS_PER_A3`), whoever built the reward."""
        if len(structure) > MAX_ATOMS:
            raise MLIPError(f"{len(structure)} atoms: more than the {MAX_ATOMS} an MLIP call takes here")
        density = len(structure) / structure.volume if structure.volume > 0 else float("inf")
        if density > MAX_ATOMS_PER_A3:
            raise MLIPError(f"{density:.3f} atoms/Å^3 is a crushed cell (> {MAX_ATOMS_PER_A3}); its neighbour graph would exhaust memory")
        if self.is_chgnet:
            beyond = sorted({el.symbol for el in structure.composition.elements if el.Z > CHGNET_MAX_Z})
            if beyond:
                raise MLIPError(f"CHGNet does not cover {', '.join(beyond)} (it knows elements up to Z = {CHGNET_MAX_Z}, Pu)")

    def predict(self, structures: Sequence[Structure], task: str = "e") -> list[SinglePoint]:
        """Single points for a batch, computing only what `task` names: "e" energy, "m" CHGNet magmoms,
        "f" forces, "s" stress (e.g. "em", "efsm"). Raises MLIPError on nonsense.

        Crystals go through the model `batch_size` at a time, and autograd runs only when forces or
        stresses are asked for, so the memory of one call does not grow with the batch.
        """
        if not set(task) <= set("efsm") or "e" not in task:
            raise ValueError(f"task must contain 'e' and only letters of 'efsm', got {task!r}")
        structures = list(structures)
        for s in structures:
            self.check_elements(s)
        points: list[SinglePoint] = []
        # Forces and stresses are autograd derivatives, whatever the caller's grad mode; an ASE
        # calculator (matgl) always computes them.
        with torch.set_grad_enabled("f" in task or "s" in task or not self.is_chgnet):
            for start in range(0, len(structures), self.batch_size):
                points += self._predict(structures[start : start + self.batch_size], task)
        for s, p in zip(structures, points):
            _check(p, s)
        return points

    def _predict(self, structures: list[Structure], task: str) -> list[SinglePoint]:
        if not self.is_chgnet:
            return [self._ase_single_point(s) for s in structures]
        # CHGNet computes only these combinations: take the smallest that holds what was asked for.
        chgnet_task = next(t for t in CHGNET_TASKS if set(task) <= set(t))
        raw = _chgnet(self.device).predict_structure(structures, task=chgnet_task, batch_size=self.batch_size)
        raw = [raw] if isinstance(raw, dict) else raw
        return [
            SinglePoint(
                float(r["e"]),
                np.asarray(r["f"]) if "f" in task else None,
                _voigt_or_matrix(r["s"]) if "s" in task else None,
                np.asarray(r["m"]) if "m" in task else None,
            )
            for r in raw
        ]

    def _ase_single_point(self, structure: Structure) -> SinglePoint:
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator()
        energy = atoms.get_potential_energy() / len(atoms)
        stress = atoms.get_stress(voigt=False) * 160.21766208  # eV/Å^3 -> GPa
        return SinglePoint(float(energy), atoms.get_forces(), stress, None)

    def relax(self, structure: Structure, fmax: float = 0.1, steps: int = 200, timeout_s: float = 120.0, relax_cell: bool = True) -> Relaxed:
        """FIRE on positions (and the cell, through a Frechet cell filter) until max force < fmax."""
        from ase.filters import FrechetCellFilter
        from ase.optimize import FIRE

        self.check_elements(structure)
        atoms = AseAtomsAdaptor.get_atoms(structure)
        atoms.calc = self.calculator()
        target = FrechetCellFilter(atoms) if relax_cell else atoms
        optimizer = FIRE(target, logfile=None)
        with torch.enable_grad():
            return self._relax(atoms, optimizer, fmax, steps, timeout_s)

    def _relax(self, atoms, optimizer, fmax: float, steps: int, timeout_s: float) -> Relaxed:
        deadline = time.monotonic() + timeout_s
        volume0 = atoms.get_volume()
        n = 0
        converged = False
        for converged in optimizer.irun(fmax=fmax, steps=steps):
            n += 1
            if time.monotonic() > deadline:
                raise MLIPError(f"relaxation timed out after {timeout_s:g} s ({n} steps)")
            volume = atoms.get_volume()
            if not np.isfinite(volume) or volume > 5 * volume0 or volume < volume0 / 5:
                raise MLIPError(f"relaxation exploded: volume went from {volume0:.1f} to {volume:.1f} Å^3")
        energy = atoms.get_potential_energy() / len(atoms)
        if not np.isfinite(energy) or abs(energy) > MAX_ABS_ENERGY_PER_ATOM:
            raise MLIPError(f"relaxed energy {energy} eV/atom is not physical")
        return Relaxed(AseAtomsAdaptor.get_structure(atoms), float(energy), n, bool(converged))


def _voigt_or_matrix(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    return s.reshape(3, 3)


def _check(point: SinglePoint, structure: Structure) -> None:
    formula = structure.composition.reduced_formula
    if not np.isfinite(point.energy_per_atom) or abs(point.energy_per_atom) > MAX_ABS_ENERGY_PER_ATOM:
        raise MLIPError(f"{formula}: energy {point.energy_per_atom} eV/atom is not physical")
    if point.forces is not None and (not np.all(np.isfinite(point.forces)) or np.abs(point.forces).max(initial=0.0) > MAX_FORCE):
        raise MLIPError(f"{formula}: forces are not finite or exceed {MAX_FORCE:g} eV/Å")
