"""The floor that learns nothing: random symmetric crystals from PyXtal, screened, selected and counted like every agent's.

Each crystal takes a composition drawn from the prior's training crystals (the formula and atom
count of one of them, so the floor proposes the chemistry the policy was trained on), then a space
group drawn uniformly from 1-230 until PyXtal can place those atoms in it; PyXtal draws the
Wyckoff positions, the coordinates and a lattice at its default volume factor
(`pyxtal.from_random`). Nothing is learned, so its discoveries per property evaluation are what
chance gives.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from ..policies import DiffusionPolicy
from ..options import check_ranges
from .pipeline import FirstSurvivors
from .rollout import Rollout


@dataclass
class RandomCrystalsConfig:
    """PyXtal floor settings.

    Attributes:
        space_group_tries: space groups tried per crystal before its composition is redrawn.
    """

    space_group_tries: int = 50

    def __post_init__(self):
        check_ranges(self, at_least_one=("space_group_tries",))


class RandomCrystals(FirstSurvivors):
    """Samples random symmetric crystals with PyXtal instead of the policy, and never updates.

    Args:
        policy: unused (the policy is not sampled).
        prior: unused.
        config: settings.
        seed: seed of the compositions, space groups and PyXtal's own draws.
    """

    name = "pyxtal"
    default_diversity: dict | None = None
    generates = True
    learns_from_screened = False

    def __init__(self, policy: DiffusionPolicy | None = None, prior: DiffusionPolicy | None = None, config: RandomCrystalsConfig | None = None, seed: int = 0):
        self.cfg = config or RandomCrystalsConfig()
        self.rng = np.random.default_rng(seed)
        self.compositions: list[tuple[list[str], list[int]]] = []

    def attach(self, reward, known: list | None = None) -> None:
        """Take the compositions (species and counts per cell) of the prior's training crystals."""
        if not known:
            raise ValueError("the pyxtal floor draws compositions from the prior's training crystals: pass --reference (the prior's training file)")
        seen = {}
        for s in known:
            counts = s.composition.get_el_amt_dict()
            seen.setdefault(tuple(sorted(counts.items())), None)
        self.compositions = [([el for el, _ in key], [int(n) for _, n in key]) for key in seen]

    def sample(self, n: int) -> list[Structure]:
        """`n` random symmetric crystals."""
        return [self._one() for _ in range(n)]

    def _one(self) -> Structure:
        from pyxtal import pyxtal

        while True:
            species, counts = self.compositions[self.rng.integers(len(self.compositions))]
            for _ in range(self.cfg.space_group_tries):
                crystal = pyxtal()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    try:
                        crystal.from_random(3, int(self.rng.integers(1, 231)), species, counts, random_state=int(self.rng.integers(2**31)))
                    except Exception:  # no Wyckoff combination holds these counts in this group
                        continue
                if crystal.valid:
                    return crystal.to_pymatgen()

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
