"""MatInvent's update with one network pass per timestep (its released loop) against one pass per
accumulation window (ours): the time of each, in one run, and how far apart the trained weights end.

    python -m latticegym.benchmarks.measure.update_passes --batch 18 --timesteps 200

`--batch 18` is what `matinvent` trains on per iteration: the top 8 of its 16 scored crystals and 10
replayed ones. Both modes start from the same prior, crystals and rewards, and draw the same noise.
"""

from __future__ import annotations

import argparse
import time

import gymnasium as gym
import numpy as np
import torch

from ...agents import rwkl
from ...agents.rollout import collect
from ...policies.checkpoint import load_prior
from ...rewards.base import RewardResult


def oxygen_fraction(structures) -> RewardResult:
    """A cheap reward in [0, 1], so that the update's reward weights vary."""
    values = np.array([s.composition.get_atomic_fraction("O") for s in structures])
    return RewardResult(values, {"oxygen_fraction": values})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=18, help="crystals the update trains on (default: %(default)s)")
    parser.add_argument("--timesteps", type=int, default=200, help="training timesteps swept (MatInvent: 1000; default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=1, help="sweeps (MatInvent: 3; default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="T of the rollout that makes the crystals (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    prior = load_prior("perov_5", num_steps=args.steps).frozen_copy()
    env = gym.make_vec("LatticeGym/Custom-v0", num_envs=args.batch, vectorization_mode="vector_entry_point", prior=prior, reward=oxygen_fraction)
    rollout = collect(env.unwrapped, load_prior("perov_5", num_steps=args.steps), torch.Generator().manual_seed(args.seed), seed=args.seed)
    config = rwkl.RWKLConfig(timesteps=args.timesteps, epochs=args.epochs, replay_capacity=0)
    default = rwkl.CRYSTALS_PER_PASS
    rwkl.RewardWeightedKL(load_prior("perov_5", num_steps=args.steps), prior, rwkl.RWKLConfig(timesteps=2, epochs=1, replay_capacity=0)).update(rollout, 0)  # warm-up
    seconds, weights = {}, {}
    for name, per_pass in (("per timestep", 1), ("per window", default)):
        rwkl.CRYSTALS_PER_PASS = per_pass
        policy = load_prior("perov_5", num_steps=args.steps)
        start = time.perf_counter()
        rwkl.RewardWeightedKL(policy, prior, config, seed=args.seed).update(rollout, 0)
        seconds[name] = time.perf_counter() - start
        weights[name] = [p.detach() for p in policy.network.parameters()]
    rwkl.CRYSTALS_PER_PASS = default
    moved = max((a - b).abs().max().item() for a, b in zip(weights["per window"], prior.network.parameters()))
    apart = max((a - b).abs().max().item() for a, b in zip(weights["per window"], weights["per timestep"]))
    print(f"batch {args.batch}, {args.timesteps} timesteps x {args.epochs} epochs, {torch.get_num_threads()} torch threads")
    for name, s in seconds.items():
        print(f"  one pass {name:>12s}: {s:7.2f} s")
    print(f"  per timestep / per window: {seconds['per timestep'] / seconds['per window']:.2f}x")
    print(f"  largest weight change {moved:.2e}; largest difference between the two {apart:.2e} ({apart / moved:.1%} of it)")


if __name__ == "__main__":
    main()
