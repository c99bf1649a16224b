"""The pretrained crystal diffusion model as a stochastic policy, its pretraining and shipped priors."""

from .checkpoint import available_priors, load_policy, load_prior, save_policy
from .diffusion import DiffusionPolicy, DiffusionState, PriorSpec, StepDistribution
from .network import CSPDenoiser, DenoiserConfig

__all__ = [
    "CSPDenoiser",
    "DenoiserConfig",
    "DiffusionPolicy",
    "DiffusionState",
    "PriorSpec",
    "StepDistribution",
    "available_priors",
    "load_policy",
    "load_prior",
    "save_policy",
]
