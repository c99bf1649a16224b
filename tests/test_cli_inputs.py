"""Hostile inputs, one row each: a one-line error naming the problem (or a correct result), no code run
from a file, no partial file, and peak memory under 4 GB.

Each CLI row runs `latticegym` in a fresh process and reads its peak resident memory.
"""

import json
from pathlib import Path

import pytest
from helpers import cli, perovskite
from latticegym.crystal import structure_to_cif
from latticegym.files import atomic_save, load_checkpoint
from pymatgen.core import Lattice, Structure

FOUR_GB = 4 * 1024**2  # kB
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _csv(tmp: Path, name: str, cifs: list[str]) -> Path:
    import pandas as pd

    path = tmp / name
    pd.DataFrame({"material_id": range(len(cifs)), "cif": cifs}).to_csv(path, index=False)
    return path


def _huge_cif(tmp: Path) -> Path:
    """One CIF of 200,000 oxygen sites."""
    cif = structure_to_cif(Structure(Lattice.cubic(150.0), ["O"], [[0, 0, 0]]))
    sites = "".join(f"  O  O{i}  1  0.{i:06d}  0.5  0.5  1\n" for i in range(1, 200_000))
    return _csv(tmp, "huge.csv", [cif + sites])


def _bad_element(tmp: Path) -> Path:
    return _csv(tmp, "xx.csv", [structure_to_cif(perovskite()), structure_to_cif(perovskite()).replace("Sr", "Xx")])


def _giant_prior(tmp: Path) -> list[str]:
    payload = load_checkpoint(Path(__file__).resolve().parents[1] / "policies" / "checkpoints" / "perov_5.pt")
    payload["spec"]["num_atoms"] = {100000: 1}
    atomic_save(payload, tmp / "giant.pt")
    return [str(tmp / "giant.pt")]


# (name, setup(tmp) -> extra args, args, expected exit code, text the one-line error holds, files that must not exist)
CLI_CASES = [
    ("sample: 10^12 crystals", None, ["sample", "--prior", "perov_5", "--num", "1000000000000", "--batch-size", "1000000000000", "--out", "x.csv"], 2, "--num", ["x.csv"]),
    ("sample: steps beyond the training grid", None, ["sample", "--prior", "perov_5", "--num", "2", "--steps", "5000", "--out", "x.csv"], 2, "--steps", ["x.csv"]),
    ("sample: seed 2**70", None, ["sample", "--prior", "perov_5", "--num", "2", "--seed", str(2**70), "--out", "x.csv"], 2, "--seed", ["x.csv"]),
    ("sample: 10^8 correctors", None, ["sample", "--prior", "perov_5", "--num", "2", "--correctors", "100000000", "--out", "x.csv"], 2, "--correctors", ["x.csv"]),
    ("sample: a prior of 100,000-atom crystals", _giant_prior, ["sample", "--num", "2", "--out", "x.csv", "--prior"], 1, "handles 1..1000", ["x.csv"]),
    ("pretrain: lr 1e300", None, ["pretrain", "--data", "d.csv", "--out", "p", "--lr", "1e300"], 2, "--lr", ["p"]),
    ("pretrain: 10^7 hidden", None, ["pretrain", "--data", "d.csv", "--out", "p", "--hidden", "10000000"], 2, "--hidden", ["p"]),
    ("pretrain: 10^7 layers", None, ["pretrain", "--data", "d.csv", "--out", "p", "--layers", "10000000"], 2, "--layers", ["p"]),
    ("pretrain: 1e308 minutes", None, ["pretrain", "--data", "d.csv", "--out", "p", "--minutes", "1e308"], 2, "--minutes", ["p"]),
    ("pretrain: a negative seed", None, ["pretrain", "--data", "d.csv", "--out", "p", "--seed", "-5"], 2, "--seed", ["p"]),
    ("pretrain: only an unknown element", lambda t: [str(_csv(t, "only_xx.csv", [structure_to_cif(perovskite()).replace("Sr", "Xx")]))], ["pretrain", "--out", "p", "--epochs", "1", "--data"], 1, "no usable crystals", ["p/prior.pt"]),
    ("train: seed -1", None, ["train", "--env", "PerovskiteLowHHI", "--out", "r", "--seed", "-1"], 2, "--seed", ["r"]),
    ("train: --set lr=1e300", None, ["train", "--env", "PerovskiteLowHHI", "--out", "r", "--set", "lr=1e300"], 1, "lr must be in (0, 1]", ["r/checkpoint.pt"]),
    ("train: 10^9 evaluation samples", None, ["train", "--env", "PerovskiteLowHHI", "--out", "r", "--evaluate", "1000000000"], 2, "--evaluate", ["r"]),
    ("bench: a million seeds", None, ["bench", "--seeds", "1000000", "--out", "b"], 2, "--seeds", ["b"]),
    ("bench: no agents", None, ["bench", "--agents", "", "--out", "b"], 1, "--agents names no agent", ["b"]),
    ("bench: tabulate a missing folder", None, ["bench", "--tabulate", "--out", "missing"], 1, "missing does not exist", ["missing"]),
    ("bench: a missing --merge file", None, ["bench", "--tabulate", "--merge", "gone.csv", "--out", "b"], 1, "--merge gone.csv: no such file", ["b"]),
    ("bench: a missing --data", None, ["bench", "--data", "/nonexistent", "--out", "b"], 1, "--data /nonexistent: no such folder", ["b"]),
    ("evaluate: one 200,000-atom CIF", lambda t: [str(_huge_cif(t)), "--reference", str(_huge_cif(t))], ["evaluate", "--samples"], 1, "no readable", ["m.json"]),
]


@pytest.mark.parametrize("name, setup, args, code, message, absent", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_a_hostile_command_line_is_a_one_line_error(name, setup, args, code, message, absent, tmp_path):
    extra = setup(tmp_path) if setup else []
    done, peak = cli(tmp_path, *args, *extra)
    assert done.returncode == code, done.stderr[-2000:]
    assert "Traceback" not in done.stderr and message in done.stderr, done.stderr[-2000:]
    assert not [p for p in absent if (tmp_path / p).exists()]
    assert peak < FOUR_GB


def test_sample_never_leaves_half_a_file_or_overwrites(tmp_path):
    done, _ = cli(tmp_path, "sample", "--prior", "perov_5", "--num", "400", "--steps", "2", "--out", "x.csv", ulimit_kb=20)
    assert done.returncode == 1 and "could not write x.csv" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.glob("x.csv*"))  # neither a cut file nor a temporary
    (tmp_path / "x.csv").write_text("mine\n")
    done, _ = cli(tmp_path, "sample", "--prior", "perov_5", "--num", "2", "--steps", "2", "--out", "x.csv")
    assert done.returncode == 1 and "x.csv exists; pass --overwrite" in done.stderr and (tmp_path / "x.csv").read_text() == "mine\n"


def test_evaluate_counts_an_unknown_element_as_invalid_and_survives_a_broken_cache(tmp_path):
    samples = _bad_element(tmp_path)
    cache = tmp_path / "cache"
    (cache / "fingerprints").mkdir(parents=True)
    done, _ = cli(tmp_path, "evaluate", "--samples", str(samples), "--reference", str(samples), "--dataset", "perov_5", "--out", "m.json", env={"LATTICEGYM_CACHE": str(cache)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "m.json").read_text())["struct_validity"] == pytest.approx(0.5)  # the Xx row is an invalid sample
    for junk in (cache / "fingerprints").glob("*.npz"):
        junk.write_bytes(b"not an npz")
    done, _ = cli(tmp_path, "evaluate", "--samples", str(samples), "--reference", str(samples), "--dataset", "perov_5", env={"LATTICEGYM_CACHE": str(cache)})
    assert done.returncode == 0 and "ignoring the cache file" in done.stderr and "struct_validity" in done.stdout
    done, _ = cli(tmp_path, "evaluate", "--samples", str(samples), "--reference", str(samples), "--dataset", "perov_5", env={"LATTICEGYM_CACHE": "/dev/null/cache"})
    assert done.returncode == 0 and "could not be written" in done.stderr and "struct_validity" in done.stdout  # an unwritable cache
