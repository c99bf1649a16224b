"""What the screen's stability check costs per crystal: a CHGNet single point against an ASE FIRE relaxation.

    python -m latticegym.benchmarks.measure.screen_cost [--crystals 32] [--steps 100] [--data ../shared/data]

Samples crystals from the perov_5 prior, then screens the same crystals twice in one process, relax
off and on (agents/pipeline.py; the hull and novelty index built from the training split first,
outside the timing). Prints seconds per crystal of each, their ratio (this machine is noisy, so
the ratio is the figure to read), the MLIP calls per crystal, and how many crystals each screen
passes.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crystals", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="reverse-diffusion steps of the samples")
    parser.add_argument("--hull-references", type=int, default=500)
    parser.add_argument("--data", default="../shared/data")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    from ...agents.pipeline import Screen, ScreenConfig
    from ...agents.evaluation import known_crystals
    from ...envs.tasks import get_task
    from ...policies import load_prior

    prior = load_prior("perov_5", num_steps=args.steps)
    known = known_crystals(prior, str(Path(args.data) / "perov_5_val.csv.gz"))
    guard = get_task("PerovskiteLowHHI").make_reward().refusal
    with torch.no_grad():
        structures = prior.generate(args.crystals, seed=0).to_structures()
    print(f"{len(structures)} prior samples (T={args.steps}); hull of {args.hull_references} training crystals + CHGNet elemental references")
    rows = []
    for relax in (False, True):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            screen = Screen(guard, known, ScreenConfig(relax=relax, hull_references=args.hull_references))
            screen([structures[0]])  # warm-up: CHGNet weights, the hull's reference energies
            calls0, steps0 = screen.e_hull.evaluations, screen.relax_steps
            start = time.perf_counter()
            out = screen(structures)
            seconds = time.perf_counter() - start
        checked = screen.e_hull.evaluations - calls0
        rows.append((relax, seconds / len(structures), checked, screen.relax_steps - steps0, int(out.passed.sum()), int(out.stable.sum())))
    print(f"{'E_hull from':<14}{'s/crystal':>10}{'E_hull calls':>13}{'MLIP calls/checked':>20}{'passed':>8}{'stable':>8}")
    for relax, per, checked, steps, passed, stable in rows:
        calls = steps / max(checked, 1) if relax else 1.0
        print(f"{'relaxation' if relax else 'single point':<14}{per:>10.3f}{checked:>13d}{calls:>20.1f}{passed:>8d}{stable:>8d}")
    print(f"relaxation / single point, seconds per crystal screened: {rows[1][1] / rows[0][1]:.1f}x")
    print("E_hull calls: crystals that reached the stability check (they passed the guards, uniqueness and novelty)")


if __name__ == "__main__":
    main()
