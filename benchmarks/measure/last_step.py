"""How square a prior's cells come out for several last-step stds (`PriorSpec.last_step_std`).

    python -m latticegym.benchmarks.measure.last_step --prior perov_5 --num 400

Every perov_5 cell is cubic, so any skew or unequal edges in samples is noise the sampler left.
Prints, per last-step std, the median and 90th percentile of each cell's largest |angle - 90°| and
of its longest over shortest edge.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ...policies.checkpoint import load_prior


def cell_shape(structures) -> dict[str, list[float]]:
    """Percentiles (50th, 90th) of each cell's largest |angle - 90°| and its edge ratio."""
    skew = [float(np.abs(np.array(s.lattice.angles) - 90).max()) for s in structures]
    ratio = [max(s.lattice.abc) / min(s.lattice.abc) for s in structures]
    return {"skew_deg": np.percentile(skew, [50, 90]).tolist(), "edge_ratio": np.percentile(ratio, [50, 90]).tolist()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", default="perov_5", help="shipped name or checkpoint path (default: %(default)s)")
    parser.add_argument("--num", type=int, default=400, help="samples per setting (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="T (default: %(default)s)")
    parser.add_argument("--stds", default="1.0,0.3,0.1", help="last-step stds to compare (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{args.num} samples of {args.prior}, T = {args.steps}, seed {args.seed}")
    print(f"{'last_step_std':>14s}{'skew p50 (deg)':>16s}{'skew p90':>10s}{'edge ratio p50':>16s}{'p90':>8s}")
    for std in (float(x) for x in args.stds.split(",")):
        policy = load_prior(args.prior, num_steps=args.steps)
        policy.spec.last_step_std = std
        with torch.no_grad():
            shape = cell_shape(policy.generate(args.num, seed=args.seed, batch_size=min(args.num, 256)).to_structures())
        (s50, s90), (r50, r90) = shape["skew_deg"], shape["edge_ratio"]
        print(f"{std:14.2f}{s50:16.2f}{s90:10.2f}{r50:16.4f}{r90:8.4f}")


if __name__ == "__main__":
    main()
