"""Whole reverse-diffusion trajectories, collected through the vector env.

A batch keeps every state x_T .. x_0 stacked on a leading step axis, the behaviour policy's
log-probability of each step, and the final rewards. The action of step k is the state at k-1, so
states are stored once.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

import numpy as np
import torch

from ..envs.denoising import ACTION_FIELDS, CrystalDenoisingVectorEnv, obs_to_state
from ..files import saveable
from ..policies import DiffusionPolicy, DiffusionState
from ..rewards.base import RewardResult


@saveable
@dataclass
class Trajectories:
    """B trajectories of T steps. Index j along the step axis holds x_{T-j}; `log_probs[j]` is the step from x_{T-j}."""

    types: torch.Tensor  # (T+1, B, N, K)
    frac: torch.Tensor  # (T+1, B, N, 3)
    lattice: torch.Tensor  # (T+1, B, 3, 3)
    mask: torch.Tensor  # (B, N)
    log_probs: torch.Tensor  # (T, B) under the policy that sampled them
    rewards: torch.Tensor  # (B,)
    extra: dict = field(default_factory=dict)  # per-trajectory arrays that replay carries along (keys, ages)

    @property
    def num_steps(self) -> int:
        return self.log_probs.shape[0]

    def __len__(self) -> int:
        return self.mask.shape[0]

    def state(self, k: int, idx=slice(None)) -> DiffusionState:
        """x_k (k = T .. 0) of the selected trajectories."""
        j = self.num_steps - k
        return DiffusionState(self.types[j][idx], self.frac[j][idx], self.lattice[j][idx], self.mask[idx])

    @property
    def final(self) -> DiffusionState:
        return self.state(0)

    def index(self, idx) -> Trajectories:
        """The trajectories at `idx` (a list or tensor of positions), with their extras."""
        idx = torch.as_tensor(idx, dtype=torch.long)
        on_steps = lambda x: x[:, idx]  # noqa: E731
        return Trajectories(
            on_steps(self.types),
            on_steps(self.frac),
            on_steps(self.lattice),
            self.mask[idx],
            on_steps(self.log_probs),
            self.rewards[idx],
            {k: np.asarray(v)[idx.numpy()] for k, v in self.extra.items()},
        )

    @staticmethod
    def cat(parts: list[Trajectories]) -> Trajectories:
        """Concatenate batches of trajectories of the same T and padding."""
        parts = [p for p in parts if len(p)]
        stepped = {"types", "frac", "lattice", "log_probs"}
        out = {}
        for f in fields(Trajectories):
            if f.name == "extra":
                keys = set.intersection(*(set(p.extra) for p in parts))
                out["extra"] = {k: np.concatenate([p.extra[k] for p in parts]) for k in keys}
            else:
                out[f.name] = torch.cat([getattr(p, f.name) for p in parts], dim=1 if f.name in stepped else 0)
        return Trajectories(**out)

    def to(self, device) -> Trajectories:
        """A copy on `device`."""
        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if f.name != "extra"}
        return Trajectories(**moved, extra=dict(self.extra))


@dataclass
class Rollout:
    """The crystals an update learns from: trajectories, final crystals, their RewardResult and success, and timings.

    From the trainer these are the evaluated crystals and, for an agent that learns from them, the
    screened-out ones with the failure reward (`evaluated` says which is which); `context` is what
    the agent's `select` handed on to its `update`.
    """

    trajectories: Trajectories
    structures: list
    result: RewardResult
    success: np.ndarray
    seconds: float
    evaluated: np.ndarray | None = None  # per row: scored by the property (True) or screened out (False); None: all scored
    context: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.structures)


def unscored(structures) -> RewardResult:
    """A reward that scores nothing: for envs that only sample, leaving the scoring to the learner."""
    return RewardResult(np.zeros(len(structures)))


def collect(env: CrystalDenoisingVectorEnv, policy: DiffusionPolicy, generator: torch.Generator, seed: int | None = None) -> Rollout:
    """Denoise `env.num_envs` crystals with `policy` (`DiffusionPolicy.denoise`), stepping the env with every action."""
    start = time.perf_counter()
    obs, _ = env.reset(seed=seed)
    device = policy.device
    last: dict = {}

    def step(action: DiffusionState, k: int) -> DiffusionState:
        obs, last["rewards"], _, _, last["infos"] = env.step({name: getattr(action, name).cpu().numpy() for name in ACTION_FIELDS})
        return obs_to_state(obs, device)

    states, log_probs = policy.denoise(obs_to_state(obs, device), generator, step)
    stack = lambda name: torch.stack([getattr(s, name) for s in states])  # noqa: E731
    rewards = torch.as_tensor(last["rewards"], dtype=torch.float32, device=device)
    trajectories = Trajectories(stack("types"), stack("frac"), stack("lattice"), states[0].mask, log_probs, rewards)
    infos = last["infos"]
    return Rollout(trajectories, list(infos["structure"]), infos["reward_result"], np.asarray(infos["success"], dtype=bool), time.perf_counter() - start)
