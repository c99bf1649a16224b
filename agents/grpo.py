"""GRPO over denoising steps: group-relative advantages, a clipped per-step ratio, and a KL term; no value function.

Per iteration: each crystal's reward is standardised within its group, the crystals of one atom
count (what the denoiser is conditioned on, as OMatG-IRL groups samples of one structure); then for
`epochs` passes over minibatches a random subset of steps is taken and

    -min(r_k A, clip(r_k, 1 - eps, 1 + eps) A) + beta * KL_k - entropy_coef * H_k

is minimised, with r_k the ratio of step k's density under the current and the sampling policy.
Two published settings disagree, so both are offered:
- "omatg" (the default, and the benchmark's): OMatG-IRL (FERMat-ML/OMatG at ed80cb8,
  `omg/omg_irl/conf_examples/velocity_based_omatg_irl/rl_config.yaml`): groups of 64 (line 8),
  clip 0.2812 (line 18), 4 epochs (line 19), a KL weight of 1e-3 to the prior (line 27,
  `pos_regularization`), Adam at lr 1.17e-4 (line 41), gradient norm clip 1 (line 7). Here the KL
  is our closed form to the frozen prior, and the log-probability the step's joint density.
- "chemeleon2": Chemeleon2-RL (hspark1212/chemeleon2 at 6e86960, `configs/rl_module/rl_module.yaml`
  lines 8-13, `configs/experiment/mp_20/rl_dng.yaml` lines 13-14, `src/rl_module/rl_module.py`
  lines 164-193): per-step log-probs averaged over dimensions, clip 1e-3, the k3 estimate of the KL
  to the rollout policy with weight 1, entropy weight 1e-5, AdamW at lr 1e-5, 2 minibatches.
No replay: GRPO learns from the batch it sampled, screened-out crystals included at the failure
reward (they are part of the group the policy produced).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..files import restore_generator
from ..policies import DiffusionPolicy
from .base import StepGradients, minibatches, normalized_advantages, random_steps, step_terms
from ..options import check_ranges
from .pipeline import FirstSurvivors
from .rollout import Rollout, Trajectories


@dataclass
class GRPOConfig:
    """GRPO settings; the defaults are OMatG-IRL's ("omatg", see the module docstring).

    Attributes:
        lr: learning rate.
        epochs: passes over each batch.
        minibatch_size: trajectories per minibatch.
        step_fraction: share of the T steps drawn afresh per minibatch; in (0, 1].
        clip_range: clip on the per-step ratio.
        kl_coef: weight of the KL term.
        kl_to: "prior" (closed-form KL to the frozen prior) or "rollout" (k3 estimate against the sampling policy).
        log_prob: "sum" (the step's joint density) or "mean" (averaged over its dimensions, as Chemeleon2).
        entropy_coef: weight of the step's entropy estimate (-log p) as a bonus.
        optimizer: "adam" or "adamw".
        max_grad_norm: gradient clip per sampled step.
    """

    lr: float = 1.17e-4
    epochs: int = 4
    minibatch_size: int = 16
    step_fraction: float = 0.2
    clip_range: float = 0.2812
    kl_coef: float = 1e-3
    kl_to: str = "prior"
    log_prob: str = "sum"
    entropy_coef: float = 0.0
    optimizer: str = "adam"
    max_grad_norm: float = 1.0

    def __post_init__(self):
        check_ranges(
            self, positive=("clip_range", "max_grad_norm"), at_least_one=("epochs", "minibatch_size"), non_negative=("kl_coef", "entropy_coef"),
            unit=("lr", "step_fraction"), choices={"kl_to": ("prior", "rollout"), "log_prob": ("sum", "mean"), "optimizer": ("adam", "adamw")},
        )  # fmt: skip


# Chemeleon2-RL's settings (module docstring): the `grpo-chemeleon2` label of the benchmark.
CHEMELEON2 = {"lr": 1e-5, "epochs": 1, "minibatch_size": 32, "clip_range": 1e-3, "kl_coef": 1.0, "kl_to": "rollout", "log_prob": "mean", "entropy_coef": 1e-5, "optimizer": "adamw"}


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Each reward standardised within its group (population std), so every group's advantages have mean zero."""
    return normalized_advantages(rewards, groups)


def dimensions(batch: Trajectories) -> torch.Tensor:
    """Random variables of one reverse step per crystal: atom types and coordinates of each atom, and the lattice."""
    return batch.mask.sum(1) * (batch.types.shape[-1] + 3) + 9


class GRPO(FirstSurvivors):
    """Group-relative policy optimisation over denoising steps (see the module docstring).

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy (the KL reference with `kl_to="prior"`).
        config: settings (default `GRPOConfig()`, OMatG-IRL's).
        seed: seed of the agent's own random draws.
    """

    name = "grpo"
    default_diversity: dict | None = None

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: GRPOConfig | None = None, seed: int = 0):
        self.policy, self.prior = policy, prior
        self.cfg = cfg = config or GRPOConfig()
        optimizer = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
        self.optimizer = optimizer(policy.network.parameters(), lr=cfg.lr)
        self.rng = torch.Generator(device=policy.device).manual_seed(seed)

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        cfg = self.cfg
        data = rollout.trajectories
        advantages = group_advantages(data.rewards, data.mask.sum(1))
        stats: dict[str, list[float]] = {"policy_loss": [], "kl": [], "clipfrac": [], "grad_norm": []}
        self.policy.train()
        for batch, adv in minibatches(data, advantages, cfg.epochs, cfg.minibatch_size, self.rng):
            scale = dimensions(batch).to(adv.dtype) if cfg.log_prob == "mean" else 1.0
            grads = StepGradients(self.policy.network.parameters(), cfg.max_grad_norm)
            for k in random_steps(data.num_steps, cfg.step_fraction, self.rng):
                log_prob, old_log_prob, kl_prior = step_terms(self.policy, self.prior, batch, k)
                log_prob, old_log_prob = log_prob / scale, old_log_prob / scale
                log_ratio = log_prob - old_log_prob
                ratio = log_ratio.clamp(max=20.0).exp()
                clipped = ratio.clamp(1 - cfg.clip_range, 1 + cfg.clip_range)
                pg = -torch.minimum(ratio * adv, clipped * adv).mean()
                kl = kl_prior if cfg.kl_to == "prior" else (-log_ratio).exp() - 1 + log_ratio  # k3 of KL(policy || rollout)
                grads.add(pg + cfg.kl_coef * kl.mean() + cfg.entropy_coef * log_prob.mean())
                with torch.no_grad():
                    stats["policy_loss"].append(pg.item())
                    stats["kl"].append(kl.mean().item())
                    stats["clipfrac"].append(((ratio - 1).abs() > cfg.clip_range).float().mean().item())
            grads.apply()
            stats["grad_norm"].append(float(np.median(grads.norms)))
            self.optimizer.step()
        self.policy.eval()
        out = {k: float(np.mean(v)) for k, v in stats.items()}
        out["step_kl"] = out.pop("kl")
        out["groups"] = float(len(data.mask.sum(1).unique()))
        return out

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        restore_generator(self.rng, state["rng"], "the grpo agent's generator")
