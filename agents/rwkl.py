"""MatInvent's update (reward-weighted denoising with a KL-style regulariser), as its released code does it.

Per iteration, as in `pipeline/mat_invent.py` (`rl_step`, `ft_step`) with the settings of
`configs/pipeline/mat_invent.yaml` and `configs/model/diffcsp.yaml`:
- the reward carries the diversity filter (by composition, tol 3, buffer 6, the whole batch counted);
- keep the top half of the batch by reward; replay's crystals join them (10 drawn from a 100-crystal,
  composition-deduplicated memory holding rewards above 0.1, purged of what the filter zeroed);
- for 3 epochs, sweep every training timestep from the noisiest down, re-noise the final (unrelaxed)
  crystals there and accumulate the gradient of
  mean(r * denoising_error + sigma * (1.1 - r) * output_mse(agent, prior)) / 50,
  stepping a fresh Adam (lr 1e-4) every 50 timesteps; sigma 0.025.
The denoising error weighs the fields with DiffCSP's loss costs; the regulariser is the unweighted sum
of the three per-field output MSEs (`calc_kl_reg`). No log-probabilities, baseline or advantage:
the "KL" is an output MSE, not a KL.

Where our model forces a difference: the denoiser is ours (DiffCSP-style), its type channels are the
prior's element vocabulary rather than 100 atomic numbers, and the crystals are re-noised through our
noise processes (the same 1000-step training grid).

`rwkl` is this update alone on whatever the trainer hands it (by default 64 crystals per iteration,
screened like every agent's); `matinvent` (below) is MatInvent's whole released pipeline: a pool of
12 x 16, the screen, the first 16 survivors, this update.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..files import restore_generator
from ..policies import DiffusionPolicy
from ..policies.diffusion import Corrupted
from ..options import check_ranges
from .replay import Replay
from .pipeline import FirstSurvivors, Pool, Selection, first_survivors
from .rollout import Rollout, Trajectories

UNWEIGHTED = {"types": 1.0, "frac": 1.0, "lattice": 1.0}  # MatInvent's calc_kl_reg sums the three MSEs as they are
CRYSTALS_PER_PASS = 512  # bounds the update's memory: a window's timesteps go through the network in passes of at most this many crystals


def _passes(window: list[int], batch: int) -> list[list[int]]:
    """`window`'s timesteps in groups of at most CRYSTALS_PER_PASS crystals (at least one timestep each)."""
    per = max(1, CRYSTALS_PER_PASS // batch)
    return [window[i : i + per] for i in range(0, len(window), per)]


@dataclass
class RWKLConfig:
    """MatInvent's fine-tuning settings; the defaults are its released ones for DiffCSP models.

    Attributes:
        lr: Adam learning rate, a fresh Adam every iteration (`configs/model/diffcsp.yaml`: 1e-4).
        topk_ratio: fraction of each batch, best first, that the update trains on (`mat_invent.yaml`: 0.5).
        epochs: passes per iteration (`finetune_cfg.epochs`: 3).
        timesteps: training timesteps swept per epoch, evenly spaced over the grid, noisiest first
            (`diffcsp.yaml` `timesteps`: 1000, every one).
        accum_steps: timesteps whose gradients are accumulated per optimizer step (`accum_steps`: 50).
        sigma: weight of the regulariser towards the prior's outputs (`sigma`: 0.025).
        replay_capacity: composition-deduplicated replay memory (`replay_args.buffer_size`: 100; 0 disables it).
        replay_sample: replayed crystals added to each update (`sample_size`: 10).
        replay_cutoff: only crystals with a reward above this stay in replay (`reward_cutoff`: 0.1).
    """

    lr: float = 1e-4
    topk_ratio: float = 0.5
    epochs: int = 3
    timesteps: int = 1000
    accum_steps: int = 50
    sigma: float = 0.025
    replay_capacity: int = 100
    replay_sample: int = 10
    replay_cutoff: float = 0.1

    def __post_init__(self):
        check_ranges(self, at_least_one=("epochs", "timesteps", "accum_steps"), non_negative=("sigma", "replay_capacity", "replay_sample"), unit=("lr", "topk_ratio"))


class RewardWeightedKL(FirstSurvivors):
    """MatInvent's update: a reward-weighted denoising loss on the top crystals, regularised towards the prior.

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy.
        config: settings (default `RWKLConfig()`).
        seed: seed of the agent's own random draws.
    """

    name = "rwkl"
    default_diversity: dict | None = {"mode": "composition", "tol": 3, "buffer": 6}  # configs/pipeline/mat_invent.yaml
    learns_from_screened = False  # MatInvent trains on scored crystals only

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: RWKLConfig | None = None, seed: int = 0):
        self.policy, self.prior = policy, prior
        self.cfg = config or RWKLConfig()
        self.replay = Replay(self.cfg.replay_capacity, "composition") if self.cfg.replay_capacity else None
        self.rng = torch.Generator(device=policy.device).manual_seed(seed)

    def select(self, pool: Pool, n: int) -> Selection:
        """The first `n` survivors; the update keeps the top `topk_ratio` of `n`, however many survived (`mat_invent.py` line 241)."""
        return Selection(first_survivors(pool, n).indices, {"eval_size": n})

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]:
        cfg = self.cfg
        batch = rollout.trajectories
        rewards = batch.rewards.cpu().numpy()
        top = np.argsort(-rewards, kind="stable")[: max(1, int(rollout.context.get("eval_size", len(batch)) * cfg.topk_ratio))]
        chosen = batch.index(top)
        if self.replay is not None:
            self.replay.purge_penalised(rollout)
            old = self.replay.sample(cfg.replay_sample, self.rng)
            self.replay.add(batch, rollout.structures, np.isin(np.arange(len(batch)), top), len(top), iteration, min_reward=cfg.replay_cutoff)
            if old is not None:
                chosen = Trajectories.cat([chosen, old.to(batch.rewards.device)])
        # Re-noise clean crystals: one-hot types, as MatInvent trains on decoded samples.
        x0 = self.policy.encode(self.policy.decode(chosen.final))
        weights = chosen.rewards.to(x0.types.device)
        grid = self.policy.schedules.num_timesteps
        levels = torch.linspace(grid, 1, min(cfg.timesteps, grid)).round().long().tolist()

        optimizer = torch.optim.Adam(self.policy.network.parameters(), lr=cfg.lr)  # fresh every iteration, as MatInvent
        losses, regs = [], []
        self.policy.train()
        for _ in range(cfg.epochs):
            for start in range(0, len(levels), cfg.accum_steps):
                # One accumulation window in as few passes as memory allows: the same noise, drawn timestep by
                # timestep in MatInvent's order, and the same summed gradient as one pass per timestep.
                window = levels[start : start + cfg.accum_steps]
                optimizer.zero_grad()
                for part in _passes(window, len(x0)):
                    noisy = Corrupted.cat([self.policy.corrupt(x0, self.rng, t=t) for t in part])
                    pred = self.policy.predict(noisy)
                    with torch.no_grad():
                        prior_pred = self.prior.predict(noisy)
                    mask = noisy.state.mask
                    error = self.policy.per_crystal_error(pred, noisy.targets, mask).view(len(part), -1)
                    reg = self.policy.per_crystal_error(pred, prior_pred, mask, weights=UNWEIGHTED).view(len(part), -1)
                    loss = (weights * error + cfg.sigma * (1.1 - weights) * reg).mean(1)  # one per timestep
                    (loss.sum() / cfg.accum_steps).backward()
                    losses.extend(loss.tolist())
                    regs.extend(reg.mean(1).tolist())
                optimizer.step()
        self.policy.eval()
        return {"policy_loss": float(np.mean(losses)), "output_mse": float(np.mean(regs)), "trained_on": float(len(weights))}

    def state_dict(self) -> dict:
        return {"replay": self.replay.state_dict() if self.replay is not None else None, "rng": self.rng.get_state()}

    def load_state_dict(self, state: dict) -> None:
        if self.replay is not None:
            self.replay.load_state_dict(state["replay"])
        restore_generator(self.rng, state["rng"], "the rwkl agent's generator")


MATINVENT_SOURCE = "schwallergroup/matinvent at e6e3b3f"


@dataclass
class MatInventConfig(RWKLConfig):
    """MatInvent's released pipeline around its update (`MATINVENT_SOURCE`).

    Attributes:
        eval_size: E, the most crystals scored per iteration (`configs/base.yaml` line 25: `eval_size: 16`).
        oversample: P / E, crystals sampled per crystal scored (`configs/model/diffcsp.yaml` line 7: sample `batch_size: eval_size * 12`).
    The screen is the trainer's (agents/pipeline.py), MatInvent's `invalid_filter` and `OptFilter`
    (`configs/base.yaml` lines 13-19: validity, novel, unique, stable); the selection is the first E
    survivors (`pipeline/mat_invent.py` lines 110-114); the cost counts scored crystals only
    (`pipeline/base.py` line 108: `self.cost += len(sample_struc)`).
    """

    eval_size: int = 16
    oversample: int = 12

    def __post_init__(self):
        super().__post_init__()
        check_ranges(self, at_least_one=("eval_size", "oversample"))


class MatInvent(RewardWeightedKL):
    """MatInvent's released pipeline: a pool of 12 x 16, the screen, the first 16 survivors, its update.

    Args:
        policy: the policy being fine-tuned.
        prior: its frozen pretrained copy.
        config: settings (default `MatInventConfig()`, the released ones).
        seed: seed of the agent's own random draws.
    """

    name = "matinvent"

    def __init__(self, policy: DiffusionPolicy, prior: DiffusionPolicy, config: MatInventConfig | None = None, seed: int = 0):
        config = config or MatInventConfig()
        super().__init__(policy, prior, config, seed)
        self.pool_factor = config.oversample
