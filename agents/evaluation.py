"""A policy judged apart from any run's budget: fresh, unfiltered samples scored by the task's reward."""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from ..benchmarks.metrics import unique_novel
from ..crystal import validity
from ..datasets import training_data
from ..envs.denoising import CrystalDenoisingVectorEnv
from ..envs.tasks import Task, get_task
from ..policies import DiffusionPolicy
from .pipeline import Screen, ScreenConfig, reward_guard
from .rollout import collect, unscored


def known_crystals(prior: DiffusionPolicy, path: str | None) -> list:
    """The prior's training crystals in `path` (novelty and the hull), checked to be of the prior's chemistry; [] without a path."""
    if not path:
        return []
    known = training_data(prior.spec, path)
    if not known.structures:
        raise ValueError(f"--reference {path}: no readable crystals ({len(known.skipped)} rows rejected), so novelty would be meaningless")
    vocabulary = set(prior.spec.elements)
    outside = np.mean([not {el.Z for el in s.composition.elements} <= vocabulary for s in known.structures])
    if outside > 0.5:
        raise ValueError(f"--reference {path}: {outside:.0%} of its crystals hold elements the prior never generates, so no sample could match them (another chemistry?)")
    return known.structures


@torch.no_grad()
def evaluate_policy(
    policy: DiffusionPolicy | None,
    task: Task | str,
    num: int = 256,
    seed: int = 12345,
    batch_size: int = 64,
    label: str = "",
    known: list | None = None,
    relax: bool = False,
    sampler: Callable[[int], list] | None = None,
) -> dict[str, float]:
    """Fresh, unfiltered samples of `policy` scored by the task's plain reward (no diversity filter), apart from any budget.

    Returns the success rate, the SUN success rate (successes that are stable on the MLIP hull, unique
    among the samples and, with `known` training crystals, novel; NaN without them), the mean reward
    and the uniqueness.

    Args:
        policy: the policy to sample (its own T).
        task: a registered task (or its id); its reward scores the samples.
        num: how many crystals.
        seed: sampling seed.
        batch_size: crystals per vector-env batch.
        label: when given, a progress bar names what is being scored.
        known: the prior's training crystals, for novelty and the hull.
        relax: relax before reading E_hull, as the run's screen did.
        sampler: makes the `num` crystals instead of `policy` (an agent that generates its own, seeded by its own seed).
    """
    task = get_task(task) if isinstance(task, str) else task
    reward = task.make_reward()
    if sampler is not None:
        structures = sampler(num)
    else:
        batch_size = min(batch_size, num)
        env = CrystalDenoisingVectorEnv(num_envs=batch_size, prior=policy, reward=unscored, num_steps=policy.num_steps)
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        structures = []
        for b in tqdm(range(-(-num // batch_size)), desc=f"sampling {num} fresh crystals of the {label}", unit="batch", disable=not label):
            structures += collect(env, policy, generator, seed=seed + b).structures
        structures = structures[:num]
    result = reward(structures)
    success = np.array([task.is_success(result, i) for i in range(num)], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without known crystals the SUN rate is NaN, said below
        screened = Screen(reward_guard(reward), known or [], ScreenConfig(drop=False, relax=relax))(structures)
    uniqueness, _, _ = unique_novel(structures, np.array([bool(validity(s)) for s in structures]), None)
    return {
        "success_rate": float(success.mean()),
        "sun_success": float((success & screened.sun).mean()) if known else float("nan"),
        "reward_mean": float(result.values.mean()),
        "uniqueness": uniqueness,
    }
