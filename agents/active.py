"""Active learning on the policy's own samples: sample more crystals than the budget evaluates, send
the true reward only those a surrogate of the reward ranks best, and update with PPO on those.

Per iteration the trainer samples a pool of `oversample` x E crystals and screens it
(agents/pipeline.py); `select` then chooses at most E of the survivors:
- until the surrogate has seen `min_train` evaluated crystals, and always with `acquisition="random"`
  (the ablation), at random;
- otherwise each crystal gets `draws` reward samples from the surrogate's predictive normals, pushed
  through the reward's own shaping; the acquisition is their mean (the expected reward, which already
  credits uncertainty where the shaping is nonlinear, as near a success threshold) plus `kappa` std
  (UCB); a crystal farther from the evaluated ones than the surrogate is trusted gets mean minus one
  std instead, whatever `kappa` is, so a region the surrogate has never seen cannot attract the batch
  by extrapolation;
- the reward's diversity filter is known and cheap, so it is applied ahead: each crystal's reward
  draws are multiplied by the factor the filter would give it, and a batch takes no more crystals of
  one key than the filter still rewards in full (nor more than `max_per_formula` of one key), so no
  evaluation is spent on a formula the run has used up.
Only evaluated crystals reach PPO and the surrogate, so surrogate scores never enter any count.

The baseline. With `baseline="batch"` (the default) PPO normalises the evaluated batch against its
own mean: every crystal of one true reward gets one advantage, whoever chose it, so two crystals of
equal reward are never pushed apart, and what the surrogate prefers is not raised for being
preferred. `baseline="pool"` (the labelled variant `active-pool`) judges the batch against the
whole pool's estimated rewards (true where evaluated, the surrogate's elsewhere). That baseline does
not drop out of the expected gradient: with s(x) the chance of being chosen it adds -b grad E[s(x)],
so it raises whatever the surrogate prefers as well as what the reward prefers
(tests/test_active.py has the two-arm toy).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, fields

import numpy as np
import torch

from ..policies import DiffusionPolicy
from ..rewards.filters import DiversityFilter
from ..rewards.surrogate import RewardSurrogate, SurrogateConfig
from ..options import check_ranges
from .ppo import PPO, PPOConfig
from .pipeline import Pool, Selection
from .rollout import Rollout


DISTRUST = 1.0  # std weight subtracted from the score of a crystal outside the surrogate's trusted region


@dataclass
class ActiveConfig(PPOConfig):
    """PPO's settings plus the selection's.

    Attributes:
        oversample: crystals sampled per crystal evaluated.
        acquisition: "ucb", or "random" for the ablation.
        kappa: UCB weight of the predicted reward's std.
        draws: reward samples per crystal from the surrogate.
        max_per_formula: most crystals of one reduced formula (the diversity filter's key) per evaluated batch.
        min_train: evaluated crystals the surrogate needs before it ranks anything.
        baseline: "batch" (PPO's own, unbiased for the selection) or "pool" (against the whole pool's
            estimated rewards, which also raises what the surrogate prefers; see the module docstring).
        surrogate_scored: crystals of the pool not evaluated, drawn at random, that join the update
            with the surrogate's reward (needs the pool baseline).
    """

    oversample: int = 8  # tuned: docs/standard_suite/tuning.md
    acquisition: str = "ucb"
    kappa: float = 0.0  # tuned
    draws: int = 32
    max_per_formula: int = 3
    min_train: int = 32
    baseline: str = "batch"
    surrogate_scored: int = 0

    def __post_init__(self):
        super().__post_init__()
        check_ranges(
            self, at_least_one=("oversample", "draws", "max_per_formula", "min_train"), non_negative=("kappa",),
            choices={"acquisition": ("ucb", "random"), "baseline": ("pool", "batch")},
        )  # fmt: skip
        if self.surrogate_scored and self.baseline != "pool":
            raise ValueError("surrogate_scored needs baseline='pool': surrogate rewards must be judged against the pool")


class ActiveLearning:
    """PPO+KL on the crystals a surrogate-driven acquisition chose to evaluate (see the module docstring).

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy.
        config: settings (default `ActiveConfig()`).
        seed: seed of the agent's own random draws.
    """

    name = "active"
    default_diversity: dict | None = None
    batch_size = 64
    generates = False
    learns_from_screened = False  # PPO on the evaluated batch alone: it is what the acquisition chose

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: ActiveConfig | None = None, seed: int = 0):
        self.cfg = config or ActiveConfig()
        self.ppo = PPO(policy, prior, PPOConfig(**{f.name: getattr(self.cfg, f.name) for f in fields(PPOConfig)}), seed=seed)
        self.pool_factor = self.cfg.oversample
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.reward = None
        self.diversity: DiversityFilter | None = None
        self.surrogate: RewardSurrogate | None = None

    def attach(self, reward, known: list | None = None) -> None:
        """Give the agent the task's reward: its guards, shaping and objectives (never its evaluations)."""
        if not hasattr(reward, "objectives"):
            raise ValueError(f"the active agent needs a CompositeReward to model, got {type(reward).__name__}")
        self.reward = reward
        self.diversity = next((f for f in reward.filters if isinstance(f, DiversityFilter)), None)
        self.surrogate = RewardSurrogate(reward, SurrogateConfig(min_train=self.cfg.min_train), seed=self.seed)

    def select(self, pool: Pool, n: int) -> Selection:
        """At most `n` of the pool's survivors to evaluate; with the pool baseline, the context holds its
        estimated rewards (and the surrogate-scored trajectories) for `update`."""
        structures = pool.structures
        passing = pool.candidates
        keys, room, factor = self._outlook(structures)
        score, estimate, pessimistic = np.zeros(len(passing)), None, None
        if self.surrogate.ready and len(passing) and (self.cfg.acquisition == "ucb" or self.cfg.baseline == "pool"):
            rewards, trusted = self.surrogate.predicted_rewards([structures[i] for i in passing], self.cfg.draws, self.rng)
            rewards = rewards * factor[passing]
            mean, std = rewards.mean(0), rewards.std(0)
            if self.cfg.acquisition == "ucb":
                score = mean + np.where(trusted, self.cfg.kappa * std, -DISTRUST * std)
            estimate, pessimistic = np.zeros(len(structures)), np.zeros(len(structures))
            estimate[passing] = mean
            pessimistic[passing] = mean - np.where(trusted, 0.0, DISTRUST * std)
        order = passing[np.lexsort((self.rng.random(len(passing)), -score))]  # best first, ties at random
        chosen, per_key = [], Counter()
        for i in order:
            if per_key[keys[i]] < min(self.cfg.max_per_formula, room[i]):
                chosen.append(i)
                per_key[keys[i]] += 1
            if len(chosen) == n:
                break
        taken = set(chosen)
        chosen = np.array((chosen + [i for i in order if i not in taken])[:n], dtype=int)  # capped keys fill what room is left
        context = {}
        if estimate is not None and self.cfg.baseline == "pool":
            context["pool_estimate"] = (estimate, chosen)
            if self.cfg.surrogate_scored:
                others = np.setdiff1d(np.arange(len(structures)), chosen)
                picked = self.rng.permutation(others)[: self.cfg.surrogate_scored]
                extra = pool.trajectories.index(picked.tolist())
                extra.rewards = torch.as_tensor(pessimistic[picked], dtype=torch.float32, device=extra.rewards.device)
                context["surrogate_scored"] = extra
        return Selection(chosen, context)

    def _outlook(self, structures: list) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Keys, full-reward room and filter factor per crystal (formulas, no limit and 1 without a diversity filter)."""
        if self.diversity is None:
            n = len(structures)
            return [s.composition.reduced_formula for s in structures], np.full(n, self.cfg.max_per_formula), np.ones(n)
        return self.diversity.outlook(structures)

    def baseline(self, rollout: Rollout) -> tuple[float, float] | None:
        """(mean, std) to judge the batch against: None for the batch's own, or the pool's estimated rewards
        with the evaluated crystals' true rewards in place."""
        if "pool_estimate" not in rollout.context:
            return None
        estimate, chosen = rollout.context["pool_estimate"]
        estimate = estimate.copy()
        estimate[chosen] = rollout.result.values
        return float(estimate.mean()), float(estimate.std())

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        baseline = self.baseline(rollout)
        extra = rollout.context.get("surrogate_scored")
        stats = self.surrogate.observe(rollout.structures, rollout.result.properties, rollout.result.ok)
        stats.update(self.ppo.update(rollout, iteration, baseline, extra))
        stats["surrogate_scored"] = float(len(extra)) if extra is not None else 0.0
        stats["pool_reward_estimate"] = baseline[0] if baseline is not None else float("nan")
        return stats

    def state_dict(self) -> dict:
        return {"ppo": self.ppo.state_dict(), "surrogate": self.surrogate.state_dict(), "rng": json.dumps(self.rng.bit_generator.state)}

    def load_state_dict(self, state: dict) -> None:
        self.ppo.load_state_dict(state["ppo"])
        self.surrogate.load_state_dict(state["surrogate"])
        self.rng.bit_generator.state = json.loads(state["rng"])
