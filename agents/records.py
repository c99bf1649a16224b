"""What a run keeps of its crystals: a row per evaluated crystal (evaluated.csv) and the best distinct ones (best.csv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pymatgen.core import Structure

from ..crystal import MatchIndex, structure_to_cif
from ..rewards.base import RewardResult
from .loggers import append_csv
from .pipeline import Pool


def evaluated_rows(iteration: int, pool: Pool, chosen: list[int], result: RewardResult, success: np.ndarray, found: np.ndarray) -> list[dict]:
    """One evaluated.csv row per evaluated crystal: reward, success, discovery, the screen's findings, properties and CIF."""
    screened = pool.screened
    rows = []
    for j, i in enumerate(chosen):
        s = pool.structures[i]
        row = {"material_id": f"it{iteration:04d}-{i:03d}", "iteration": iteration, "reward": float(result.values[j]), "success": bool(success[j])}
        row.update({"discovery": bool(found[j]), "e_hull": float(screened.e_hull[i]), "stable": bool(screened.stable[i]), "novel": bool(screened.novel[i])})
        row.update({"unique": bool(screened.unique[i]), "ok": bool(result.ok[j]), "reason": result.reasons[j], "formula": s.composition.reduced_formula})
        row.update({k: float(v[j]) for k, v in result.properties.items()})
        row["cif"] = structure_to_cif(s)
        rows.append(row)
    return rows


class BestList:
    """The `size` highest-reward distinct crystals of a run, best first.

    Two crystals are the same when they match the same entry of `history`, the run's index of every
    evaluated crystal (`Screen.history`), so a crystal keeps one row, its best.
    """

    def __init__(self, size: int, history: MatchIndex):
        self.size, self.history = size, history
        self.entries: list[dict] = []  # rows, each with its "structure" and "same_as" (history id)

    def offer(self, row: dict, structure: Structure) -> None:
        """Keep `row` if it beats the worst entry, replacing the entry of the same crystal if it beats that."""
        if len(self.entries) >= self.size and row["reward"] <= self.entries[-1]["reward"]:
            return
        same = self.history.find([structure])[0]
        for j, entry in enumerate(self.entries):
            if entry["same_as"] == same:
                if row["reward"] > entry["reward"]:
                    self.entries[j] = {**row, "structure": structure, "same_as": same}
                    self.entries.sort(key=lambda e: -e["reward"])
                return
        self.entries.append({**row, "structure": structure, "same_as": same})
        self.entries.sort(key=lambda e: -e["reward"])
        del self.entries[self.size :]

    def write(self, path: Path) -> None:
        """Rewrite best.csv."""
        path.unlink(missing_ok=True)
        append_csv(path, [{k: v for k, v in entry.items() if k not in ("structure", "same_as")} for entry in self.entries])

    def state_dict(self) -> list[dict]:
        return list(self.entries)

    def load_state_dict(self, state: list[dict]) -> None:
        self.entries = list(state)
