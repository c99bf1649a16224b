"""PPO over denoising steps (DDPO-style) with a closed-form KL penalty to the frozen prior.

Per iteration: normalise each trajectory's final reward into an advantage, mix in replayed
trajectories, then for a few epochs over minibatches of trajectories take a random subset of steps
and minimise

    -min(r_k A, clip(r_k, 1 - eps, 1 + eps) A) + beta * KL_k(policy || prior)

averaged over the sampled steps, where r_k is the ratio of the step's joint density (summed, not
averaged, over atoms and fields) under the current and the sampling policy. For replayed
trajectories the sampling policy is an older one, so r_k is the importance ratio that discounts
stale samples. The optimizer keeps its state across iterations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..files import restore_generator
from ..policies import DiffusionPolicy
from .base import StepGradients, minibatches, normalized_advantages, random_steps, step_terms
from ..options import check_ranges
from .replay import Replay
from .pipeline import FirstSurvivors
from .rollout import Rollout, Trajectories


@dataclass
class PPOConfig:
    """PPO over denoising steps.

    Attributes:
        lr: Adam learning rate, kept across iterations.
        epochs: passes over each batch.
        minibatch_size: trajectories per minibatch.
        step_fraction: share of the T steps drawn afresh per minibatch; in (0, 1].
        clip_range: clip on the ratio of joint step densities.
        kl_coef: weight of the per-step KL to the prior (nats).
        adaptive_kl_target: when set, kl_coef doubles or halves after each update to keep the trajectory KL within 1.5x of it; None keeps kl_coef fixed.
        max_grad_norm: gradient clip per sampled step.
        advantage_groups: "batch", or "num_atoms" to normalise among crystals of one size.
        replay_capacity: trajectories kept in replay (0 disables it).
        replay_mix: fraction of each update's trajectories drawn from replay; in [0, 1).
        replay_top_k: best trajectories of each batch offered to replay.
        replay_dedup: replay key, "composition" or "structure".
    """

    lr: float = 1e-3  # tuned: docs/standard_suite/tuning.md
    epochs: int = 2  # passes over each batch
    minibatch_size: int = 16  # trajectories
    step_fraction: float = 0.2  # of the T steps, drawn afresh per minibatch
    clip_range: float = 0.2  # on the ratio of joint step densities
    kl_coef: float = 0.01  # beta, per step of KL
    adaptive_kl_target: float | None = None  # trajectory KL; when set, kl_coef adapts to track it
    max_grad_norm: float = 1.0  # per sampled step (see base.StepGradients)
    advantage_groups: str = "batch"  # or "num_atoms": normalise among crystals of one size
    replay_capacity: int = 64  # 0 disables replay
    replay_mix: float = 0.2  # fraction of each update's trajectories drawn from replay
    replay_top_k: int = 8  # best trajectories of each batch offered to replay
    replay_dedup: str = "composition"  # or "structure"

    def __post_init__(self):
        check_ranges(self, positive=("clip_range", "max_grad_norm", "adaptive_kl_target"), at_least_one=("epochs", "minibatch_size"),
                     non_negative=("kl_coef", "replay_capacity", "replay_top_k"), unit=("lr", "step_fraction"), fraction=("replay_mix",),
                     choices={"advantage_groups": ("batch", "num_atoms"), "replay_dedup": ("composition", "structure")})


class PPO(FirstSurvivors):
    """DDPO-style PPO on the reverse-diffusion MDP with a closed-form per-step KL penalty to the prior.

    Each update normalises per-trajectory advantages, then for `epochs` passes over minibatches draws a
    random subset of steps, and minimises the clipped surrogate on the ratio of joint step densities
    plus `kl_coef` times the per-step KL. Replayed trajectories keep their behaviour log-probs, so the
    ratio is their importance weight.

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy (the KL reference).
        config: settings (default `PPOConfig()`).
        seed: seed of the agent's own random draws.
    """

    name = "ppo"
    default_diversity: dict | None = None

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: PPOConfig | None = None, seed: int = 0):
        self.policy, self.prior = policy, prior
        self.cfg = cfg = config or PPOConfig()
        self.optimizer = torch.optim.Adam(policy.network.parameters(), lr=cfg.lr)
        self.kl_coef = cfg.kl_coef
        self.replay = Replay(cfg.replay_capacity, cfg.replay_dedup) if cfg.replay_capacity else None
        self.rng = torch.Generator(device=policy.device).manual_seed(seed)

    def update(self, rollout: Rollout, iteration: int, baseline: tuple[float, float] | None = None, extra: Trajectories | None = None) -> dict[str, float]:
        """One PPO update on `rollout`.

        Args:
            baseline: (mean, std) to normalise rewards by in place of the batch's own, for a batch
                that is not a random sample of the policy's crystals (see agents/active.py).
            extra: more trajectories with rewards from elsewhere (a surrogate), normalised by
                `baseline` too; they join the gradient but never replay.
        """
        cfg = self.cfg
        fresh = rollout.trajectories
        mean, std = baseline if baseline is not None else (fresh.rewards.mean(), fresh.rewards.std(unbiased=False))
        against = lambda r: (r - mean) / (std + 1e-8)  # noqa: E731  one yardstick for fresh, extra and replayed rewards
        if cfg.advantage_groups == "num_atoms" and baseline is None:
            advantages = normalized_advantages(fresh.rewards, fresh.mask.sum(1))
        else:
            advantages = against(fresh.rewards)
        data = fresh
        if extra is not None:
            if baseline is None:
                raise ValueError("extra trajectories need a baseline: their rewards are not the batch's")
            extra = extra.to(fresh.rewards.device)
            data, advantages = Trajectories.cat([fresh, extra]), torch.cat([advantages, against(extra.rewards)])
        replayed = 0
        if self.replay is not None:
            self.replay.purge_penalised(rollout)  # a stored winner the filter now zeroes is no winner
            old = self.replay.sample(round(len(fresh) * cfg.replay_mix / (1 - cfg.replay_mix)), self.rng)
            if old is not None:
                old = old.to(fresh.rewards.device)
                # Judge replayed rewards against this batch: a stale winner is only as good as it is now.
                advantages = torch.cat([advantages, against(old.rewards)])
                data, replayed = Trajectories.cat([data, old]), len(old)

        stats: dict[str, list[float]] = {"policy_loss": [], "step_kl": [], "approx_kl": [], "clipfrac": [], "grad_norm": []}
        self.policy.train()
        for batch, adv in minibatches(data, advantages, cfg.epochs, cfg.minibatch_size, self.rng):
            steps = random_steps(data.num_steps, cfg.step_fraction, self.rng)
            grads = StepGradients(self.policy.network.parameters(), cfg.max_grad_norm)
            for k in steps:
                log_prob, old_log_prob, kl = step_terms(self.policy, self.prior, batch, k)
                log_ratio = log_prob - old_log_prob
                ratio = log_ratio.clamp(max=20.0).exp()  # clamp: a far-off replayed step must not overflow
                clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                pg = -torch.minimum(ratio * adv, clipped * adv).mean()
                grads.add(pg + self.kl_coef * kl.mean())
                with torch.no_grad():
                    stats["policy_loss"].append(pg.item())
                    stats["step_kl"].append(kl.mean().item())
                    stats["approx_kl"].append(((ratio - 1) - log_ratio).mean().item())
                    stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_range).float().mean().item())
            grads.apply()
            stats["grad_norm"].append(float(np.median(grads.norms)))
            self.optimizer.step()
        self.policy.eval()

        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["trajectory_kl"] = out.pop("step_kl") * data.num_steps
        out["kl_coef"] = self.kl_coef
        out["replayed"] = float(replayed)
        if cfg.adaptive_kl_target is not None:
            if out["trajectory_kl"] > 1.5 * cfg.adaptive_kl_target:
                self.kl_coef *= 2.0
            elif out["trajectory_kl"] < cfg.adaptive_kl_target / 1.5:
                self.kl_coef /= 2.0
        if self.replay is not None:
            self.replay.add(fresh, rollout.structures, rollout.result.ok, cfg.replay_top_k, iteration)
            out["replay_size"] = float(len(self.replay))
        return out

    def state_dict(self) -> dict:
        return {
            "optimizer": self.optimizer.state_dict(),
            "kl_coef": self.kl_coef,
            "replay": self.replay.state_dict() if self.replay is not None else None,
            "rng": self.rng.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.kl_coef = state["kl_coef"]
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        restore_generator(self.rng, state["rng"], "the ppo agent's generator")
