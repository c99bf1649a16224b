import gzip
import http.server
import threading

import pandas as pd
import pytest

from latticegym import datasets
from latticegym.datasets import DatasetError, DatasetStats, read_csv, write_csv

from helpers import diamond, perovskite, rocksalt, triclinic


@pytest.fixture
def small_csv(tmp_path):
    path = write_csv([perovskite(), rocksalt(), diamond(), triclinic()], tmp_path / "small.csv", {"band_gap": [1.0, 2.0, 3.0, 4.0]})
    return path


def test_read_plain_and_gzip(small_csv, tmp_path):
    plain = read_csv(small_csv)
    gz = tmp_path / "small.csv.gz"
    gz.write_bytes(gzip.compress(small_csv.read_bytes()))
    zipped = read_csv(gz)
    assert len(plain) == len(zipped) == 4
    assert list(plain.properties["band_gap"]) == [1.0, 2.0, 3.0, 4.0]
    assert plain.structures[0].composition.reduced_formula == "SrTiO3"
    assert plain.cifs == zipped.cifs


def test_write_read_preserves_structures(small_csv):
    back = read_csv(small_csv, canonicalize=False)
    for original, read in zip([perovskite(), rocksalt(), diamond(), triclinic()], back.structures):
        assert original.matches(read)


def _corrupt(small_csv, tmp_path, row, text):
    frame = pd.read_csv(small_csv)
    frame.loc[row, "cif"] = text
    bad = tmp_path / "bad.csv"
    frame.to_csv(bad, index=False)
    return bad


def test_malformed_row_names_file_row_and_reason(small_csv, tmp_path):
    bad = _corrupt(small_csv, tmp_path, 2, "data_broken\n_cell_length_a 4\n")
    with pytest.raises(DatasetError) as err:
        read_csv(bad)
    message = str(err.value)
    assert "bad.csv" in message and "row 2" in message and "line 4" in message and "cif" in message


def test_skip_bad_counts_rows(small_csv, tmp_path):
    bad = _corrupt(small_csv, tmp_path, 1, "")
    data = read_csv(bad, skip_bad=True)
    assert len(data) == 3
    assert data.skipped[0][0] == 1 and "empty cif" in data.skipped[0][1]
    assert list(data.properties["band_gap"]) == [1.0, 3.0, 4.0]


def test_degenerate_cell_is_a_bad_row(tmp_path):
    flat = perovskite()
    cif = flat.to(fmt="cif").replace("_cell_length_c   3.90500000", "_cell_length_c   0.00100000")
    path = tmp_path / "flat.csv"
    pd.DataFrame({"cif": [perovskite().to(fmt="cif"), cif]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match=r"flat.csv: row 1 \(line 3\): "):
        read_csv(path)


def test_missing_cif_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetError, match="no 'cif' column"):
        read_csv(path)


def test_split_is_deterministic_and_partitions(perov_path):
    data = read_csv(perov_path, limit=200)
    a = data.split(seed=3)
    b = data.split(seed=3)
    c = data.split(seed=4)
    assert [len(a[k]) for k in ("train", "val", "test")] == [160, 20, 20]
    assert a["test"].cifs == b["test"].cifs
    assert a["test"].cifs != c["test"].cifs
    all_cifs = a["train"].cifs + a["val"].cifs + a["test"].cifs
    assert sorted(all_cifs) == sorted(data.cifs)
    with pytest.raises(ValueError, match="summing to 1"):
        data.split((0.5, 0.1, 0.1))


def test_stats_vocabulary_and_sizes(carbon_path, tmp_path):
    data = read_csv(carbon_path, limit=100)
    stats = data.stats()
    assert stats.elements == [6]
    assert sum(stats.num_atoms.values()) == 100
    assert min(stats.num_atoms) >= 6 and stats.n_max <= 24
    stats.save(tmp_path / "s.json")
    assert DatasetStats.load(tmp_path / "s.json") == stats


def test_fetch_offline_gives_clear_message(tmp_path, monkeypatch):
    monkeypatch.setitem(datasets.KNOWN_DATASETS, "perov_5", "http://127.0.0.1:9/{split}.csv")
    with pytest.raises(DatasetError, match="could not download perov_5/test.*offline.*place it at"):
        datasets.fetch("perov_5", "test", root=tmp_path, timeout=2)
    assert not list(tmp_path.rglob("*.csv")) and not list(tmp_path.rglob("*.part"))


def test_fetch_downloads_once_and_writes_stats(small_csv, tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    (served / "train.csv").write_bytes(small_csv.read_bytes())
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(served), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setitem(datasets.KNOWN_DATASETS, "mp_20", f"http://127.0.0.1:{server.server_port}/{{split}}.csv")
        path = datasets.fetch("mp_20", "train", root=tmp_path / "cache")
        assert path.read_bytes() == small_csv.read_bytes()
        stats = DatasetStats.load(path.with_name("train.stats.json"))
        assert stats.elements == [3, 6, 8, 11, 15, 17, 22, 26, 38]
        server.shutdown()
        assert datasets.fetch("mp_20", "train", root=tmp_path / "cache") == path  # cached: no server needed
    finally:
        server.server_close()


def test_fetch_unknown_name():
    with pytest.raises(DatasetError, match="unknown dataset"):
        datasets.fetch("nope")
