"""MatInvent's update (reward-weighted denoising with a KL-style regulariser), as its paper and code describe it.

Per iteration, as in MatInvent's released `pipeline/mat_invent.py`:
- the reward already carries MatInvent's diversity filter (by composition, counting the crystal itself);
- keep the top-k crystals of the batch by reward; replayed crystals join them, then the top-k enter
  the replay memory (deduplicated by composition), after crystals the filter penalised are purged;
- re-noise the final (unrelaxed) crystals at random training timesteps and minimise
  r * denoising_error + sigma * (1.1 - r) * |agent output - prior output|^2,
  one optimizer step per noise draw, with a fresh Adam every iteration.
No per-step log-probabilities, no baseline or advantage: the "KL" is an output MSE, not a KL.

Where this differs from MatInvent: the denoiser is ours (DiffCSP-style, not MatterGen), the output MSE
uses our per-field loss weights, and the crystals are re-noised through our noise processes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..policies import DiffusionPolicy
from .options import check_ranges
from .replay import Replay
from .rollout import Rollout, Trajectories


@dataclass
class RWKLConfig:
    """MatInvent-style reward-weighted KL fine-tuning settings.

    Attributes:
        lr: Adam learning rate (a fresh Adam each iteration).
        topk_ratio: fraction of each batch, best first, that the update trains on; in (0, 1].
        epochs: passes over the selected crystals per iteration.
        noise_draws: re-noisings of the selected crystals per epoch, one optimizer step each.
        sigma: weight of the regulariser towards the prior's outputs.
        replay_capacity: composition-keyed replay size (0 disables replay).
        replay_sample: replayed crystals added to each update.
    """

    lr: float = 1e-4
    topk_ratio: float = 0.5
    epochs: int = 1
    noise_draws: int = 10  # MatInvent's `timesteps`: re-noisings per epoch, one optimizer step each
    sigma: float = 1.0  # weight of the regulariser
    replay_capacity: int = 64
    replay_sample: int = 8  # replayed crystals per update

    def __post_init__(self):
        check_ranges(self, positive=("lr",), at_least_one=("epochs", "noise_draws"), non_negative=("sigma", "replay_capacity", "replay_sample"), unit=("topk_ratio",))


class RewardWeightedKL:
    """MatInvent's update: a reward-weighted denoising loss on the top crystals, regularised towards the prior.

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy.
        config: settings (default `RWKLConfig()`).
        seed: seed of the agent's own random draws.
    """

    name = "rwkl"
    default_diversity: dict | None = {"mode": "composition", "count_self": True}

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: RWKLConfig | None = None, seed: int = 0):
        self.policy, self.prior = policy, prior
        self.cfg = config or RWKLConfig()
        self.replay = Replay(self.cfg.replay_capacity, "composition") if self.cfg.replay_capacity else None
        self.rng = torch.Generator(device=policy.device).manual_seed(seed)

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        cfg = self.cfg
        batch = rollout.trajectories
        rewards = batch.rewards.cpu().numpy()
        top = np.argsort(-rewards, kind="stable")[: max(1, int(len(batch) * cfg.topk_ratio))]
        chosen = batch.index(top)
        if self.replay is not None:
            penalised = rollout.result.components.get("diversity", np.ones(len(batch))) < 1
            self.replay.purge({self.replay.keys(rollout.structures[i]) for i in np.flatnonzero(penalised)})
            old = self.replay.sample(cfg.replay_sample, self.rng)
            self.replay.add(batch, rollout.structures, np.isin(np.arange(len(batch)), top), len(top), iteration)
            if old is not None:
                chosen = Trajectories.cat([chosen, old.to(batch.rewards.device)])
        # Re-noise clean crystals: one-hot types, as MatInvent trains on decoded samples.
        x0 = self.policy.encode(self.policy.decode(chosen.final))
        weights = chosen.rewards.to(x0.types.device)

        optimizer = torch.optim.Adam(self.policy.network.parameters(), lr=cfg.lr)  # reset every iteration, as MatInvent
        losses, regs = [], []
        self.policy.train()
        for _ in range(cfg.epochs):
            for _ in range(cfg.noise_draws):
                noisy = self.policy.corrupt(x0, self.rng)
                pred = self.policy.predict(noisy)
                with torch.no_grad():
                    prior_pred = self.prior.predict(noisy)
                error = self.policy.per_crystal_error(pred, noisy.targets, x0.mask)
                reg = self.policy.per_crystal_error(pred, prior_pred, x0.mask)
                loss = (weights * error + cfg.sigma * (1.1 - weights) * reg).mean()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
                regs.append(reg.mean().item())
        self.policy.eval()
        return {"policy_loss": float(np.mean(losses)), "output_mse": float(np.mean(regs)), "trained_on": float(len(weights))}

    def state_dict(self) -> dict:
        return {"replay": self.replay.state_dict() if self.replay is not None else None, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        self.rng.set_state(state["rng"])
