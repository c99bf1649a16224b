"""A prior's samples against real data at equal sizes, with the local geometry COV misses.

    python -m latticegym.benchmarks.measure.prior_quality --prior carbon_24 --data ../shared/data/carbon_24_val.csv.gz --num 200

Prints, for N samples of each prior and for N real training crystals (the ceiling at that size,
drawn from what the first prior trained on), the generation metrics against the held-out test
split of pretraining (novelty against each prior's own training crystals), the nearest-neighbour
distance percentiles (5th, 50th, 95th; for the real row, of the test split itself) and the
sampling cost per crystal.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ...crystal import nearest_neighbour_distances
from ...datasets import read_csv
from ...policies.checkpoint import load_prior
from ...datasets import split_dataset, training_data
from ..metrics import evaluate

PERCENTILES = (5, 50, 95)


def nearest_neighbour_percentiles(structures) -> list[float]:
    """Percentiles of each atom's distance to its nearest neighbour (periodic images included), in Å."""
    distances = np.concatenate([nearest_neighbour_distances(s) for s in structures])
    return [float(x) for x in np.percentile(distances, PERCENTILES)]


def measure(prior: str, test: list, train: list | None, num: int, steps: int, seed: int, correctors: int = 0) -> dict:
    """Generation metrics against `test`, nearest-neighbour percentiles and cost per crystal of `num` samples of `prior`."""
    policy = load_prior(prior, num_steps=steps)
    policy.set_num_steps(steps, correctors)
    start = time.perf_counter()
    with torch.no_grad():
        samples = policy.generate(num, seed=seed, batch_size=min(num, 256)).to_structures()
    seconds = time.perf_counter() - start
    return {
        "prior": prior,
        "network": f"{policy.network.config.hidden}x{policy.network.config.layers}",
        "steps": steps,
        "correctors": correctors,
        "seconds_per_crystal": seconds / num,
        "metrics": evaluate(samples, test, train, dataset=policy.spec.name or None),
        "nn": nearest_neighbour_percentiles(samples),
    }


def ceiling(test: list, train: list, num: int, seed: int, dataset: str) -> dict:
    """What `num` real training crystals score against `test`: the best a prior can do at that size."""
    real = [train[i] for i in np.random.default_rng(seed).choice(len(train), size=min(num, len(train)), replace=False)]
    return {"prior": "real data, same size", "network": "", "steps": 0, "seconds_per_crystal": float("nan"), "metrics": evaluate(real, test, None, dataset=dataset), "nn": nearest_neighbour_percentiles(test)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prior", action="append", required=True, help="shipped name or checkpoint path; repeat to compare")
    parser.add_argument("--data", required=True, help="the CSV the priors were pretrained on (its test split is the reference)")
    parser.add_argument("--num", type=int, default=200)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--novelty", action="store_true", help="also compute novelty against the training split (slow on carbon_24)")
    parser.add_argument("--correctors", type=int, default=0, help="Langevin corrector steps per level (default: %(default)s)")
    parser.add_argument("--out", help="also write the results as JSON here")
    args = parser.parse_args(argv)
    specs = [load_prior(p, num_steps=1).spec for p in args.prior]
    data = read_csv(args.data, skip_bad=True)
    test = split_dataset(data, specs[0].extra.get("split_seed", 0))["test"].structures
    trained = [training_data(spec, args.data, data).structures for spec in specs]
    # Novelty matches every sample against the training crystals: slow for one-element data, so optional.
    results = [measure(p, test, known if args.novelty else None, args.num, args.steps, args.seed, args.correctors) for p, known in zip(args.prior, trained)]
    results.append(ceiling(test, trained[0], args.num, args.seed, specs[0].name))
    keys = ("struct_validity", "comp_validity", "cov_recall", "cov_precision", "wdist_density", "uniqueness", "novelty")
    print(f"{args.num} samples per prior and {args.num} real training crystals, each against the held-out test split of {args.data}")
    print(f"{'prior':38s}{'net':>8s}{'s/crystal':>10s}" + "".join(f"{k[:12]:>13s}" for k in keys) + f"{'NN p5/p50/p95 (Å)':>20s}")
    for r in results:
        m = r["metrics"]
        cells = "".join(f"{m[k]:13.4f}" if m.get(k) is not None else f"{'-':>13s}" for k in keys)
        print(f"{str(r['prior'])[-38:]:38s}{r['network']:>8s}{r['seconds_per_crystal']:10.3f}{cells}{'/'.join(f'{x:.2f}' for x in r['nn']):>20s}")
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
