"""Generation metrics of CDVAE (Xie et al. 2022) and DiffCSP (Jiao et al. 2023), computed as they define them.

- validity: structural (all distances >= 0.5 Å, volume >= 0.1 Å^3) and compositional (SMACT);
- COV-R / COV-P: CrystalNN "ops" site fingerprints averaged per structure, Magpie composition
  fingerprints scaled by CDVAE's constants, and the published per-dataset cutoffs. Precision is
  divided by all generated crystals, so invalid ones count as uncovered;
- Wasserstein distances of density and number of elements, valid samples against the reference;
- uniqueness (distinct structures among valid samples, StructureMatcher) and novelty (fraction of
  the unique valid samples that match no training structure). These two are not in the CDVAE table;
  they follow the usual MatterGen-style definitions.

A leaf over crystal.py and datasets.py: the trainer imports it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Sequence

import numpy as np
from pymatgen.core import Structure
from scipy.spatial.distance import cdist
from scipy.stats import wasserstein_distance
from tqdm import tqdm

from ..crystal import MatchIndex, compositional_validity, magpie, lattice_validity, structural_validity, unique_indices
from ..datasets import cache_dir
from ..files import read_cache, write_cache

log = logging.getLogger(__name__)

# (structure cutoff, composition cutoff), from CDVAE's COV_Cutoffs
COV_CUTOFFS = {
    "mp_20": (0.4, 10.0),
    "mpts_52": (0.4, 10.0),
    "carbon_24": (0.2, 4.0),
    "perov_5": (0.2, 4.0),
}
METRIC_KEYS = (
    "struct_validity",
    "comp_validity",
    "validity",
    "uniqueness",
    "novelty",
    "cov_recall",
    "cov_precision",
    "wdist_density",
    "wdist_num_elements",
)
_SCALER = json.loads((Path(__file__).parent / "magpie_scaler.json").read_text())


@functools.cache
def _featurizers():
    from matminer.featurizers.site.fingerprint import CrystalNNFingerprint

    return CrystalNNFingerprint.from_preset("ops"), magpie(impute_nan=False)


def _fingerprint_one(structure: Structure) -> tuple[np.ndarray | None, np.ndarray]:
    site_fp, comp_fp = _featurizers()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            comp = np.asarray(comp_fp.featurize(structure.composition), dtype=float)
        except Exception:  # an empty composition
            comp = np.full(len(_SCALER["means"]), np.nan)
        if len(structure) == 0 or not lattice_validity(structure.lattice.matrix):
            return None, comp
        try:
            sites = [site_fp.featurize(structure, i) for i in range(len(structure))]
        except Exception:  # CDVAE counts a crystal whose fingerprint fails as uncovered
            return None, comp
    return np.mean(sites, axis=0), comp


def fingerprints(structures: Sequence[Structure], workers: int | None = None, progress: bool = False):
    """CrystalNN structure fingerprints (None where CrystalNN fails) and scaled Magpie composition fingerprints."""
    workers = workers or os.cpu_count() or 1
    iterator = (
        ProcessPoolExecutor(workers).map(_fingerprint_one, structures, chunksize=8)
        if workers > 1 and len(structures) > 16
        else map(_fingerprint_one, structures)
    )
    results = list(tqdm(iterator, total=len(structures), desc="fingerprints", disable=not progress))
    struct = [r[0] for r in results]
    comp = np.array([r[1] for r in results])
    comp = np.nan_to_num((comp - np.asarray(_SCALER["means"])) / np.asarray(_SCALER["stds"]), nan=0.0)
    return struct, comp


FINGERPRINT_VERSION = 1  # bump when `_fingerprint_one` or the scaling changes: old cache entries then miss


def _content_key(structures: Sequence[Structure]) -> str:
    """A hash of the crystals themselves (lattice, species, coordinates) and of the fingerprint code's version."""
    from importlib.metadata import version

    h = hashlib.sha256(f"v{FINGERPRINT_VERSION} matminer {version('matminer')} n={len(structures)}".encode())
    for s in structures:
        h.update(np.asarray(s.lattice.matrix, dtype=np.float64).tobytes())
        h.update(np.asarray(s.atomic_numbers, dtype=np.int64).tobytes())
        h.update(np.asarray(s.frac_coords, dtype=np.float64).tobytes())
    return h.hexdigest()[:32]


def cached_fingerprints(structures: Sequence[Structure], workers: int | None = None, progress: bool = False):
    """`fingerprints`, kept on disk under the cache folder, keyed by `_content_key`: a reference set
    is fingerprinted once, not at every `evaluate`."""
    path = cache_dir() / "fingerprints" / f"{_content_key(structures)}.npz"
    n = len(structures)
    saved = read_cache(path, lambda p: dict(np.load(p, allow_pickle=False)), lambda d: set(d) == {"struct", "ok", "comp"} and len(d["ok"]) == len(d["struct"]) == len(d["comp"]) == n)
    if saved is not None:
        return [row if ok else None for row, ok in zip(saved["struct"], saved["ok"])], saved["comp"]
    log.warning(
        "fingerprinting %d reference crystals once (perov_5's 3,787 took 286 s on 2 cores); cached in %s for the next evaluate",
        len(structures), path.parent,
    )
    start = time.perf_counter()
    struct, comp = fingerprints(structures, workers, progress)
    log.warning("fingerprinted %d reference crystals in %.0f s", len(structures), time.perf_counter() - start)
    ok = np.array([fp is not None for fp in struct], dtype=bool)
    width = next((len(fp) for fp in struct if fp is not None), 0)
    table = np.array([fp if fp is not None else np.zeros(width) for fp in struct]).reshape(len(struct), width)
    write_cache(path, lambda handle: np.savez(handle, struct=table, ok=ok, comp=comp))
    return struct, comp


def coverage(gen_struct, gen_comp, ref_struct, ref_comp, struct_cutoff: float, comp_cutoff: float) -> tuple[float, float]:
    """COV-R (share of reference crystals with a close generated one) and COV-P (the converse)."""
    n_gen = len(gen_struct)
    ok = [i for i, fp in enumerate(gen_struct) if fp is not None]
    ref_ok = [i for i, fp in enumerate(ref_struct) if fp is not None]
    if not ok or not ref_ok:
        return 0.0, 0.0
    s = cdist(np.array([gen_struct[i] for i in ok]), np.array([ref_struct[i] for i in ref_ok]))
    c = cdist(gen_comp[ok], ref_comp[ref_ok])
    recall = np.mean((s.min(axis=0) <= struct_cutoff) & (c.min(axis=0) <= comp_cutoff))
    precision = np.sum((s.min(axis=1) <= struct_cutoff) & (c.min(axis=1) <= comp_cutoff)) / n_gen
    return float(recall), float(precision)


def unique_novel(structures: Sequence[Structure], valid: np.ndarray, known: MatchIndex | None, progress: bool = False) -> tuple[float, float | None, list[int]]:
    """The one definition of uniqueness and novelty, shared by `evaluate`, the trainer and the runner.

    Uniqueness: the share of the valid crystals that are distinct (StructureMatcher). Novelty: the
    share of those distinct valid crystals that match nothing in `known` (None without it). Also
    returns the indices of the distinct, valid, novel crystals (all distinct valid ones without `known`).
    """
    valid_idx = [i for i in range(len(structures)) if valid[i]]
    distinct = [valid_idx[j] for j in unique_indices([structures[i] for i in valid_idx], progress)]
    uniqueness = len(distinct) / len(valid_idx) if valid_idx else 0.0
    if known is None:
        return uniqueness, None, distinct
    new = ~known.contains([structures[i] for i in distinct], progress) if distinct else np.zeros(0, dtype=bool)
    return uniqueness, float(new.mean()) if distinct else 0.0, [i for i, n in zip(distinct, new) if n]


def validity_flags(structures: Sequence[Structure]) -> tuple[np.ndarray, np.ndarray]:
    """Structural and compositional validity per crystal, as two boolean arrays."""
    struct = np.array([bool(structural_validity(s)) for s in structures], dtype=bool)
    comp = np.array([bool(compositional_validity(s.composition)) for s in structures], dtype=bool)
    return struct, comp


def evaluate(
    samples: Sequence[Structure],
    reference: Sequence[Structure],
    train: Sequence[Structure] | None = None,
    dataset: str | None = None,
    cutoffs: tuple[float, float] | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> dict[str, float | int | None]:
    """All generation metrics of `samples` against a reference set (and a training set for novelty).

    Coverage cutoffs come from `dataset` (a key of COV_CUTOFFS) or `cutoffs`; without either, COV is None.
    """
    if not samples:
        raise ValueError("no samples to evaluate")
    if not reference:
        raise ValueError("the reference set is empty")
    if cutoffs is None and dataset is not None:
        if dataset not in COV_CUTOFFS:
            raise ValueError(f"no published COV cutoffs for {dataset!r}; known: {', '.join(COV_CUTOFFS)}")
        cutoffs = COV_CUTOFFS[dataset]
    struct_ok, comp_ok = validity_flags(samples)
    valid = struct_ok & comp_ok
    valid_samples = [s for s, v in zip(samples, valid) if v]
    result: dict[str, float | int | None] = {
        "num_samples": len(samples),
        "struct_validity": float(struct_ok.mean()),
        "comp_validity": float(comp_ok.mean()),
        "validity": float(valid.mean()),
    }
    result["uniqueness"], result["novelty"], _ = unique_novel(samples, valid, MatchIndex(train) if train is not None else None, progress)
    if not valid_samples:
        result["novelty"] = None

    if cutoffs is not None:
        # As in CDVAE, a crystal counts in coverage unless it cannot be built (here: a broken cell)
        # or its fingerprint fails; merely invalid crystals keep their fingerprints.
        gen_struct, gen_comp = fingerprints(samples, workers, progress)
        ref_struct, ref_comp = cached_fingerprints(reference, workers, progress)
        result["cov_recall"], result["cov_precision"] = coverage(gen_struct, gen_comp, ref_struct, ref_comp, *cutoffs)
    else:
        result["cov_recall"] = result["cov_precision"] = None

    if valid_samples:
        result["wdist_density"] = float(wasserstein_distance([s.density for s in valid_samples], [s.density for s in reference]))
        result["wdist_num_elements"] = float(
            wasserstein_distance([len(s.composition) for s in valid_samples], [len(s.composition) for s in reference])
        )
    else:
        result["wdist_density"] = result["wdist_num_elements"] = None
    return result


def format_table(metrics: dict) -> str:
    """The metrics as an aligned two-column text table."""
    rows = [(k, metrics.get(k)) for k in ("num_samples",) + METRIC_KEYS if k in metrics]
    width = max(len(k) for k, _ in rows)
    lines = []
    for key, value in rows:
        text = "n/a" if value is None else (f"{value:d}" if isinstance(value, int) else f"{value:.4f}")
        lines.append(f"{key:<{width}}  {text}")
    return "\n".join(lines)
