"""Named task suites: which env, what counts as success, the evaluation budget, and per-agent settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..agents.grpo import CHEMELEON2
from ..envs.tasks import get_task


@dataclass(frozen=True)
class BenchTask:
    """One task of a suite.

    Attributes:
        env_id: the registered task id.
        budget: property evaluations per run: a run stops at the end of the iteration that spends them.
        batch_size: E, the most crystals evaluated per iteration (None: each agent's own, 64 or MatInvent's 16).
        steps: T.
        agent_options: agent label -> options for its config dataclass.
        hull_references: training crystals in the screen's MLIP hull (None: the whole training split).
        diversity: the diversity filter every agent gets (MatInvent's composition filter, tol 3, buffer 6).
        policy_samples: fresh, unfiltered samples of each final policy, scored apart from the budget.
        relax: the screen relaxes crystals with the MLIP before E_hull (off: a single point, the CPU default).
        max_iterations_factor: a run stops after this many times the iterations that a full E per
            iteration needs, spent or not, so a policy whose samples all fail the screen still ends.
    """

    env_id: str
    budget: int
    batch_size: int | None = None
    steps: int = 100
    agent_options: dict = field(default_factory=dict)
    hull_references: int | None = None
    diversity: str = "composition"  # the same filter for every agent, whatever its own recipe says
    policy_samples: int = 128
    relax: bool = False
    max_iterations_factor: int = 4

    @property
    def task(self):
        return get_task(self.env_id)

    @property
    def success(self) -> str:
        return self.task.target

    def max_iterations(self, batch_size: int) -> int:
        """The iteration cap of a run that evaluates at most `batch_size` crystals per iteration."""
        return self.max_iterations_factor * -(-self.budget // batch_size)


@dataclass(frozen=True)
class Suite:
    """A named set of benchmark tasks."""

    name: str
    tasks: tuple[BenchTask, ...]
    description: str = ""
    selector: str = ""  # the `latticegym bench` options that pick it (default: --suite NAME)


@dataclass(frozen=True)
class Label:
    """What an agent label of a sweep runs: an agent, its options, and train settings that differ from the suite's."""

    agent: str
    options: dict = field(default_factory=dict)
    train: dict = field(default_factory=dict)  # TrainConfig fields, e.g. {"screen": False}
    note: str = ""


# Agent labels that a sweep can name besides the agents themselves.
VARIANTS = {
    # MatInvent's update alone on 64 crystals per iteration, unscreened: the ablation of its pipeline (`matinvent`).
    "rwkl": Label("rwkl", {}, {"screen": False}, "MatInvent's update alone, 64 unscreened crystals per iteration (ablation)"),
    # The same with the settings our tuning chose (docs/standard_suite/tuning.md).
    "rwkl-tuned": Label("rwkl", {"lr": 3e-4, "sigma": 0.1}, {"screen": False}, "rwkl with tuned lr and sigma (ablation)"),
    # active's grid, acquisition x baseline: each ingredient measured on its own.
    "active-pool": Label("active", {"baseline": "pool"}, note="UCB, pool baseline (biased towards what the surrogate prefers)"),
    "active-random": Label("active", {"acquisition": "random"}, note="random selection, batch baseline"),
    "active-random-pool": Label("active", {"acquisition": "random", "baseline": "pool"}, note="random selection, pool baseline"),
    # GRPO with Chemeleon2-RL's settings; plain `grpo` has OMatG-IRL's (agents/grpo.py).
    "grpo-chemeleon2": Label("grpo", CHEMELEON2, note="GRPO with Chemeleon2-RL's settings"),
}

# The quick suite is a pipeline test: MatInvent's full sweep (3 epochs x 1000 timesteps) would take most of CI's time.
QUICK_OPTIONS = {"rwkl": {"timesteps": 100}, "matinvent": {"timesteps": 100}}
QUICK_SETTINGS = dict(batch_size=16, steps=20, hull_references=200, agent_options=QUICK_OPTIONS, policy_samples=32)

SUITES = {
    s.name: s
    for s in [
        Suite(
            "quick",
            (
                BenchTask("LatticeGym/PerovskiteLowHHI-v0", budget=192, **QUICK_SETTINGS),
                BenchTask("LatticeGym/PerovskiteFormationEnergy-v0", budget=128, **QUICK_SETTINGS),
            ),
            "CI-sized: two perov_5 tasks, T=20, batch 16, a few iterations, MatInvent's update sweeping 100 of the 1000 timesteps; a smoke test of the whole pipeline, not a result",
        ),
        Suite(
            "standard",
            (
                BenchTask("LatticeGym/PerovskiteFormationEnergy-v0", budget=1024),
                BenchTask("LatticeGym/PerovskiteMagnet-v0", budget=1024),
                BenchTask("LatticeGym/PerovskiteLowHHI-v0", budget=1024),
            ),
            "1,024 property evaluations per run (MatInvent's 64 iterations of 16), T=100, every agent through the same screen "
            "(guards, unique, novel, CHGNet single-point E_hull <= 0.1 eV/atom)",
        ),
    ]
}


def get_suite(name: str) -> Suite:
    """The suite `name` ("quick" or "standard"); KeyError lists the suites."""
    if name not in SUITES:
        raise KeyError(f"no suite {name!r}; suites: {', '.join(SUITES)}")
    return SUITES[name]
