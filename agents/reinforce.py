"""REINFORCE with a batch-mean baseline: the simple reference policy gradient.

One gradient step per batch on (R - mean R) * sum_k log p(x_{k-1} | x_k), estimated on a random
subset of steps, plus the same closed-form KL penalty to the prior as PPO.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..files import restore_generator
from ..policies import DiffusionPolicy
from .base import StepGradients, random_steps, step_terms
from ..options import check_ranges
from .pipeline import FirstSurvivors
from .rollout import Rollout


@dataclass
class REINFORCEConfig:
    """REINFORCE settings.

    Attributes:
        lr: Adam learning rate.
        step_fraction: share of the T steps in each update; in (0, 1].
        kl_coef: weight of the per-step KL to the prior.
        max_grad_norm: gradient clip per sampled step.
    """

    lr: float = 1e-3  # tuned: docs/standard_suite/tuning.md
    step_fraction: float = 0.2
    kl_coef: float = 0.001  # tuned
    max_grad_norm: float = 1.0  # per sampled step (see base.StepGradients)

    def __post_init__(self):
        check_ranges(self, positive=("max_grad_norm",), non_negative=("kl_coef",), unit=("lr", "step_fraction"))


class REINFORCE(FirstSurvivors):
    """One policy-gradient step per batch on (R - mean R) times the trajectory log-prob, with the KL penalty.

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy.
        config: settings (default `REINFORCEConfig()`).
        seed: seed of the agent's own random draws.
    """

    name = "reinforce"
    default_diversity: dict | None = None

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: REINFORCEConfig | None = None, seed: int = 0):
        self.policy, self.prior = policy, prior
        self.cfg = config or REINFORCEConfig()
        self.optimizer = torch.optim.Adam(policy.network.parameters(), lr=self.cfg.lr)
        self.rng = torch.Generator(device=policy.device).manual_seed(seed)

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        cfg = self.cfg
        data = rollout.trajectories
        advantages = data.rewards - data.rewards.mean()
        steps = random_steps(data.num_steps, cfg.step_fraction, self.rng)
        losses, kls = [], []
        self.policy.train()
        grads = StepGradients(self.policy.network.parameters(), cfg.max_grad_norm)
        for k in steps:
            log_prob, _, kl = step_terms(self.policy, self.prior, data, k)
            pg = -(advantages * log_prob).mean()
            grads.add(pg + cfg.kl_coef * kl.mean())
            losses.append(pg.item())
            kls.append(kl.mean().item())
        grads.apply()
        self.optimizer.step()
        self.policy.eval()
        return {"policy_loss": float(np.mean(losses)), "trajectory_kl": float(np.mean(kls)) * data.num_steps, "grad_norm": float(np.median(grads.norms))}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        restore_generator(self.rng, state["rng"], "the reinforce agent's generator")
