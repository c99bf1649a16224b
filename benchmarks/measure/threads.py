"""What torch's intra-op threads buy for our model sizes, on an idle and on a loaded machine.

    python -m latticegym.benchmarks.measure.threads [--threads 1,2] [--load 4] [--repeats 3]

Times one 100-step single-crystal episode of PerovskiteLowHHI-v0 and one 100-step batch of 64
crystals from the perov_5 prior, with each thread count, first on the machine as it is, then with
`--load` busy processes running beside it (a shared machine). Prints the median of `--repeats`
runs and each figure's ratio to one thread under the same load.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import time

import gymnasium as gym
import torch

import latticegym  # noqa: F401  (registers the envs)

from ...agents import PriorAgent
from ...policies.checkpoint import load_prior

ENV_ID = "LatticeGym/PerovskiteLowHHI-v0"


def _spin(stop) -> None:
    while not stop.is_set():
        sum(i * i for i in range(10_000))


def episode_seconds(steps: int = 100) -> float:
    """One single-crystal episode, the prior acting."""
    env = gym.make(ENV_ID, num_steps=steps)
    obs, _ = env.reset(seed=0)
    agent = PriorAgent(env.unwrapped.policy, seed=0)
    start = time.perf_counter()
    done = False
    while not done:
        obs, _, done, _, _ = env.step(agent.act(obs))
    return time.perf_counter() - start


def batch_seconds(batch: int = 64, steps: int = 100) -> float:
    """One batch sampled with the bare sampler."""
    policy = load_prior("perov_5", num_steps=steps)
    start = time.perf_counter()
    with torch.no_grad():
        policy.generate(batch, seed=0, batch_size=batch)
    return time.perf_counter() - start


def measure(threads: int, repeats: int, steps: int = 100) -> dict[str, float]:
    """Median seconds of the episode and the batch with `threads` intra-op threads."""
    torch.set_num_threads(threads)
    episode_seconds(5)  # warm-up
    return {
        "episode": statistics.median(episode_seconds(steps) for _ in range(repeats)),
        "batch64": statistics.median(batch_seconds(steps=steps) for _ in range(repeats)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default: %(default)s)")
    parser.add_argument("--load", type=int, default=4, help="busy processes for the loaded case (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is printed (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=100, help="reverse-diffusion steps T (default: %(default)s)")
    args = parser.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    print(f"{'load':>6s}{'threads':>9s}{'episode s':>11s}{'ratio':>7s}{'batch64 s':>11s}{'ratio':>7s}")
    for load in (0, args.load):
        stop = mp.Event()
        spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(load)]
        for p in spinners:
            p.start()
        try:
            rows = {t: measure(t, args.repeats, args.steps) for t in counts}
        finally:
            stop.set()
            for p in spinners:
                p.join()
        base = rows[counts[0]]
        for t, r in rows.items():
            print(f"{load:6d}{t:9d}{r['episode']:11.3f}{r['episode'] / base['episode']:7.2f}{r['batch64']:11.3f}{r['batch64'] / base['batch64']:7.2f}", flush=True)


if __name__ == "__main__":
    main()
