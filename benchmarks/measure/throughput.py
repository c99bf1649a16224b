"""Throughput figures, each as ratios measured in one run:
- the vector env against the bare sampler;
- cached+batched CHGNet against raw CHGNet;
- one training iteration broken down into sampling, reward and update;
- reward evaluation (CHGNet relaxations) on 1, 2 and all local CPUs' worth of Ray actors.

    python -m latticegym.benchmarks.measure.throughput [--prior perov_5] [--batch 64] [--steps 100]

Comparisons run in one process, one after the other, so their ratios mean something on a noisy
machine; absolute times mean something only on dedicated hardware.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np
import torch

from ...agents import PriorAgent
from ...crystal import structural_validity
from ...envs.denoising import CrystalDenoisingVectorEnv
from ...policies import load_prior
from ...rewards import Cached, CompositeReward, Objective, RewardResult
from ...rewards.mlip import MLIP, _chgnet
from ...rewards.properties import EnergyPerAtom


def bare_sampler(policy, batch: int, seed: int) -> float:
    """Seconds for one batch through the bare sampler loop (no env)."""
    start = time.perf_counter()
    with torch.no_grad():
        generator = torch.Generator().manual_seed(seed)
        state = policy.initial_state(batch, generator)
        for k in range(policy.episode_length, 0, -1):
            state = policy.step_distribution(state, k).sample(generator)
        policy.decode(state).to_structures()
    return time.perf_counter() - start


def vector_env(policy, batch: int, seed: int) -> float:
    """Seconds for one batch through the vector env with a free reward."""
    env = CrystalDenoisingVectorEnv(num_envs=batch, prior=policy, reward=lambda s: RewardResult(np.zeros(len(s))))
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    agent = PriorAgent(policy, seed)
    for _ in range(policy.episode_length):
        obs, *_ = env.step(agent.act(obs))
    return time.perf_counter() - start


def iteration_breakdown(env_id: str, agent: str, batch: int, steps: int, iterations: int) -> dict[str, float]:
    """Share of an RL iteration spent sampling, scoring and updating, averaged over `iterations`."""
    from ...agents.trainer import TrainConfig, Trainer

    with tempfile.TemporaryDirectory() as out:
        Trainer(TrainConfig(env_id=env_id, agent=agent, iterations=iterations, batch_size=batch, steps=steps, out=out)).run(progress=False)
        import pandas as pd

        metrics = pd.read_csv(os.path.join(out, "metrics.csv")).iloc[1:] if iterations > 1 else pd.read_csv(os.path.join(out, "metrics.csv"))
    return {k: float(metrics[k].mean()) for k in ("t_sample", "t_reward", "t_update")}


def ray_scaling(structures: list, relax_steps: int) -> dict[int, float]:
    """Seconds to relax `structures` with CHGNet in-process (key 0) and on 1, 2, ... all-CPU Ray actors."""
    import ray

    from ...rewards.parallel import RaySource, connect

    source = EnergyPerAtom(MLIP(), relax=True, steps=relax_steps, fmax=0.01)
    source(structures[:1])  # warm-up: model loaded
    start = time.perf_counter()
    source(structures)
    times = {0: time.perf_counter() - start}
    connect("local")
    cpus = int(ray.cluster_resources().get("CPU", 1))
    for n in sorted({1, min(2, cpus), cpus}):
        remote = RaySource(source, num_workers=n)
        remote(structures[:n])  # warm-up: every actor has its model
        start = time.perf_counter()
        remote(structures)
        times[n] = time.perf_counter() - start
        for w in remote.workers:
            ray.kill(w)
    ray.shutdown()
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prior", default="perov_5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--reward-batch", type=int, default=64, help="crystals sampled for the CHGNet comparison")
    parser.add_argument("--task", default="LatticeGym/PerovskiteFormationEnergy-v0", help="task of the iteration breakdown")
    parser.add_argument("--iterations", type=int, default=3, help="training iterations timed (the first is left out when more than one)")
    parser.add_argument("--ray-structures", type=int, default=16, help="crystals relaxed for the Ray scaling (0 skips it)")
    parser.add_argument("--relax-steps", type=int, default=50)
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

    parts = iteration_breakdown(args.task, "ppo", args.batch, args.steps, args.iterations)
    total = sum(parts.values())
    print(f"one PPO iteration on {args.task}, batch {args.batch}, T={args.steps} (mean of {max(1, args.iterations - 1)})")
    for name, seconds in parts.items():
        print(f"  {name[2:]:8s} {seconds:7.2f} s  {100 * seconds / total:5.1f}%")

    if args.ray_structures:
        times = ray_scaling(structures[: args.ray_structures], args.relax_steps)
        print(f"CHGNet relaxation ({args.relax_steps} FIRE steps) of {min(args.ray_structures, n)} crystals: speed-up over 1 Ray actor")
        print(f"  in-process (no Ray)  {times[1] / times[0]:.2f}x")
        for workers in sorted(k for k in times if k):
            print(f"  {workers} actor(s)           {times[1] / times[workers]:.2f}x")


if __name__ == "__main__":
    main()
