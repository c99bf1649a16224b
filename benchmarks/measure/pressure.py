"""The CHGNet pressures behind the magnetic tasks' ±25 GPa guard: real crystals, prior samples, crushed cells.

    python -m latticegym.benchmarks.measure.pressure [--data ../shared/data/perov_5_val.csv.gz] [--num 64]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from pymatgen.core import Lattice, Structure

from ...crystal import validity
from ...datasets import read_csv
from ...policies.checkpoint import load_prior
from ...rewards.mlip import MLIP

PERCENTILES = (1, 5, 50, 95, 99)


def pressures(mlip: MLIP, structures) -> np.ndarray:
    """CHGNet pressure in GPa (positive: compressed) of each crystal as given."""
    return np.array([-float(np.trace(p.stress)) / 3 for p in mlip.predict(structures, task="efs")])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/perov_5_val.csv.gz", help="real crystals (default: %(default)s)")
    parser.add_argument("--num", type=int, default=64, help="crystals of each kind (default: %(default)s)")
    args = parser.parse_args(argv)
    mlip = MLIP()
    real = read_csv(args.data, skip_bad=True, limit=args.num).structures
    with torch.no_grad():
        sampled = [s for s in load_prior("perov_5").generate(2 * args.num, seed=1).to_structures() if validity(s)][: args.num]
    for label, structures in (("real", real), ("prior samples", sampled)):
        p = pressures(mlip, structures)
        print(f"{label:14s} n={len(p)}  percentiles {PERCENTILES}: {np.percentile(p, PERCENTILES).round(1).tolist()} GPa; largest |P| {np.abs(p).max():.1f}")
    base = Structure(Lattice.cubic(3.9), ["Sc", "Co", "O", "O", "F"], [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
    for factor in (1.0, 0.8, 0.6, 0.4):
        crushed = base.copy()
        crushed.scale_lattice(base.volume * factor)
        point = mlip.predict([crushed], task="efsm")[0]
        print(f"ScCoO2F at {factor:.1f}x volume: P {-np.trace(point.stress) / 3:.0f} GPa, magnetic density {np.abs(point.magmoms).sum() / crushed.volume:.4f} μB/Å^3")


if __name__ == "__main__":
    main()
