import json

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure

from latticegym.benchmarks.metrics import METRIC_KEYS, coverage, evaluate
from latticegym.datasets import read_csv

from helpers import diamond, perovskite, rocksalt


def test_self_evaluation_perov(perov_path):
    data = read_csv(perov_path, limit=40)
    m = evaluate(data.structures, data.structures, data.structures, dataset="perov_5", workers=2)
    assert m["struct_validity"] == 1.0
    assert m["comp_validity"] > 0.9
    assert m["cov_recall"] == 1.0 and m["cov_precision"] == 1.0
    assert m["novelty"] == 0.0
    assert m["wdist_num_elements"] < 0.05 and m["wdist_density"] < 0.1


def test_self_evaluation_carbon_is_exact(carbon_path):
    data = read_csv(carbon_path, limit=16)
    m = evaluate(data.structures, data.structures, dataset="carbon_24", workers=1)
    assert m["validity"] == 1.0
    assert m["cov_recall"] == m["cov_precision"] == 1.0
    assert m["wdist_density"] == 0.0 and m["wdist_num_elements"] == 0.0


def test_broken_crystals_count_as_invalid():
    good = [perovskite(), rocksalt(), diamond()]
    overlapping = perovskite()
    overlapping.replace(1, "Ti", [0.01, 0.0, 0.0])
    flat = Structure(Lattice([[4, 0, 0], [0, 4, 0], [4, 4, 1e-4]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    nan = Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]])
    empty = Structure(Lattice.cubic(4.0), [], [])
    charged = Structure(Lattice.cubic(5.0), ["Na", "F", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0, 0.5, 0.5]])
    samples = good + [overlapping, flat, nan, empty, charged]
    m = evaluate(samples, good, dataset="perov_5", workers=1)
    assert m["struct_validity"] == pytest.approx(4 / 8)  # good + charged
    assert m["validity"] == pytest.approx(3 / 8)
    assert m["cov_precision"] <= 3 / 8  # broken crystals never count as covered
    assert set(METRIC_KEYS) <= set(m)
    json.dumps(m)  # serialisable


def test_coverage_counts_against_cutoffs():
    ref_s = [np.zeros(2), np.ones(2) * 10]
    ref_c = np.array([[0.0], [0.0]])
    gen_s = [np.zeros(2) + 0.1, None, np.ones(2) * 5]
    gen_c = np.array([[0.0], [0.0], [0.0]])
    recall, precision = coverage(gen_s, gen_c, ref_s, ref_c, struct_cutoff=0.2, comp_cutoff=1.0)
    assert recall == 0.5  # only the first reference has a close sample
    assert precision == pytest.approx(1 / 3)  # the None fingerprint counts in the denominator


def test_reference_fingerprints_are_cached_on_disk_by_content(tmp_path, monkeypatch):
    from latticegym.benchmarks import metrics

    monkeypatch.setenv("LATTICEGYM_CACHE", str(tmp_path))
    calls = []
    real = metrics.fingerprints
    monkeypatch.setattr(metrics, "fingerprints", lambda s, *a, **k: calls.append(len(s)) or real(s, *a, **k))
    crystals = [perovskite(), rocksalt()]
    first = metrics.cached_fingerprints(crystals, workers=1)
    again = metrics.cached_fingerprints(crystals, workers=1)
    assert calls == [2] and len(list((tmp_path / "fingerprints").glob("*.npz"))) == 1
    np.testing.assert_allclose(first[1], again[1])
    assert all(np.allclose(a, b) for a, b in zip(first[0], again[0]))
    moved = perovskite()
    moved.translate_sites([0], [0.01, 0, 0])
    metrics.cached_fingerprints([moved, rocksalt()], workers=1)
    assert calls == [2, 2]  # another crystal, another key
