"""What the trainer needs of an agent, and the pieces the policy-gradient agents share."""

from __future__ import annotations

from typing import Protocol

import torch

from ..policies import DiffusionPolicy, DiffusionState, StepDistribution
from .pipeline import Pool, Selection
from .rollout import Rollout, Trajectories


class Agent(Protocol):
    """What the trainer needs of an agent (agents/pipeline.py has the path it runs on).

    - `select(pool, n)` picks at most `n` of the pool's candidates to evaluate and returns them with
      whatever its `update` needs to know of the choice (`Selection.context`, handed on in `Rollout.context`);
    - `update(rollout, iteration)` learns from the evaluated crystals (and, with `learns_from_screened`,
      the screened-out ones at the failure reward) and returns the statistics to log;
    - `attach(reward, known)` shows the agent the task's reward (guards, shaping, filters), never its
      evaluations, and the prior's training crystals;
    - with `generates`, `sample(n)` makes the pool (crystals without trajectories) instead of the policy;
    - `state_dict`/`load_state_dict` for exact resume.
    """

    name: str
    batch_size: int  # E when the run does not set it
    pool_factor: int  # the pool holds E x pool_factor crystals
    learns_from_screened: bool
    generates: bool  # True: `sample(n)` makes the pool instead of the policy (a non-learned floor)
    # Reward-side diversity filter the agent's recipe expects (DiversityFilter kwargs), or None.
    default_diversity: dict | None

    def attach(self, reward, known: list | None = None) -> None:
        """See the task's reward and the prior's training crystals before the first iteration."""

    def select(self, pool: Pool, n: int) -> Selection:
        """At most `n` of `pool.candidates` to evaluate, and what `update` needs of the choice."""

    def update(self, rollout: Rollout, iteration: int) -> dict[str, float]: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


def normalized_advantages(rewards: torch.Tensor, groups: torch.Tensor | None = None, eps: float = 1e-8) -> torch.Tensor:
    """(R - mean) / std within each group (one group when `groups` is None)."""
    groups = torch.zeros_like(rewards, dtype=torch.long) if groups is None else groups
    mean, std = torch.zeros_like(rewards), torch.ones_like(rewards)
    for g in groups.unique():
        sel = groups == g
        r = rewards[sel]
        mean[sel] = r.mean()
        std[sel] = r.std(unbiased=False) if sel.sum() > 1 else 1.0
    return (rewards - mean) / (std + eps)


class StepGradients:
    """Sums per-step gradients, each clipped to `max_norm` on its own, then averages them into `.grad`.

    The first and last reverse steps have near-singular densities (x0 estimated through
    1/sqrt(alpha_bar) at t = T; stds of ~0.006 at t = 1), so their gradients are ~50x the others'.
    Clipped jointly they would set the scale and the middle steps, which decide composition and
    structure, would barely move; clipped one by one, every sampled step counts.
    """

    def __init__(self, params, max_norm: float):
        self.params = [p for p in params if p.requires_grad]
        self.max_norm = max_norm
        self.sums = [torch.zeros_like(p) for p in self.params]
        self.count = 0
        self.norms: list[float] = []

    def add(self, loss: torch.Tensor) -> None:
        """Backpropagate one sampled step's loss and clip its gradient before adding it to the total."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        grads = [torch.zeros_like(p) if g is None else g for p, g in zip(self.params, grads)]
        norm = torch.sqrt(sum((g**2).sum() for g in grads))
        scale = torch.clamp(self.max_norm / (norm + 1e-12), max=1.0)
        for acc, g in zip(self.sums, grads):
            acc.add_(g * scale)
        self.count += 1
        self.norms.append(norm.item())

    def apply(self) -> None:
        """Write the average into `.grad`, ready for `optimizer.step()`."""
        for p, acc in zip(self.params, self.sums):
            p.grad = acc / max(self.count, 1)


def minibatches(data: Trajectories, advantages: torch.Tensor, epochs: int, size: int, generator: torch.Generator):
    """`epochs` passes over `data` in freshly shuffled minibatches of `size` trajectories: (batch, its advantages)."""
    for _ in range(epochs):
        order = torch.randperm(len(data), generator=generator, device=generator.device).cpu()
        for start in range(0, len(data), size):
            idx = order[start : start + size]
            yield data.index(idx), advantages[idx.to(advantages.device)]


def random_steps(num_steps: int, fraction: float, generator: torch.Generator) -> list[int]:
    """A random subset of step indices k in 1..T: DDPO's per-update timestep subsampling."""
    n = max(1, round(fraction * num_steps))
    return (torch.randperm(num_steps, generator=generator, device=generator.device).cpu()[:n] + 1).tolist()


def step_terms(policy: DiffusionPolicy, prior: DiffusionPolicy, batch: Trajectories, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """At step k of every trajectory in `batch`: new log-prob of the taken action, old log-prob, and KL(policy || prior)."""
    state = batch.state(k)
    dist: StepDistribution = policy.step_distribution(state, k)
    with torch.no_grad():
        ref = prior.step_distribution(state, k)
    log_prob = dist.log_prob(batch.state(k - 1))
    return log_prob, batch.log_probs[batch.num_steps - k], dist.kl(ref)


@torch.no_grad()
def step_kls(policy: DiffusionPolicy, prior: DiffusionPolicy, batch: Trajectories, chunk: int = 256) -> torch.Tensor:
    """KL(policy || prior) of each step of each trajectory; shape (T, B), the first step (from x_T) first.

    Their sum over steps is the trajectory KL. The last step's std is a tenth of the others', so
    its KL dominates that sum: a run logs it apart.

    All (crystal, step) pairs go through the network together, `chunk` at a time.
    """
    t, b = batch.num_steps, len(batch)
    flat = lambda x: x[:-1].reshape(t * b, *x.shape[2:])  # noqa: E731  x_T .. x_1, step-major
    types, frac, lattice = flat(batch.types), flat(batch.frac), flat(batch.lattice)
    mask = batch.mask.repeat(t, 1)
    ks = torch.arange(t, 0, -1, device=mask.device).repeat_interleave(b)
    kls = []
    for s in range(0, t * b, chunk):
        state = DiffusionState(types[s : s + chunk], frac[s : s + chunk], lattice[s : s + chunk], mask[s : s + chunk])
        k = ks[s : s + chunk]
        kls.append(policy.step_distribution(state, k).kl(prior.step_distribution(state, k)))
    return torch.cat(kls).reshape(t, b)
