"""Where the guards' thresholds come from: the geometry of real crystals, and the share each guard refuses.

    python -m latticegym.benchmarks.measure.guard_thresholds [--data-dir ../shared/data] [--samples 256] [--write]

For each prior's data (perov_5, carbon_24: every crystal of the shared file) prints the extremes
that the thresholds in `crystal` and `envs.tasks` sit beyond, then, for the guards of that family's
tasks, the share of real crystals, of the shipped prior's samples and of the PyXtal floor's random
symmetric crystals (agents/random_crystals.py, compositions of the real ones) that each guard
refuses, and the pass rate with every guard against the pass rate with the earlier guards alone. `--write`
stores the shares in `guard_shares.json`, which `latticegym envs` shows.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from ...crystal import contact_ratios, coordination_numbers, vacuum_gap
from ...datasets import read_csv
from ...envs.tasks import get_task
from ...files import atomic_text

FAMILY_TASK = {"perov_5": "PerovskiteLowHHI", "carbon_24": "CarbonDensity"}  # a cheap task carrying each family's guards
# The guards before the data-derived geometry and chemistry (at today's thresholds): real crystals must keep
# >= 97% of the pass rate these alone give.
EARLIER_GUARDS = ("structural_validity", "max_atoms_per_a3", "neighbour_range", "min_elements", "compositional_validity")
SHARES = Path(__file__).with_name("guard_shares.json")


def extremes(structures, carbon: bool) -> dict[str, float]:
    """The geometry each threshold bounds, at its extreme over `structures`."""
    ratios = [contact_ratios(s) for s in structures]
    out = {
        "lowest contact / covalent sum": min(r.min() for r in ratios),
        "largest nearest-neighbour / covalent sum": max(r.min(axis=1).max() for r in ratios),
        "lowest mean nearest-neighbour / covalent sum": min(r.min(axis=1).mean() for r in ratios),
        "highest mean nearest-neighbour / covalent sum": max(r.min(axis=1).mean() for r in ratios),
        "lowest density (atoms/Å^3)": min(len(s) / s.volume for s in structures),
        "highest density (atoms/Å^3)": max(len(s) / s.volume for s in structures),
        "widest vacuum gap (Å)": max(vacuum_gap(s) for s in structures),
        "longest cell edge (Å)": max(max(s.lattice.abc) for s in structures),
    }
    if carbon:
        cutoff = get_task(FAMILY_TASK["carbon_24"]).reward_kwargs["guards"]["coordination"][0]
        cn = [coordination_numbers(s, cutoff) for s in structures]
        out[f"fewest neighbours within {cutoff} Å"] = min(c.min() for c in cn)
        out[f"most neighbours within {cutoff} Å"] = max(c.max() for c in cn)
        out[f"lowest mean coordination within {cutoff} Å"] = min(c.mean() for c in cn)
    return {k: float(v) for k, v in out.items()}


def refusals(guards, structures) -> dict[str, np.ndarray]:
    """For each guard that is on, which of `structures` it refuses (each guard on its own)."""
    out = {}
    for name, check in guards.checks().items():
        refused = []
        for s in structures:
            try:
                refused.append(bool(check(s)))
            except Exception:  # a crystal too broken to check is refused, as the reward does
                refused.append(True)
        out[name] = np.array(refused)
    return out


def summary(refused: dict[str, np.ndarray]) -> dict:
    """Shares refused per guard, and the pass rate with every guard and with the earlier guards alone."""
    any_refused = np.any(list(refused.values()), axis=0)
    earlier = np.any([v for k, v in refused.items() if k in EARLIER_GUARDS], axis=0)
    return {
        "crystals": int(len(any_refused)),
        "refused": {k: float(v.mean()) for k, v in refused.items()},
        "pass_rate": float(1 - any_refused.mean()),
        "pass_rate_earlier_guards": float(1 - earlier.mean()),
    }


def measure(family: str, data_dir: Path, samples: int) -> dict:
    """The extremes and the shares refused for one family's real crystals and `samples` of its shipped prior."""
    guards = get_task(FAMILY_TASK[family]).make_reward().guards
    real = read_csv(data_dir / f"{family}_val.csv.gz", skip_bad=True).structures
    out = {"guards": guards.describe(), "extremes": extremes(real, family == "carbon_24"), "real": summary(refusals(guards, real))}
    if samples:
        import torch

        from ...policies.checkpoint import load_prior

        with torch.no_grad():
            sampled = load_prior(family).generate(samples, seed=0, batch_size=min(samples, 256)).to_structures()
        out["prior_samples"] = summary(refusals(guards, sampled))
        out["pyxtal_samples"] = summary(refusals(guards, pyxtal_samples(real, samples)))
    return out


def pyxtal_samples(real: list, n: int, seed: int = 0) -> list:
    """`n` crystals of the PyXtal floor, with compositions drawn from `real`."""
    from ...agents.random_crystals import RandomCrystals

    floor = RandomCrystals(seed=seed)
    floor.attach(None, real)
    return floor.sample(n)


def shares() -> dict:
    """What `--write` stored: per family, the share of real crystals and of prior samples each guard refuses."""
    return json.loads(SHARES.read_text())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"), help="folder of the shared CSVs (default: %(default)s)")
    parser.add_argument("--samples", type=int, default=256, help="prior samples per family, 0 for none (default: %(default)s)")
    parser.add_argument("--write", action="store_true", help=f"store the shares in {SHARES.name}")
    args = parser.parse_args(argv)
    results = {family: measure(family, args.data_dir, args.samples) for family in FAMILY_TASK}
    for family, r in results.items():
        print(f"\n{family}: {r['real']['crystals']} real crystals")
        for k, v in r["extremes"].items():
            print(f"  {k}: {v:.4g}")
        rows = [("real", r["real"])] + [(name.replace("_", " "), r[name]) for name in ("prior_samples", "pyxtal_samples") if name in r]
        for label, s in rows:
            print(f"  {label} ({s['crystals']}): pass rate {s['pass_rate']:.4f} with every guard, {s['pass_rate_earlier_guards']:.4f} with the earlier ones "
                  f"(ratio {s['pass_rate'] / s['pass_rate_earlier_guards']:.4f})")
            for guard, share in s["refused"].items():
                print(f"    {guard:24s} refuses {share:.2%}")
    if args.write:
        atomic_text(SHARES, json.dumps(results, indent=1) + "\n")
        print(f"\nwrote {SHARES}")


if __name__ == "__main__":
    main()
