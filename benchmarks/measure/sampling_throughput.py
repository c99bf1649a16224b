"""Sampling throughput of a prior: crystals per second for T reverse steps at several batch sizes.

    python -m latticegym.benchmarks.measure.sampling_throughput --prior perov_5 [--device cuda]

Every reverse step is one network call of the same cost, so `--timed-steps K` times K steps and
scales to T (the output says when it did); without it, whole trajectories are timed.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from ...policies.checkpoint import load_prior


def throughput(prior: str, steps: int, batch_size: int, device: str, timed_steps: int | None, seed: int = 0) -> float:
    """Crystals per second of `prior` for T = `steps` at `batch_size` (timing `timed_steps` steps and scaling when given)."""
    policy = load_prior(prior, num_steps=steps, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    run = steps if timed_steps is None else min(timed_steps, steps)
    with torch.no_grad():
        state = policy.initial_state(batch_size, generator)
        policy.step_distribution(state, steps)  # warm-up
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        for k in range(steps, steps - run, -1):
            state = policy.step_distribution(state, k).sample(generator)
        if run == steps:
            policy.decode(state).to_structures()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
    return batch_size / (elapsed * steps / run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="perov_5")
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64, 256])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--timed-steps", type=int, help="time only this many steps of each trajectory and scale up")
    args = parser.parse_args(argv)
    hardware = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"prior {args.prior} on {args.device} ({hardware}), torch {torch.__version__}")
    if args.timed_steps:
        print(f"(each figure times {args.timed_steps} steps and scales to T)")
    print(f"{'T':>6} {'batch':>6} {'crystals/s':>11}")
    for steps in args.steps:
        for batch in args.batch_sizes:
            print(f"{steps:>6} {batch:>6} {throughput(args.prior, steps, batch, args.device, args.timed_steps):>11.2f}", flush=True)


if __name__ == "__main__":
    main()
