"""The crystal diffusion model as a stochastic policy over reverse-diffusion steps.

Every reverse step is an explicit distribution, per field:
- atom-type channels and lattice: Gaussian, DDPM posterior mean from a clipped clean-crystal
  estimate, posterior std; on the last step, where the posterior std is 0, plain sqrt(beta_1) for
  the types and `last_step_std` times that for the lattice, so every step has a density;
- fractional coordinates: wrapped Gaussian, VE ancestral mean, ancestral std (`last_step_std`
  times sigma_1 on the last step).

Step index k runs from T (pure noise) down to 1; the action of step k is the state at step k-1.

With C > 0 corrector steps per noise level (`set_num_steps(T, correctors=C)`), an episode has
T(1 + C) actions: at each level, C Langevin corrector steps on the coordinates (as in DiffCSP's
sampler), then the predictor step to the next level. A corrector step
x' = x + gamma * score(x, t) + sqrt(2 * gamma) * z is again an explicit (wrapped) Gaussian in the
coordinates, with atom types and lattice held, so its log-prob and KL are as exact as a
predictor step's. Actions are indexed by n = T(1 + C) .. 1, the number still to take; see `phase`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field, fields
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ..crystal import CrystalBatch
from ..files import saveable
from .network import CSPDenoiser, DenoiserConfig
from .noise import Schedules, minimal_image, wrap, wrapped_normal_log_prob, wrapped_normal_score

LOSS_WEIGHTS = {"lattice": 1.0, "frac": 1.0, "types": 20.0}  # DiffCSP's ab initio weights
# Corrector step sizes for generation, DiffCSP's `recommand_step_lr` ('gen' mode, scripts/eval_utils.py);
# the step at level t is lr * (sigma_t / sigma_min)^2, as its sampler scales it.
CORRECTOR_STEP_LR = {"perov_5": 1e-6, "carbon_24": 1e-5}
DEFAULT_CORRECTOR_STEP_LR = 1e-5


@saveable
@dataclass
class DiffusionState:
    """A batch of (noisy) crystals in model space; padding entries are zero."""

    types: torch.Tensor  # (B, N, K) atom-type channels
    frac: torch.Tensor  # (B, N, 3) fractional coordinates in [0, 1)
    lattice: torch.Tensor  # (B, 3, 3) lattice rows divided by the prior's lattice_scale
    mask: torch.Tensor  # (B, N) bool

    def __len__(self) -> int:
        return self.types.shape[0]

    def to(self, device) -> DiffusionState:
        """A copy on `device`."""
        return DiffusionState(*(getattr(self, f.name).to(device) for f in fields(self)))

    def index(self, idx) -> DiffusionState:
        """The crystals at `idx` (an index, slice, list or mask)."""
        return DiffusionState(*(getattr(self, f.name)[idx] for f in fields(self)))

    @staticmethod
    def cat(states: list[DiffusionState]) -> DiffusionState:
        """Concatenate states of the same padding along the batch axis."""
        return DiffusionState(*(torch.cat([getattr(s, f.name) for s in states]) for f in fields(DiffusionState)))


@dataclass
class Corrupted:
    """Clean crystals noised to training timesteps `t`, with the network's regression targets (types, frac, lattice)."""

    t: torch.Tensor
    state: DiffusionState
    targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]

    @staticmethod
    def cat(parts: list[Corrupted]) -> Corrupted:
        """Concatenate corrupted batches of the same padding along the batch axis."""
        targets = tuple(torch.cat([p.targets[i] for p in parts]) for i in range(3))
        return Corrupted(torch.cat([p.t for p in parts]), DiffusionState.cat([p.state for p in parts]), targets)


@dataclass
class StepDistribution:
    """p(x_{k-1} | x_k) for a batch; stds are per crystal, shape (B,)."""

    types_mean: torch.Tensor
    types_std: torch.Tensor
    frac_mean: torch.Tensor
    frac_std: torch.Tensor
    lattice_mean: torch.Tensor
    lattice_std: torch.Tensor
    mask: torch.Tensor
    held: torch.Tensor | None = None  # (B,) bool: types and lattice stay as they are (a corrector step)

    def _moving(self) -> torch.Tensor:
        """1.0 where types and lattice move (a predictor step), 0.0 where they are held; shape (B,)."""
        if self.held is None:
            return torch.ones_like(self.types_std)
        return (~self.held).to(self.types_std.dtype)

    def _safe(self, std: torch.Tensor) -> torch.Tensor:
        return std if self.held is None else torch.where(self.held, torch.ones_like(std), std)

    def sample(self, generator: torch.Generator | None = None) -> DiffusionState:
        """Draw x_{k-1}: Gaussian types and lattice, wrapped-Gaussian coordinates; padding stays zero."""
        m = self.mask[..., None].to(self.types_mean.dtype)

        def noise(like):
            return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)

        types = (self.types_mean + self.types_std[:, None, None] * noise(self.types_mean)) * m
        frac = wrap(self.frac_mean + self.frac_std[:, None, None] * noise(self.frac_mean)) * m
        lattice = self.lattice_mean + self.lattice_std[:, None, None] * noise(self.lattice_mean)
        return DiffusionState(types, frac, lattice, self.mask)

    def log_prob(self, action: DiffusionState) -> torch.Tensor:
        """Exact joint log-density, summed over atoms (mask respected) and fields; shape (B,).

        On a corrector step only the coordinates are random: held types and lattice add nothing.
        """
        m = self.mask.to(self.types_mean.dtype)
        moving = self._moving()
        types_std, lattice_std = self._safe(self.types_std), self._safe(self.lattice_std)
        types = _normal_log_prob(action.types, self.types_mean, types_std[:, None, None]).sum(-1) * moving[:, None]
        frac = wrapped_normal_log_prob(action.frac, self.frac_mean, self.frac_std[:, None, None].expand_as(self.frac_mean)).sum(-1)
        lattice = _normal_log_prob(action.lattice, self.lattice_mean, lattice_std[:, None, None]).sum((-1, -2)) * moving
        return ((types + frac) * m).sum(-1) + lattice

    def kl(self, other: StepDistribution) -> torch.Tensor:
        """KL(self || other) for shared stds, closed form; shape (B,).

        For the wrapped coordinates this is the KL of the unwrapped Gaussians on the minimal-image
        mean difference: exact as std -> 0 and an upper bound otherwise (wrapping cannot raise KL).
        Held fields (a corrector step) are the same point under both and add nothing.
        """
        m = self.mask.to(self.types_mean.dtype)
        moving = self._moving()
        types_std, lattice_std = self._safe(self.types_std), self._safe(self.lattice_std)
        types = ((self.types_mean - other.types_mean) ** 2).sum(-1) / (2 * types_std[:, None] ** 2) * moving[:, None]
        frac = (minimal_image(self.frac_mean - other.frac_mean) ** 2).sum(-1) / (2 * self.frac_std[:, None] ** 2)
        lattice = ((self.lattice_mean - other.lattice_mean) ** 2).sum((-1, -2)) / (2 * lattice_std**2) * moving
        return ((types + frac) * m).sum(-1) + lattice


def _normal_log_prob(x, mean, std):
    return -((x - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)


MAX_CORRECTORS = 100  # corrector steps per level; an episode has steps x (1 + correctors) actions


@dataclass
class PriorSpec:
    """What a checkpoint must record to rebuild its policy: data vocabulary and noise settings."""

    elements: list[int]  # atomic numbers of the type channels
    num_atoms: dict[int, int]  # the training distribution of atoms per cell
    lattice_scale: float  # Å; lattices are modelled divided by this
    fingerprint: str = ""  # of the training data
    num_timesteps: int = 1000
    sigma_min: float = 0.005
    sigma_max: float = 0.5
    lattice_clip: float = 5.0  # bound on |entries| of the predicted clean lattice (model units)
    # The last step's lattice and coordinate stds as a fraction of the noise it removes (sqrt(beta_1),
    # sigma_1): about 0.002 Å of jitter. At 1.0 that step re-adds the noise it removes, which left
    # perov_5's cubic cells a median 0.69 degrees off square (DiffCSP's last step is noiseless; ours keeps a density).
    last_step_std: float = 0.1
    name: str = ""
    extra: dict = field(default_factory=dict)  # recipe and metrics, for humans


class DiffusionPolicy(nn.Module):
    """A crystal diffusion model as a stochastic policy over reverse-diffusion steps.

    Each reverse step k (T down to 1) is an explicit distribution (`step_distribution`): Gaussian
    atom-type channels and lattice, wrapped-Gaussian fractional coordinates, so `sample`,
    `log_prob` and `kl` (closed form for the Gaussians; for the wrapped coordinates the KL of the
    unwrapped Gaussians, an upper bound) are exact per step and batched, with padding masked.

    Args:
        spec: vocabulary, atom-count distribution, lattice scale and noise settings.
        denoiser: the network's shape.
        num_steps: T, the reverse steps the training grid is respaced to.
    """

    def __init__(self, spec: PriorSpec, denoiser: DenoiserConfig, num_steps: int = 100):
        super().__init__()
        if denoiser.num_types != len(spec.elements):
            raise ValueError(f"denoiser has {denoiser.num_types} type channels but the vocabulary has {len(spec.elements)} elements")
        self.spec = spec
        self.network = CSPDenoiser(denoiser)
        self.schedules = Schedules(spec.num_timesteps, spec.sigma_min, spec.sigma_max)
        self._z_to_channel = {z: i for i, z in enumerate(spec.elements)}
        self.set_num_steps(num_steps)

    # ------------------------------------------------------------------ configuration
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def n_max(self) -> int:
        return max(self.spec.num_atoms)

    @property
    def num_types(self) -> int:
        return len(self.spec.elements)

    def set_num_steps(self, num_steps: int, correctors: int | None = None, corrector_step_lr: float | None = None) -> None:
        """Respace the sampler to T predictor steps of the training grid (T = 1..num_timesteps) and
        `correctors` Langevin corrector steps per level (None keeps the current number, initially 0).

        `corrector_step_lr` defaults to DiffCSP's value for the prior's dataset (`CORRECTOR_STEP_LR`).
        """
        if correctors is not None and not 0 <= correctors <= MAX_CORRECTORS:
            raise ValueError(f"correctors must be in 0..{MAX_CORRECTORS}, got {correctors}")
        if not 1 <= num_steps <= self.spec.num_timesteps:
            raise ValueError(f"steps must be in 1..{self.spec.num_timesteps}, the prior's training timesteps; got {num_steps}")
        self.num_steps = num_steps
        self.correctors = correctors if correctors is not None else getattr(self, "correctors", 0)
        if corrector_step_lr is not None:
            if not corrector_step_lr > 0:
                raise ValueError(f"corrector_step_lr must be > 0, got {corrector_step_lr}")
            self.corrector_step_lr = corrector_step_lr
        elif not hasattr(self, "corrector_step_lr"):
            self.corrector_step_lr = CORRECTOR_STEP_LR.get(self.spec.name, DEFAULT_CORRECTOR_STEP_LR)
        taus = self.schedules.respaced(num_steps)
        if hasattr(self, "taus"):
            self.taus = taus.to(self.taus.device)
        else:
            self.register_buffer("taus", taus, persistent=False)

    @property
    def episode_length(self) -> int:
        """Actions per episode: T predictor steps, each preceded by C corrector steps."""
        return self.num_steps * (1 + self.correctors)

    def phase(self, n: torch.Tensor | int) -> tuple[torch.Tensor, torch.Tensor]:
        """For action indices n (episode_length .. 1, the actions still to take): the noise level
        k in T..1 and whether the action is a corrector step (else the predictor step k -> k-1)."""
        n = torch.as_tensor(n, device=self.taus.device)
        per_level = 1 + self.correctors
        k = torch.div(n + per_level - 1, per_level, rounding_mode="floor")
        return k, n - (k - 1) * per_level > 1

    def frozen_copy(self) -> DiffusionPolicy:
        """A copy whose weights never train: the KL reference."""
        prior = copy.deepcopy(self)
        prior.requires_grad_(False)
        return prior.eval()

    # ------------------------------------------------------------------ conversion
    def encode(self, batch: CrystalBatch) -> DiffusionState:
        """A batch of clean crystals in model space: one-hot types, coordinates in [0, 1), lattice over `lattice_scale`.

        Raises ValueError naming the elements that are not in the prior's vocabulary.
        """
        unknown = sorted({int(z) for z in batch.atom_types[batch.mask]} - set(self._z_to_channel))
        if unknown:
            raise ValueError(f"elements {unknown} are not in this prior's vocabulary {self.spec.elements}")
        channels = np.vectorize(lambda z: self._z_to_channel.get(int(z), 0))(batch.atom_types)
        mask = torch.as_tensor(batch.mask, device=self.device)
        types = torch.nn.functional.one_hot(torch.as_tensor(channels, device=self.device), self.num_types).float()
        types = types * mask[..., None]
        frac = torch.as_tensor(np.remainder(batch.frac_coords, 1.0), dtype=torch.float32, device=self.device) * mask[..., None]
        lattice = torch.as_tensor(batch.lattice / self.spec.lattice_scale, dtype=torch.float32, device=self.device)
        return DiffusionState(types, frac, lattice, mask)

    def decode(self, state: DiffusionState) -> CrystalBatch:
        """Atom types by argmax over channels, lattice back in Å."""
        elements = np.asarray(self.spec.elements)
        mask = state.mask.cpu().numpy()
        atom_types = np.where(mask, elements[state.types.argmax(-1).cpu().numpy()], 0)
        frac = np.remainder(state.frac.detach().cpu().double().numpy(), 1.0) * mask[..., None]
        lattice = state.lattice.detach().cpu().double().numpy() * self.spec.lattice_scale
        return CrystalBatch(atom_types, frac, lattice, mask)

    # ------------------------------------------------------------------ training
    def corrupt(self, x0: DiffusionState, generator: torch.Generator | None = None, t: torch.Tensor | int | None = None) -> Corrupted:
        """Noise clean crystals to training timesteps `t` (default: drawn uniformly per crystal); returns inputs and regression targets."""
        b, n, k = x0.types.shape
        dev = x0.types.device
        sch = self.schedules
        if t is None:
            t = torch.randint(1, sch.num_timesteps + 1, (b,), generator=generator, device=dev)
        else:
            t = torch.as_tensor(t, device=dev).expand(b)
        ab = sch.alpha_bar[t]
        sigma = sch.sigma[t]
        mask = x0.mask.to(x0.types.dtype)[..., None]

        def noise(*shape):
            return torch.randn(shape, generator=generator, device=dev)

        eps_l, eps_a, z_f = noise(b, 3, 3), noise(b, n, k) * mask, noise(b, n, 3) * mask
        lattice_t = ab.sqrt()[:, None, None] * x0.lattice + (1 - ab).sqrt()[:, None, None] * eps_l
        types_t = (ab.sqrt()[:, None, None] * x0.types + (1 - ab).sqrt()[:, None, None] * eps_a) * mask
        frac_t = wrap(x0.frac + sigma[:, None, None] * z_f) * mask
        target_f = wrapped_normal_score(sigma[:, None, None] * z_f, sigma[:, None, None].expand_as(z_f))
        target_f = target_f / sch.score_norm[t].sqrt()[:, None, None] * mask
        return Corrupted(t, DiffusionState(types_t, frac_t, lattice_t, x0.mask), (eps_a, target_f, eps_l))

    def predict(self, noisy: Corrupted) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The network's (types, frac, lattice) outputs on a corrupted batch."""
        s = noisy.state
        return self.network(s.types, s.frac, s.lattice, s.mask, noisy.t.float() / self.schedules.num_timesteps)

    def loss(self, x0: DiffusionState, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """DiffCSP's denoising loss at uniformly drawn training timesteps, averaged over the batch's atoms."""
        noisy = self.corrupt(x0, generator)
        (pred_a, pred_f, pred_l), (eps_a, target_f, eps_l) = self.predict(noisy), noisy.targets
        mask = x0.mask.to(x0.types.dtype)[..., None]
        atoms = mask.sum().clamp(min=1)
        parts = {
            "lattice": ((pred_l - eps_l) ** 2).mean(),
            "frac": ((pred_f - target_f) ** 2 * mask).sum() / (3 * atoms),
            "types": ((pred_a - eps_a) ** 2 * mask).sum() / (x0.types.shape[-1] * atoms),
        }
        parts["loss"] = sum(LOSS_WEIGHTS[name] * parts[name] for name in LOSS_WEIGHTS)
        return parts

    @staticmethod
    def per_crystal_error(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], mask: torch.Tensor, weights: dict[str, float] = LOSS_WEIGHTS) -> torch.Tensor:
        """The per-field mean squared errors between two (types, frac, lattice) triples, summed with
        `weights` (default: the training loss weights), per crystal; shape (B,)."""
        m = mask.to(a[0].dtype)
        atoms = m.sum(-1).clamp(min=1)
        types = ((a[0] - b[0]) ** 2).mean(-1).mul(m).sum(-1) / atoms
        frac = ((a[1] - b[1]) ** 2).mean(-1).mul(m).sum(-1) / atoms
        lattice = ((a[2] - b[2]) ** 2).mean((-1, -2))
        return weights["types"] * types + weights["frac"] * frac + weights["lattice"] * lattice

    # ------------------------------------------------------------------ the MDP
    def initial_state(
        self, batch_size: int, generator: torch.Generator | None = None, num_atoms: torch.Tensor | None = None
    ) -> DiffusionState:
        """x_T: N from the training distribution (unless given), U[0,1) coordinates, N(0, I) lattice and types."""
        dev = self.device
        if num_atoms is None:
            sizes = torch.tensor(list(self.spec.num_atoms), device=dev)
            weights = torch.tensor(list(self.spec.num_atoms.values()), dtype=torch.float, device=dev)
            num_atoms = sizes[torch.multinomial(weights, batch_size, replacement=True, generator=generator)]
        num_atoms = torch.as_tensor(num_atoms, device=dev)
        mask = torch.arange(self.n_max, device=dev)[None] < num_atoms[:, None]
        m = mask[..., None].float()
        types = torch.randn((batch_size, self.n_max, self.num_types), generator=generator, device=dev) * m
        frac = torch.rand((batch_size, self.n_max, 3), generator=generator, device=dev) * m
        lattice = torch.randn((batch_size, 3, 3), generator=generator, device=dev)
        return DiffusionState(types, frac, lattice, mask)

    def step_distribution(self, state: DiffusionState, n: torch.Tensor | int) -> StepDistribution:
        """The distribution of the action with index n (1..episode_length; a scalar or one per crystal).

        Without correctors n is the step index k and this is p_theta(x_{k-1} | x_k).
        """
        n = torch.as_tensor(n, device=self.device).expand(len(state))
        if n.min() < 1 or n.max() > self.episode_length:
            raise ValueError(f"step index must be in 1..{self.episode_length}, got {n.min().item()}..{n.max().item()}")
        k, corrector = self.phase(n)
        sch = self.schedules
        t, s = self.taus[k], self.taus[k - 1]
        pred_a, pred_f, pred_l = self.network(state.types, state.frac, state.lattice, state.mask, t.float() / sch.num_timesteps)
        mask = state.mask.to(state.types.dtype)[..., None]

        ab_t, ab_s = sch.alpha_bar[t], sch.alpha_bar[s]
        alpha = ab_t / ab_s
        beta = 1 - alpha
        last = s == 0
        ddpm_std = torch.where(last, beta, beta * (1 - ab_s) / (1 - ab_t)).sqrt()
        # Posterior mean through a clipped x0 estimate: near t = T, alpha_bar ~ 0 and the plain
        # eps-form mean divides the network's error by sqrt(alpha), so samples would blow up.
        c_x0 = (ab_s.sqrt() * beta / (1 - ab_t))[:, None, None]
        c_xt = (alpha.sqrt() * (1 - ab_s) / (1 - ab_t))[:, None, None]
        root_ab, root_1mab = ab_t.sqrt()[:, None, None], (1 - ab_t).sqrt()[:, None, None]
        clip = self.spec.lattice_clip
        lattice_x0 = ((state.lattice - root_1mab * pred_l) / root_ab).clamp(-clip, clip)
        types_x0 = ((state.types - root_1mab * pred_a) / root_ab).clamp(0.0, 1.0)
        lattice_mean = c_x0 * lattice_x0 + c_xt * state.lattice
        types_mean = (c_x0 * types_x0 + c_xt * state.types) * mask

        lattice_std = torch.where(last, ddpm_std * self.spec.last_step_std, ddpm_std)
        sig_t, sig_s = sch.sigma[t], sch.sigma[s]
        step_var = sig_t**2 - sig_s**2
        frac_std = torch.where(last, step_var.sqrt() * self.spec.last_step_std, (sig_s**2 * step_var / sig_t**2).sqrt())
        score = pred_f * sch.score_norm[t].sqrt()[:, None, None]
        frac_mean = wrap(state.frac + step_var[:, None, None] * score) * mask
        if not corrector.any():
            return StepDistribution(types_mean, ddpm_std, frac_mean, frac_std, lattice_mean, lattice_std, state.mask)
        # Langevin corrector at level t: coordinates only, DiffCSP's step size.
        gamma = self.corrector_step_lr * (sig_t / self.spec.sigma_min) ** 2
        held = corrector[:, None, None]
        zero = torch.zeros_like(ddpm_std)
        return StepDistribution(
            torch.where(held, state.types * mask, types_mean),
            torch.where(corrector, zero, ddpm_std),
            torch.where(held, wrap(state.frac + gamma[:, None, None] * score) * mask, frac_mean),
            torch.where(corrector, (2 * gamma).sqrt(), frac_std),
            torch.where(held, state.lattice, lattice_mean),
            torch.where(corrector, zero, lattice_std),
            state.mask,
            corrector,
        )

    def sample(self, state: DiffusionState, k, generator: torch.Generator | None = None) -> tuple[DiffusionState, torch.Tensor]:
        """One reverse step from `state` at step index `k`: the action x_{k-1} and its exact log-prob, shape (B,).

        Log-probs of given actions and KLs to a reference come from `step_distribution(state, k)`,
        whose `log_prob` and `kl` are their one definition (the agents' updates use them too)."""
        dist = self.step_distribution(state, k)
        action = dist.sample(generator)
        return action, dist.log_prob(action)

    def denoise(
        self, state: DiffusionState, generator: torch.Generator | None = None, step: Callable[[DiffusionState, int], DiffusionState] | None = None
    ) -> tuple[list[DiffusionState], torch.Tensor]:
        """The reverse process from x_T = `state` down to x_0: every state, x_T first, and each step's log-prob, shape (T, B).

        The one walk of the reverse process: `generate` and the agents' rollouts use it. `step(action, k)`
        returns the state an action led to (an env's next observation, which checks and wraps it);
        without it the action is the next state.
        """
        states, log_probs = [state], []
        for k in range(self.episode_length, 0, -1):
            with torch.no_grad():  # only around the policy: a reward inside `step` may need autograd for forces
                action, log_prob = self.sample(states[-1], k, generator)
            states.append(step(action, k) if step is not None else action)
            log_probs.append(log_prob)
        return states, torch.stack(log_probs)

    @torch.no_grad()
    def generate(
        self,
        num: int,
        seed: int = 0,
        batch_size: int = 256,
        num_atoms: torch.Tensor | None = None,
        progress: bool = False,
    ) -> CrystalBatch:
        """Run the whole reverse process for `num` crystals, reproducibly for a given seed."""
        generator = torch.Generator(device=self.device).manual_seed(seed)
        batches = []
        for start in tqdm(range(0, num, batch_size), desc="sampling", unit="batch", disable=not progress):
            size = min(batch_size, num - start)
            sizes = None if num_atoms is None else num_atoms[start : start + size]
            states, _ = self.denoise(self.initial_state(size, generator, sizes), generator)
            batches.append(self.decode(states[-1]))
        return CrystalBatch(*(np.concatenate([getattr(b, f.name) for b in batches]) for f in fields(CrystalBatch)))
