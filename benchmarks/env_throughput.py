"""Overhead of the vector env over the bare sampler, and cached+batched CHGNet against raw CHGNet.

    python -m latticegym.benchmarks.env_throughput [--prior perov_5] [--batch 64] [--steps 100]

Both comparisons run in one process, one after the other, so their ratio is meaningful on a noisy
machine; absolute times mean something only on dedicated hardware.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ..crystal import structural_validity
from ..envs.denoising import CrystalDenoisingVectorEnv
from ..policies import load_prior
from ..rewards import Cached, CompositeReward, Objective, RewardResult
from ..rewards.mlip import MLIP, _chgnet
from ..rewards.properties import EnergyPerAtom


def bare_sampler(policy, batch: int, seed: int) -> float:
    start = time.perf_counter()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        state = policy.initial_state(batch, generator)
        for k in range(policy.num_steps, 0, -1):
            state = policy.step_distribution(state, k).sample(generator)
        policy.decode(state).to_structures()
    return time.perf_counter() - start


def vector_env(policy, batch: int, seed: int) -> float:
    env = CrystalDenoisingVectorEnv(num_envs=batch, prior=policy, reward=lambda s: RewardResult(np.zeros(len(s))))
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    for _ in range(policy.num_steps):
        obs, *_ = env.step(env.prior.act(obs))
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="perov_5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reward-batch", type=int, default=64, help="crystals sampled for the CHGNet comparison")
    args = parser.parse_args(argv)
    policy = load_prior(args.prior, num_steps=args.steps)

    bare, env = [], []
    for seed in range(args.repeats):  # interleaved, so background load hits both alike
        bare.append(bare_sampler(policy, args.batch, seed))
        env.append(vector_env(policy, args.batch, seed))
    print(f"sampler vs vector env, prior {args.prior}, batch {args.batch}, T={args.steps}, best of {args.repeats} interleaved runs")
    print(f"  bare sampler  {min(bare):.3f} s")
    print(f"  vector env    {min(env):.3f} s")
    print(f"  env overhead  {100 * (min(env) / min(bare) - 1):+.1f}%")

    structures = [s for s in policy.generate(args.reward_batch, seed=0).to_structures() if structural_validity(s)]
    model = _chgnet("cpu")
    model.predict_structure(structures, task="efsm", batch_size=32)  # warm-up
    start = time.perf_counter()
    model.predict_structure(structures, task="efsm", batch_size=32)
    raw = time.perf_counter() - start
    reward = CompositeReward([Objective(Cached(EnergyPerAtom(MLIP())))])
    start = time.perf_counter()
    reward(structures)
    first = time.perf_counter() - start
    start = time.perf_counter()
    reward(structures)  # a second batch of the same crystals: repeats, as RL produces them
    second = time.perf_counter() - start
    n = len(structures)
    print(f"CHGNet on {n} valid sampled crystals (structures/s)")
    print(f"  raw batched predict_structure   {n / raw:8.1f}")
    print(f"  cached reward, new crystals     {n / first:8.1f}  ({raw / first:.2f}x raw)")
    print(f"  cached reward, repeated batch   {n / second:8.1f}  ({raw / second:.2f}x raw)")


if __name__ == "__main__":
    main()
