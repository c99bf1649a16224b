"""Stable-Baselines3 interop: the diffusion step as SB3's action distribution, plus a value head.

    env = FlattenAction(gym.make("LatticeGym/PerovskiteLowHHI-v0"))
    model = stable_baselines3.PPO(DiffusionActorCriticPolicy, env, gamma=1.0, gae_lambda=1.0)
    model.learn(10_000)

Limits:
- SB3 takes no Dict action, so the env is wrapped in `envs.wrappers.FlattenAction`.
- Each SB3 transition is one denoising step and SB3's PPO treats steps as independent samples: it
  has no KL to the prior and no per-trajectory step subsampling; use `agents.PPO` for those.
- The value head is SB3's MLP on the flattened observation (CombinedExtractor), trained from
  scratch; with terminal-only rewards use gamma = 1 and gae_lambda = 1.
- The log-prob is the joint density of the step (sums over atoms and fields), so PPO's default
  clip_range of 0.2 is tight: small updates (learning rate ~1e-5) keep the ratios in range.
- SB3's entropy bonus gets `None` (the step's std is fixed by the noise schedule), so SB3 uses
  -mean(log_prob) as the entropy estimate; leave ent_coef at 0.
- `get_distribution` is not available: SB3's Distribution classes cannot hold a wrapped Gaussian.
- `deterministic=True` (the default of SB3's `evaluate_policy` and `predict`) samples, with a
  warning: following each step's mean is not a sample of the model, and the cells it ends in
  collapse (a degenerate cell scores 0), which would read as if training had broken the policy.
  Seed the env for repeatable evaluations.
"""

from __future__ import annotations

import warnings

import torch

try:
    from stable_baselines3.common.policies import MultiInputActorCriticPolicy
except ImportError:
    raise ImportError("the Stable-Baselines3 adapter needs it: pip install 'latticegym[sb3]'") from None

from ..envs.denoising import ACTION_FIELDS
from ..policies import DiffusionPolicy, DiffusionState, load_prior

DETERMINISTIC = (
    "deterministic=True samples the denoising step anyway: the step means are not a sample of the model and "
    "their cells collapse; evaluate a diffusion policy by its samples (seed the env to repeat them)"
)


class DiffusionActorCriticPolicy(MultiInputActorCriticPolicy):
    """A Stable-Baselines3 actor-critic whose action distribution is the diffusion policy's reverse step.

    Use with `envs.wrappers.FlattenAction`, `gamma=1`, `gae_lambda=1` and `ent_coef=0`; the value
    head is SB3's MLP on the flattened observation. The prior's weights are loaded as the actor.
    """
    def __init__(self, observation_space, action_space, lr_schedule, prior: str = "perov_5", **kwargs):
        kwargs.setdefault("ortho_init", False)  # would re-initialise the pretrained weights otherwise
        self.prior_name = prior
        self._warned = False
        super().__init__(observation_space, action_space, lr_schedule, **kwargs)

    def _build(self, lr_schedule) -> None:
        super()._build(lr_schedule)
        num_steps = self.observation_space["t"].n - 1
        self.diffusion: DiffusionPolicy = load_prior(self.prior_name, num_steps=num_steps)
        n, k = self.observation_space["types"].shape
        if (self.diffusion.n_max, self.diffusion.num_types) != (n, k):
            raise ValueError(f"prior {self.prior_name!r} has N_max={self.diffusion.n_max}, {self.diffusion.num_types} types; the env has {n}, {k}")
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict:
        return {**super()._get_constructor_parameters(), "prior": self.prior_name}

    def _state_and_step(self, obs) -> tuple[DiffusionState, torch.Tensor]:
        state = DiffusionState(obs["types"].float(), obs["frac"].float(), obs["lattice"].float(), obs["mask"].reshape(obs["types"].shape[:2]) > 0.5)
        return state, obs["t"].reshape(-1).long()

    def _flat(self, state: DiffusionState) -> torch.Tensor:
        return torch.cat([getattr(state, name).reshape(len(state), -1) for name in ACTION_FIELDS], dim=1)

    def _unflat(self, actions: torch.Tensor, mask: torch.Tensor) -> DiffusionState:
        b, n, k = len(actions), self.diffusion.n_max, self.diffusion.num_types
        types, frac, lattice = torch.split(actions.float(), [n * k, n * 3, 9], dim=1)
        return DiffusionState(types.reshape(b, n, k), frac.reshape(b, n, 3), lattice.reshape(b, 3, 3), mask)

    def _act(self, obs, deterministic: bool) -> tuple[torch.Tensor, torch.Tensor]:
        state, k = self._state_and_step(obs)
        dist = self.diffusion.step_distribution(state, k)
        if deterministic and not self._warned:
            warnings.warn(DETERMINISTIC, stacklevel=2)
            self._warned = True
        action = dist.sample()
        return self._flat(action), dist.log_prob(action)

    def forward(self, obs, deterministic: bool = False):
        actions, log_prob = self._act(obs, deterministic)
        return actions, self.predict_values(obs), log_prob

    def evaluate_actions(self, obs, actions):
        """Values, exact log-probs of the flat actions under the reverse step, and entropy None (fixed std)."""
        state, k = self._state_and_step(obs)
        log_prob = self.diffusion.step_distribution(state, k).log_prob(self._unflat(actions, state.mask))
        return self.predict_values(obs), log_prob, None

    def _predict(self, observation, deterministic: bool = False) -> torch.Tensor:
        return self._act(observation, deterministic)[0]

    def get_distribution(self, obs):
        """Not available: SB3's distributions cannot hold a wrapped Gaussian; raises NotImplementedError."""
        raise NotImplementedError("the diffusion step is a wrapped Gaussian SB3 cannot represent; use self.diffusion.step_distribution")
