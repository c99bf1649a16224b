"""The one path from a policy's crystals to its update: sample -> screen -> select -> evaluate -> update.

Per iteration the trainer samples a pool of P crystals with no reward, the `Screen` checks them at no
property cost, the agent's `select` picks at most E of the survivors, the task's reward evaluates
those (the counted cost), and the agent's `update` learns from them. The screen runs MatInvent's
filter (`pipeline/filters/opt_filter.py`, `OptFilter`: validity, novel, unique, stable), in order of
cost:
- the task's guards (CDVAE validity, SMACT, MatInvent's 25 Å cell edge and the geometry guards);
- uniqueness within the pool and against every crystal evaluated earlier in the run;
- novelty against the prior's training crystals;
- stability: E_hull <= 0.1 eV/atom on the MLIP hull of those training crystals, after an MLIP
  relaxation where `relax` is on, from a single point where it is off.
A crystal that fails has a known reward, the task's failure value, that costs no evaluation.
With `drop=False` (the unscreened ablation) the checks still run, so discoveries are judged alike,
but every selected crystal is evaluated.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
from pymatgen.core import Structure

from ..crystal import MatchIndex, unique_indices
from ..rewards.composite import CompositeReward
from ..targets import STABLE_E_HULL
from ..rewards.stability import ConvexHull, EHull
from .rollout import Trajectories

def reward_guard(reward) -> Callable[[Structure], str] | None:
    """The reward's guards as one never-raising check ("" where a crystal passes), or None for a reward without guards."""
    return reward.refusal if isinstance(reward, CompositeReward) else None


@dataclass
class ScreenConfig:
    """The screen's settings.

    Attributes:
        drop: evaluate only the crystals that pass; False records every check but evaluates what the
            agent selects anyway (the unscreened ablation).
        e_hull: the stability threshold in eV/atom (None: no stability check).
        relax: relax with the MLIP (ASE FIRE, Frechet cell filter) before reading the energy; off,
            a single point on the crystal as sampled.
        hull_references: training crystals in the MLIP hull (None: all of them).
    """

    drop: bool = True
    e_hull: float | None = STABLE_E_HULL
    relax: bool = False
    hull_references: int | None = None


@dataclass
class Screened:
    """Per crystal of a pool: why the screen refused it ("" if it passed), and what each check found."""

    reasons: list[str]
    guarded: np.ndarray  # passed the task's guards
    stable: np.ndarray  # False where not reached
    novel: np.ndarray
    unique: np.ndarray
    e_hull: np.ndarray  # eV/atom, NaN where not computed

    @property
    def passed(self) -> np.ndarray:
        return np.array([not r for r in self.reasons], dtype=bool)

    @property
    def sun(self) -> np.ndarray:
        """Stable, unique and novel, whatever else the screen said."""
        return self.stable & self.unique & self.novel


class Screen:
    """MatInvent's filter before any property evaluation (see the module docstring).

    Args:
        guard: why a crystal fails the task's guards ("" where it passes), never raising (`CompositeReward.refusal`), or None for no guards.
        known: the prior's training crystals (novelty and the hull); empty: no novelty check, and a
            hull of the MLIP's elements alone.
        config: settings.
    """

    def __init__(self, guard: Callable[[Structure], str] | None, known: Sequence[Structure] = (), config: ScreenConfig | None = None):
        self.cfg = config or ScreenConfig()
        self.guard = guard
        self.known = MatchIndex(known) if len(known) else None
        self.history = MatchIndex()
        self.e_hull: EHull | None = None
        if self.cfg.e_hull is not None:
            hull = ConvexHull(list(known)[: self.cfg.hull_references] if self.cfg.hull_references else list(known))
            self.e_hull = EHull(hull, relax=self.cfg.relax)
            if guard is not None:
                self.e_hull.set_guard(guard)  # a relaxed crystal must pass the same guards
        if self.known is None:
            warnings.warn("no training crystals given: the screen cannot check novelty, and the hull holds the elements alone", stacklevel=2)

    @property
    def single_points(self) -> int:
        """MLIP single points spent screening (crystals whose energy was read without relaxing)."""
        return self.e_hull.evaluations if self.e_hull is not None and not self.cfg.relax else 0

    @property
    def relax_steps(self) -> int:
        """MLIP calls spent relaxing crystals while screening."""
        return self.e_hull.relax_steps if self.e_hull is not None else 0

    def __call__(self, structures: Sequence[Structure]) -> Screened:
        structures = list(structures)
        n = len(structures)
        reasons = [self.guard(s) if self.guard is not None else "" for s in structures]
        unique, novel, stable = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        e_hull = np.full(n, np.nan)

        guarded = np.array([not r for r in reasons], dtype=bool)
        alive = [i for i in range(n) if not reasons[i]]
        first = {alive[j] for j in unique_indices([structures[i] for i in alive])}
        seen = self.history.contains([structures[i] for i in alive]) if len(self.history) else np.zeros(len(alive), bool)
        for i, old in zip(alive, seen):
            if i not in first:
                reasons[i] = "a repeat of an earlier crystal of this pool"
            elif old:
                reasons[i] = "a repeat of a crystal evaluated earlier in the run"
            else:
                unique[i] = True

        alive = [i for i in alive if unique[i]]
        known = self.known.contains([structures[i] for i in alive]) if self.known is not None else np.zeros(len(alive), bool)
        for i, match in zip(alive, known):
            if match:
                reasons[i] = "matches a training crystal (not novel)"
            else:
                novel[i] = True

        alive = [i for i in alive if novel[i]]
        if self.e_hull is None:
            stable[alive] = True
        elif alive:
            result = self.e_hull([structures[i] for i in alive])
            for i, value, why in zip(alive, result.values, result.reasons):
                e_hull[i] = value
                if why:
                    reasons[i] = f"stability unknown: {why}"
                elif value > self.cfg.e_hull:
                    reasons[i] = f"E_hull {value:.3f} eV/atom > {self.cfg.e_hull} (not stable)"
                else:
                    stable[i] = True
        return Screened(reasons, guarded, stable, novel, unique, e_hull)

    def remember(self, structures: Sequence[Structure]) -> None:
        """Crystals that were evaluated: a later repeat of one is screened out."""
        self.history.add(structures)

    def state_dict(self) -> dict:
        return {"history": list(self.history.structures), "e_hull": self.e_hull.state_dict() if self.e_hull is not None else None}

    def load_state_dict(self, state: dict) -> None:
        self.history = MatchIndex(state["history"])
        if self.e_hull is not None:
            self.e_hull.load_state_dict(state["e_hull"])


@dataclass
class Pool:
    """One iteration's sampled crystals, their trajectories, and what the screen found."""

    trajectories: Trajectories | None  # None when the agent generates crystals without the policy
    structures: list
    screened: Screened
    drop: bool = True  # whether screened-out crystals may be evaluated

    def __len__(self) -> int:
        return len(self.structures)

    @property
    def candidates(self) -> np.ndarray:
        """Pool positions an agent may select: the survivors, or every crystal when the screen only records."""
        return np.flatnonzero(self.screened.passed) if self.drop else np.arange(len(self))


@dataclass
class Selection:
    """What an agent chose to evaluate, in its order, and what its update needs to know of that choice."""

    indices: np.ndarray
    context: dict = field(default_factory=dict)


def first_survivors(pool: Pool, n: int) -> Selection:
    """MatInvent's selection: the first `n` crystals that passed the screen (`mat_invent.py` `sample_step`: `sample_struc[:max_num]`)."""
    return Selection(pool.candidates[:n])


class FirstSurvivors:
    """The selection of every agent that does not choose: the first E survivors of a pool of E x `pool_factor`."""

    batch_size: int = 64  # E, when the run does not set it
    pool_factor: int = 1
    learns_from_screened: bool = True  # screened-out crystals join the update with the failure reward
    generates: bool = False  # True: the agent's `sample(n)` makes the pool, not the policy

    def attach(self, reward, known: list | None = None) -> None:
        """Agents that model the reward or the data keep them; these only sample and learn."""

    def select(self, pool: Pool, n: int) -> Selection:
        """The first `n` survivors (`first_survivors`)."""
        return first_survivors(pool, n)
