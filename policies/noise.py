"""Noise processes of the three crystal fields, and the wrapped normal on the unit torus.

- atom-type channels and the lattice: DDPM with a cosine schedule (variance preserving);
- fractional coordinates: a variance-exploding wrapped normal with geometric sigmas (DiffCSP).

Timesteps are integers 1..T on the training grid; 0 is clean data.
"""

from __future__ import annotations

import functools
import math

import torch

N_IMAGES = 3  # periodic images summed on each side; exact to ~1e-8 for sigma <= 0.5


def wrap(x: torch.Tensor) -> torch.Tensor:
    """Into [0, 1)."""
    return torch.remainder(x, 1.0)


def minimal_image(d: torch.Tensor) -> torch.Tensor:
    """Into [-0.5, 0.5)."""
    return torch.remainder(d + 0.5, 1.0) - 0.5


def _image_offsets(like: torch.Tensor) -> torch.Tensor:
    return torch.arange(-N_IMAGES, N_IMAGES + 1, dtype=like.dtype, device=like.device)


def wrapped_normal_log_prob(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Elementwise log-density on [0, 1) of (mean + std * z) mod 1, summing periodic images."""
    d = minimal_image(x - mean)[..., None] + _image_offsets(x)
    var = (std**2)[..., None]
    return torch.logsumexp(-(d**2) / (2 * var), dim=-1) - 0.5 * torch.log(2 * math.pi * std**2)


def wrapped_normal_score(d: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """d/dx log p(x) of a zero-mean wrapped normal at displacement d."""
    shifted = minimal_image(d)[..., None] + _image_offsets(d)
    var = (sigma**2)[..., None]
    weights = torch.softmax(-(shifted**2) / (2 * var), dim=-1)
    return (weights * -shifted / var).sum(-1)


def score_second_moment(sigma: torch.Tensor, grid: int = 4001, chunk: int = 100) -> torch.Tensor:
    """E[score^2] under the wrapped normal, by quadrature; scales the score target to unit size."""
    x = torch.linspace(-0.5, 0.5, grid, dtype=torch.float64)
    moments = []
    for part in sigma.to(torch.float64).split(chunk):
        s = part[:, None].expand(-1, grid)
        xs = x[None].expand_as(s)
        p = torch.exp(wrapped_normal_log_prob(xs, torch.zeros_like(xs), s))
        moments.append(torch.trapezoid(p * wrapped_normal_score(xs, s) ** 2, x, dim=-1))
    return torch.cat(moments).to(sigma.dtype)


@functools.lru_cache(maxsize=8)
def _tables(num_timesteps: int, sigma_min: float, sigma_max: float, cosine_s: float):
    t = torch.arange(num_timesteps + 1, dtype=torch.float64)
    f = torch.cos((t / num_timesteps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    alpha_bar = (f / f[0]).clamp(min=1e-8)
    # Clip per-step betas at 0.999 as Nichol & Dhariwal do, then rebuild alpha_bar from them.
    betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=0.999)
    alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)])
    log_sigmas = torch.linspace(math.log(sigma_min), math.log(sigma_max), num_timesteps, dtype=torch.float64)
    sigmas = torch.cat([torch.zeros(1, dtype=torch.float64), torch.exp(log_sigmas)])
    norm = torch.cat([torch.ones(1, dtype=torch.float64), score_second_moment(sigmas[1:])])
    return alpha_bar.float(), sigmas.float(), norm.float()


class Schedules(torch.nn.Module):
    """Per-timestep constants of all three noise processes, indexed 0..T (0 = clean)."""

    def __init__(self, num_timesteps: int = 1000, sigma_min: float = 0.005, sigma_max: float = 0.5, cosine_s: float = 0.008):
        super().__init__()
        self.num_timesteps = num_timesteps
        alpha_bar, sigma, norm = _tables(num_timesteps, sigma_min, sigma_max, cosine_s)
        self.register_buffer("alpha_bar", alpha_bar.clone())
        self.register_buffer("sigma", sigma.clone())
        self.register_buffer("score_norm", norm.clone())

    def respaced(self, num_steps: int) -> torch.Tensor:
        """Training-grid timesteps visited by a T-step sampler, with 0 prepended: [0, tau_1, ..., tau_T]."""
        if not 1 <= num_steps <= self.num_timesteps:
            raise ValueError(f"num_steps must be in 1..{self.num_timesteps}, got {num_steps}")
        # Descending linspace so that even a 1-step sampler starts from pure noise at T.
        taus = torch.round(torch.linspace(self.num_timesteps, 1, num_steps, dtype=torch.float64)).long().flip(0)
        return torch.cat([torch.zeros(1, dtype=torch.long), taus])
