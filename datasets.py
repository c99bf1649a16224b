"""CDVAE-format crystal datasets: read, write, split, fetch, and summarise.

A CDVAE CSV has one crystal per row in a `cif` column, plus property columns
(`formation_energy_per_atom`, `heat_ref`, `energy_per_atom`, ...). Files may be gzipped.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd
from pymatgen.core import Element, Structure
from tqdm import tqdm

from .crystal import MAX_ATOMS, canonical, lattice_validity, structure_from_cif, structure_to_cif
from .files import atomic_text

KNOWN_DATASETS = {
    "mp_20": "https://raw.githubusercontent.com/txie-93/cdvae/main/data/mp_20/{split}.csv",
    "perov_5": "https://raw.githubusercontent.com/txie-93/cdvae/main/data/perov_5/{split}.csv",
    "carbon_24": "https://raw.githubusercontent.com/txie-93/cdvae/main/data/carbon_24/{split}.csv",
    "mpts_52": "https://raw.githubusercontent.com/jiaor17/DiffCSP/main/data/mpts_52/{split}.csv",
}
SPLITS = ("train", "val", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)  # what pretraining, the band-gap predictor and `evaluate --*-split` use


class DatasetError(ValueError):
    """A dataset file that cannot be read, or a dataset that cannot be fetched."""


@dataclass
class DatasetStats:
    """What a generative model needs to know about its training data."""

    elements: list[int]  # atomic numbers, ascending: the element vocabulary
    num_atoms: dict[int, int]  # atoms per cell -> number of crystals
    fingerprint: str  # sha256 of the CIF column

    @property
    def n_max(self) -> int:
        return max(self.num_atoms)

    def to_dict(self) -> dict:
        """A JSON-ready dict (atom counts keyed by strings)."""
        return {"elements": self.elements, "num_atoms": {str(k): v for k, v in self.num_atoms.items()}, "fingerprint": self.fingerprint}

    @classmethod
    def from_dict(cls, d: dict) -> DatasetStats:
        """The inverse of `to_dict`."""
        return cls(list(d["elements"]), {int(k): int(v) for k, v in d["num_atoms"].items()}, d["fingerprint"])

    def save(self, path: str | Path) -> None:
        """Write the stats as JSON to `path`."""
        atomic_text(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> DatasetStats:
        """Read stats written by `save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


@dataclass
class CrystalDataset:
    """Parsed crystals with their CIF text and property columns, row-aligned."""

    structures: list[Structure]
    cifs: list[str]
    properties: pd.DataFrame
    source: str = ""
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (row, reason) of rows left out

    def __len__(self) -> int:
        return len(self.structures)

    def subset(self, indices: Iterable[int]) -> CrystalDataset:
        """The rows at `indices`, in that order, with their properties."""
        idx = list(indices)
        return CrystalDataset(
            [self.structures[i] for i in idx],
            [self.cifs[i] for i in idx],
            self.properties.iloc[idx].reset_index(drop=True),
            self.source,
        )

    def merged(self, *others: CrystalDataset) -> CrystalDataset:
        """These rows followed by those of `others`, e.g. two splits of one file."""
        parts = [self, *others]
        return CrystalDataset(
            [s for d in parts for s in d.structures],
            [c for d in parts for c in d.cifs],
            pd.concat([d.properties for d in parts], ignore_index=True),
            self.source,
        )

    def stats(self) -> DatasetStats:
        """Element vocabulary (atomic numbers), atoms-per-cell histogram and the CIFs' fingerprint."""
        elements = sorted({site.specie.Z for s in self.structures for site in s})
        counts = Counter(len(s) for s in self.structures)
        return DatasetStats(elements, dict(sorted(counts.items())), fingerprint(self.cifs))

    def split(self, fractions: Sequence[float] = SPLIT_FRACTIONS, seed: int = 0) -> dict[str, CrystalDataset]:
        """Deterministic train/val/test split: the same seed gives the same rows on any machine."""
        if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
            raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
        order = np.random.default_rng(seed).permutation(len(self))
        n_train = int(round(fractions[0] * len(self)))
        n_val = int(round(fractions[1] * len(self)))
        parts = np.split(order, [n_train, n_train + n_val])
        return {name: self.subset(sorted(part)) for name, part in zip(SPLITS, parts)}


def fit_splits(hold_out_val: bool = False) -> list[str]:
    """The splits a prior trains on: train and val (the 90% outside test), or train alone."""
    return ["train"] if hold_out_val else ["train", "val"]


def _union(splits: dict[str, CrystalDataset], names: list[str]) -> CrystalDataset:
    first, *rest = (splits[name] for name in names)
    return first.merged(*rest)


def split_dataset(data: CrystalDataset, seed: int, hold_out_val: bool = False) -> dict[str, CrystalDataset]:
    """The split pretraining uses, rebuilt anywhere from the seed: `test` stays held out; `fit` is what
    trains (`fit_splits`)."""
    splits = data.split(SPLIT_FRACTIONS, seed)
    return {**splits, "fit": _union(splits, fit_splits(hold_out_val))}


def training_data(spec, path: str | Path, data: CrystalDataset | None = None) -> CrystalDataset:
    """The crystals of `path` a prior trained on: its recorded training splits when `path` is the file
    it was pretrained on (matched by name), otherwise the whole file. `spec`: the prior's `PriorSpec`
    (its `extra` records the file, split and splits trained on); `data`: `path` already read."""
    data = data if data is not None else read_csv(path, skip_bad=True)
    extra = spec.extra
    if Path(path).name != extra.get("data"):
        return data
    splits = data.split(tuple(extra.get("split_fractions", SPLIT_FRACTIONS)), seed=extra.get("split_seed", 0))
    return _union(splits, extra.get("trained_on", ["train"]))  # priors before the 90% recipe trained on "train" only


def fingerprint(cifs: Iterable[str]) -> str:
    """SHA-256 over the CIF texts in order: identifies a dataset's content."""
    h = hashlib.sha256()
    for cif in cifs:
        h.update(cif.encode())
        h.update(b"\0")
    return h.hexdigest()


def read_csv(
    path: str | Path,
    skip_bad: bool = False,
    canonicalize: bool = True,
    limit: int | None = None,
    progress: bool = False,
) -> CrystalDataset:
    """Read a CDVAE-format CSV (gzipped or not).

    A row whose CIF is missing or unreadable, or whose cell is degenerate, raises a DatasetError
    naming the file, the row and the reason; with `skip_bad=True` it is left out and recorded in
    `skipped` instead. `canonicalize` Niggli-reduces each cell into a standard orientation, as
    CDVAE does when it builds its datasets.
    """
    path = Path(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file")
    try:
        frame = pd.read_csv(path, nrows=limit)
    except Exception as exc:
        raise DatasetError(f"{path}: not a readable CSV: {exc}") from exc
    if "cif" not in frame.columns:
        raise DatasetError(f"{path}: no 'cif' column (columns are {list(frame.columns)})")
    frame = frame.drop(columns=[c for c in frame.columns if c.startswith("Unnamed:")])
    structures, cifs, keep, skipped = [], [], [], []
    rows = tqdm(frame["cif"].items(), total=len(frame), desc=f"reading {path.name}", disable=not progress)
    for row, cif in rows:
        try:
            structure = _parse_row(cif, canonicalize)
        except ValueError as exc:
            if not skip_bad:
                # +2: the header is line 1 and rows count from 0
                raise DatasetError(f"{path}: row {row} (line {row + 2}): {exc}") from exc
            skipped.append((int(row), str(exc)))
            continue
        structures.append(structure)
        cifs.append(cif)
        keep.append(row)
    properties = frame.loc[keep].drop(columns=["cif"]).reset_index(drop=True)
    return CrystalDataset(structures, cifs, properties, str(path), skipped)


def _parse_row(cif: object, canonicalize: bool) -> Structure:
    if not isinstance(cif, str) or not cif.strip():
        raise ValueError("empty cif")
    if cif.count("\n") > MAX_ATOMS + 200:  # a CIF holds a line per site: refuse before pymatgen parses for minutes
        raise ValueError(f"cif of {cif.count(chr(10))} lines: more sites than the {MAX_ATOMS} atoms latticegym handles")
    try:
        structure = structure_from_cif(cif)
    except Exception as exc:
        raise ValueError(f"unreadable cif: {exc}") from exc
    if len(structure) == 0:
        raise ValueError("cif has no atoms")
    if len(structure) > MAX_ATOMS:
        raise ValueError(f"{len(structure)} atoms: more than the {MAX_ATOMS} latticegym handles")
    unknown = sorted({str(sp) for sp in structure.species if not isinstance(sp, Element)} | {str(sp) for site in structure if not site.is_ordered for sp in site.species})
    if unknown:
        raise ValueError(f"not an element, or a disordered site: {', '.join(unknown)}")
    lattice = lattice_validity(structure.lattice.matrix)
    if not lattice:
        raise ValueError(lattice.reason)
    return canonical(structure) if canonicalize else structure


def write_csv(structures: Sequence[Structure], path: str | Path, properties: dict[str, Sequence] | None = None) -> Path:
    """Write structures (and optional per-structure columns) as a CDVAE-format CSV."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"material_id": [f"sample-{i}" for i in range(len(structures))]})
    frame["cif"] = [structure_to_cif(s) for s in structures]
    for name, values in (properties or {}).items():
        frame[name] = list(values)
    return atomic_text(path, frame.to_csv(index=False, quoting=csv.QUOTE_NONNUMERIC))


def cache_dir() -> Path:
    """Where downloads, reference energies and fingerprints are cached: `$LATTICEGYM_CACHE` or `~/.cache/latticegym`."""
    return Path(os.environ.get("LATTICEGYM_CACHE", Path.home() / ".cache" / "latticegym"))


def fetch(name: str, split: str = "train", root: str | Path | None = None, timeout: float = 60.0) -> Path:
    """Download a known dataset split into the cache (once) and return its path.

    The element vocabulary and atom-count distribution are written beside it as `<split>.stats.json`.
    """
    if name not in KNOWN_DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(KNOWN_DATASETS)}")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; splits are {', '.join(SPLITS)}")
    target = Path(root or cache_dir()) / name / f"{split}.csv"
    if not target.exists():
        url = KNOWN_DATASETS[name].format(split=split)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
                out.write(response.read())
        except (urllib.error.URLError, OSError) as exc:
            partial.unlink(missing_ok=True)
            raise DatasetError(
                f"could not download {name}/{split} from {url} ({exc}). If this machine is offline, "
                f"download that file elsewhere and place it at {target}, or pass a local CSV path instead."
            ) from exc
        partial.rename(target)
    stats_path = target.with_name(f"{split}.stats.json")
    if not stats_path.exists():
        read_csv(target, skip_bad=True).stats().save(stats_path)
    return target


def load(name_or_path: str | Path, split: str = "train", **kwargs) -> CrystalDataset:
    """Read a CSV by path, or a known dataset by name (fetched on first use)."""
    path = Path(name_or_path)
    if not path.exists() and str(name_or_path) in KNOWN_DATASETS:
        path = fetch(str(name_or_path), split)
    return read_csv(path, **kwargs)
