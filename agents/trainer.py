"""The training loop: sample -> screen -> select -> evaluate -> update (agents/pipeline.py), log, checkpoint; resumable exactly.

Each iteration ends with, in this order, its rows in `evaluated.csv` and `metrics.csv`, `best.csv`,
TensorBoard/W&B, then an atomic `checkpoint.pt` (policy, optimizer, agent, every RNG stream, reward
caches, diversity memory, the screen's history and the discoveries). `--resume` loads it, drops any
rows a killed run wrote past it, and continues with the next iteration as if nothing happened.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from pymatgen.analysis.structure_matcher import StructureMatcher
from tqdm import tqdm

from ..benchmarks.metrics import unique_novel
from ..crystal import MatchIndex, structure_to_cif, validity
from ..envs.denoising import CrystalDenoisingVectorEnv, check_chemistry
from ..envs.registration import CUSTOM_ID, load_plugins
from ..envs.tasks import FULL_REWARD, Task, get_task
from ..files import RunLock, atomic_save, clear_temporaries, from_plain, load_checkpoint, non_finite, restore_generator, same_content, to_plain
from ..policies import DiffusionPolicy, load_prior, save_policy
from ..datasets import training_data
from ..rewards.base import RewardResult
from ..rewards.composite import CompositeReward
from ..rewards.filters import DiversityFilter
from .base import Agent, trajectory_kl
from .loggers import RunLog, append_csv, truncate_csv
from .active import ActiveConfig, ActiveLearning
from .options import check_ranges, parse_options
from .pipeline import Pool, Screen, ScreenConfig, Selection
from .grpo import GRPO, GRPOConfig
from .ppo import PPO, PPOConfig
from .prior_only import PriorOnly, PriorOnlyConfig
from .reinforce import REINFORCE, REINFORCEConfig
from .random_crystals import RandomCrystals, RandomCrystalsConfig
from .rollout import Rollout, Trajectories, collect, unscored
from .rwkl import MatInvent, MatInventConfig, RewardWeightedKL, RWKLConfig

AGENTS: dict[str, tuple[type, type]] = {
    "ppo": (PPO, PPOConfig),
    "rwkl": (RewardWeightedKL, RWKLConfig),
    "reinforce": (REINFORCE, REINFORCEConfig),
    "prior": (PriorOnly, PriorOnlyConfig),
    "active": (ActiveLearning, ActiveConfig),
    "matinvent": (MatInvent, MatInventConfig),
    "grpo": (GRPO, GRPOConfig),
    "pyxtal": (RandomCrystals, RandomCrystalsConfig),
}
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        env_id: a registered task id (a bare task name is accepted).
        agent: "matinvent" (MatInvent's released pipeline), "ppo", "rwkl" (MatInvent's update alone), "reinforce",
            "active" (PPO on the crystals a surrogate chose to evaluate) or "prior" (no updates, the floor).
        iterations: RL iterations at most.
        batch_size: E, the most crystals evaluated per iteration (None: the agent's own, 64; MatInvent's 16);
            each iteration samples a pool of E times the agent's `pool_factor`.
        budget: stop once this many property evaluations are spent (None: run every iteration).
        screen: evaluate only crystals that pass the screen (agents/pipeline.py); False records the
            checks but evaluates whatever the agent selects (the unscreened ablation).
        relax: the screen relaxes crystals with the MLIP before reading E_hull (off: a single point).
        hull_references: training crystals in the screen's MLIP hull (None: all of them).
        steps: reverse-diffusion steps T.
        correctors: Langevin corrector steps before each predictor step (episodes of T(1 + C) actions).
        seed: seed of sampling and updates.
        out: run directory.
        device: torch device.
        wandb: "offline" or "online" to also log to Weights & Biases.
        novelty_reference: CSV of known crystals for novelty; the prior's own file means its training split.
        diversity: "default" (the agent's recipe), "none", "composition" or "structure".
        agent_options: fields of the agent's config dataclass, parsed with their types.
        kl_crystals: trajectories whose all-step KL to the prior is logged each iteration.
        best_size: distinct crystals kept in best.csv.
        ray_address: evaluate costly properties on Ray actors ("local", "auto" or an address).
        ray_workers: actors per costly property source (default: one per CPU).
        rollout_workers: Ray actors sampling the batch in parallel (0: in this process).
        prior: fine-tune this prior instead of the task's: a shipped prior's name, a checkpoint, or a
            `latticegym pretrain` or `train` run directory; required for `LatticeGym/Custom-v0`.
        reward: the reward of `LatticeGym/Custom-v0`: a registered name, "module:attr" or a YAML/JSON config.
        plugins: modules or .py files imported first, which register tasks and rewards of your own.
    """

    env_id: str
    agent: str = "ppo"
    iterations: int = 30
    batch_size: int | None = None  # E; None: the agent's own
    budget: int | None = None  # property evaluations; None: run every iteration
    screen: bool = True
    relax: bool = False
    hull_references: int | None = None
    steps: int = 100  # reverse-diffusion steps T
    correctors: int = 0  # Langevin corrector steps per level: an episode has steps * (1 + correctors) actions
    seed: int = 0
    out: str = "runs/train"
    device: str = "cpu"
    wandb: str | None = None  # "offline" or "online"
    novelty_reference: str | None = None  # CSV(.gz) of known crystals; the prior's own file means its training split
    diversity: str = "default"  # "default" (the agent's recipe), "none", "composition" or "structure"
    agent_options: dict = field(default_factory=dict)  # fields of the agent's config dataclass
    kl_crystals: int = 8  # trajectories whose KL to the prior (over all steps) is logged each iteration
    best_size: int = 100
    ray_address: str | None = None  # evaluate costly properties on Ray actors: "local", "auto" or a cluster address
    ray_workers: int | None = None  # actors per costly property source (default: one per CPU)
    rollout_workers: int = 0  # Ray actors sampling the batch in parallel (0: sample in this process)
    prior: str | None = None  # a prior name, checkpoint or run directory instead of the task's
    reward: str | None = None  # LatticeGym/Custom-v0 only: a reward name, "module:attr" or YAML/JSON config
    plugins: tuple[str, ...] = ()  # modules or .py files that register tasks and rewards

    def __post_init__(self):
        self.plugins = tuple(self.plugins)
        load_plugins(self.plugins)
        if self.env_id.endswith("Custom-v0"):
            if not (self.prior and self.reward):
                raise ValueError(f"{CUSTOM_ID} needs a prior and a reward (--prior, --reward), or register a task: latticegym.register_task")
        else:
            self.env_id = get_task(self.env_id).env_id  # accepts a bare task name too
            if self.reward:
                raise ValueError(f"--reward is for {CUSTOM_ID}; {self.env_id} has its own (register a task to name another)")
        check_ranges(self, at_least_one=("iterations", "batch_size", "budget", "steps", "best_size", "hull_references"), non_negative=("kl_crystals", "rollout_workers", "correctors"))
        if self.ray_workers is not None:
            check_ranges(self, at_least_one=("ray_workers",))


def make_agent(name: str, policy: DiffusionPolicy, prior: DiffusionPolicy, options: dict | None = None, seed: int = 0) -> Agent:
    """Build agent `name` (a key of `AGENTS`) with `options` parsed by its config's field types."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; agents: {', '.join(AGENTS)}")
    cls, config_cls = AGENTS[name]
    return cls(policy, prior, config_cls(**parse_options(config_cls, options or {}, f"agent {name!r}")), seed=seed)


def evaluated_per_iteration(cfg: TrainConfig) -> int:
    """E: the run's batch size, else the agent config's `eval_size` (MatInvent's 16), else the agent's own (64)."""
    if cfg.batch_size:
        return cfg.batch_size
    cls, config_cls = AGENTS[cfg.agent]
    return getattr(config_cls(**parse_options(config_cls, cfg.agent_options, f"agent {cfg.agent!r}")), "eval_size", cls.batch_size)


def run_task(cfg: TrainConfig) -> Task:
    """The task a run trains on: the registered one (with `cfg.prior` if given), or for Custom-v0 one made of `cfg.prior` and `cfg.reward`."""
    if cfg.env_id == CUSTOM_ID:
        return Task("Custom", cfg.prior, cfg.reward, "your reward at its maximum", "yours", FULL_REWARD)
    task = get_task(cfg.env_id)
    return replace(task, prior=cfg.prior) if cfg.prior else task


def saved_state(out: str | Path) -> dict:
    """What the checkpoint of the run in `out` holds (its `config` is what `--resume` continues with)."""
    path = Path(out) / CHECKPOINT
    if not path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {path}")
    return from_plain(load_checkpoint(path))


def _warn_costs(task: Task, cfg: TrainConfig) -> None:
    if task.experimental:
        warnings.warn(f"{task.name} is experimental: {task.experimental}", stacklevel=3)
    if cfg.agent == "rwkl" and cfg.device == "cpu" and int(cfg.agent_options.get("timesteps", RWKLConfig.timesteps)) >= 500:
        warnings.warn(
            "rwkl runs MatInvent's released update: 3 epochs over 1000 timesteps per iteration, minutes per iteration on a CPU; "
            "--set timesteps=100 for a quick look (not the released pipeline)",
            stacklevel=3,
        )


def _with_diversity(reward, mode: str, default: dict | None):
    spec = default if mode == "default" else (None if mode == "none" else {"mode": mode})
    if spec is None:
        return reward
    if not isinstance(reward, CompositeReward):
        raise ValueError(f"a diversity filter needs a CompositeReward, the task's reward is {type(reward).__name__}; pass diversity='none'")
    if not any(isinstance(f, DiversityFilter) for f in reward.filters):
        reward.filters.append(DiversityFilter(**spec))
    return reward


def _guard(reward):
    """The reward's guards as one check ("" where a crystal passes), or None for a reward without guards."""
    return reward.refusal if isinstance(reward, CompositeReward) else None


def known_crystals(prior: DiffusionPolicy, path: str | None) -> list:
    """The prior's training crystals in `path` (novelty and the hull), checked to be of the prior's chemistry; [] without a path."""
    if not path:
        return []
    known = training_data(prior.spec, path)
    if not known.structures:
        raise ValueError(f"--reference {path}: no readable crystals ({len(known.skipped)} rows rejected), so novelty would be meaningless")
    vocabulary = set(prior.spec.elements)
    outside = np.mean([not {el.Z for el in s.composition.elements} <= vocabulary for s in known.structures])
    if outside > 0.5:
        raise ValueError(f"--reference {path}: {outside:.0%} of its crystals hold elements the prior never generates, so no sample could match them (another chemistry?)")
    return known.structures


class Trainer:
    """The training loop of `latticegym train`: sample, screen, select, evaluate, update, log and checkpoint, resumably.

    Args:
        cfg: the run's settings; the task's prior is loaded, copied as the frozen KL reference, and the
            task's reward gets the diversity filter `cfg.diversity` asks for.
    """
    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.task = run_task(cfg)
        self.policy = load_prior(self.task.prior, num_steps=cfg.steps, device=cfg.device)
        self.policy.set_num_steps(cfg.steps, cfg.correctors)
        self.prior = self.policy.frozen_copy()
        self.agent: Agent = make_agent(cfg.agent, self.policy, self.prior, cfg.agent_options, seed=cfg.seed)
        self.batch_size = evaluated_per_iteration(cfg)
        self.pool_size = self.batch_size * self.agent.pool_factor
        self.reward = _with_diversity(self.task.make_reward(), cfg.diversity, self.agent.default_diversity)
        check_chemistry(self.prior, self.reward)
        _warn_costs(self.task, cfg)
        self.known = known_crystals(self.prior, cfg.novelty_reference)
        self.screen = Screen(_guard(self.reward), self.known, ScreenConfig(drop=cfg.screen, relax=cfg.relax, hull_references=cfg.hull_references))
        self.workers = None
        if cfg.ray_address or cfg.rollout_workers:
            from ..rewards.parallel import connect, distribute

            connect(cfg.ray_address or "local")
            if cfg.rollout_workers:  # first: reward actors then take the CPUs that are left
                from .distributed import RolloutWorkers

                self.workers = RolloutWorkers(self.task.prior, cfg.steps, self.pool_size, cfg.rollout_workers, cfg.correctors)
            if cfg.ray_address:
                distribute(self.reward, cfg.ray_workers)
        self.agent.attach(self.reward, self.known)
        self.sampler = CrystalDenoisingVectorEnv(num_envs=self.pool_size, prior=self.prior, reward=unscored, num_steps=cfg.steps, correctors=cfg.correctors)
        self.generator = torch.Generator(device=self.policy.device).manual_seed(cfg.seed)
        self.iteration = 0  # the next one to run
        self.best: list[dict] = []
        self.evaluations = 0  # crystals sent to the property: the headline cost
        self.sampled = 0
        self.discovered: list = []  # SUN successes, each distinct from the earlier ones
        self._discoveries = MatchIndex()
        self._matcher = StructureMatcher()

    # ------------------------------------------------------------------ checkpoints
    def save(self, wandb_id: str | None) -> None:
        """Write checkpoint.pt atomically (the previous one kept as checkpoint.pt.prev)."""
        state = {
            "iteration": self.iteration,
            "config": asdict(self.cfg),
            "policy": self.policy.network.state_dict(),
            "agent": self.agent.state_dict(),
            "generator": self.generator.get_state(),
            "sampler_rng": self.sampler.np_random.bit_generator.state,
            "reward": self.reward.state_dict() if hasattr(self.reward, "state_dict") else None,
            "screen": self.screen.state_dict(),
            "best": self.best,
            "counts": {"evaluations": self.evaluations, "sampled": self.sampled},
            "discovered": self.discovered,
            "wandb_id": wandb_id,
        }
        atomic_save(to_plain(state), self.out / CHECKPOINT, keep_previous=True)

    def load(self) -> str | None:
        """Restore the state of OUT/checkpoint.pt (or its .prev if it is corrupt); returns the W&B run id."""
        path = self.out / CHECKPOINT
        state = saved_state(self.out)
        saved = {k: v for k, v in state["config"].items() if k not in ("iterations", "budget", "out", "device", "wandb", "ray_address", "ray_workers", "plugins")}
        ours = {k: v for k, v in asdict(self.cfg).items() if k in saved}
        diff = {k: (saved[k], ours[k]) for k in saved if saved[k] != ours[k]}
        if "novelty_reference" in diff and same_content(*diff["novelty_reference"]):
            del diff["novelty_reference"]  # the same data at another path
        if diff:
            raise ValueError(f"--resume with different settings than the checkpoint (checkpoint, now): {diff}")
        self.iteration = state["iteration"]
        self.policy.network.load_state_dict(state["policy"])
        self.agent.load_state_dict(state["agent"])
        restore_generator(self.generator, state["generator"], f"the sampling generator of {path}")
        self.sampler.np_random = np.random.default_rng()
        self.sampler.np_random.bit_generator.state = state["sampler_rng"]
        if state["reward"] is not None:
            self.reward.load_state_dict(state["reward"])
        self.screen.load_state_dict(state["screen"])
        self.best = state["best"]
        self.evaluations, self.sampled = state["counts"]["evaluations"], state["counts"]["sampled"]
        self.discovered = list(state["discovered"])
        self._discoveries = MatchIndex(self.discovered)
        return state["wandb_id"]

    # ------------------------------------------------------------------ the loop
    def done(self) -> bool:
        """Every iteration run, or the property budget spent."""
        return self.iteration >= self.cfg.iterations or (self.cfg.budget is not None and self.evaluations >= self.cfg.budget)

    def run(self, resume: bool = False, progress: bool = True, lock: bool = True) -> Path:
        """Run (or with `resume`, continue) until `done`, holding the run directory's lock throughout
        (`lock=False`: the caller holds it, as the benchmark runner does until a run's summary is written)."""
        with RunLock(self.out) if lock else contextlib.nullcontext():
            for path in clear_temporaries(self.out):
                print(f"removed {path}, left by a save that was killed", file=sys.stderr)
            wandb_id = self.load() if resume else None
            if not resume and (self.out / CHECKPOINT).exists():
                raise FileExistsError(f"{self.out} already holds a run; pass --resume to continue it or choose another --out")
            if resume:  # a kill between the checkpoint and policy.pt would leave them out of step
                save_policy(self.policy, self.out / "policy.pt")
            truncate_csv(self.out / "evaluated.csv", self.iteration)
            log = RunLog(self.out, self.iteration, asdict(self.cfg), self.cfg.wandb, wandb_id)
            bar = tqdm(total=self.cfg.iterations, initial=self.iteration, desc=f"{self.cfg.agent} on {self.task.name}", unit="it", disable=not progress)
            try:
                while not self.done():
                    metrics, hists = self.step()
                    self._check_finite(metrics)
                    log.log(self.iteration, metrics, hists)
                    self.iteration += 1
                    self.save(log.wandb_id)
                    save_policy(self.policy, self.out / "policy.pt")
                    bar.set_postfix(evaluations=self.evaluations, found=len(self.discovered), kl=f"{metrics['kl']:.1f}")
                    bar.update()
            finally:
                bar.close()
                log.close()
                if self.workers is not None:
                    self.workers.close()
        return self.out

    def _check_finite(self, metrics: dict[str, float]) -> None:
        """Stop before a non-finite policy is saved: the checkpoint of the previous iteration stays the last one."""
        bad = non_finite(self.policy.network.state_dict())
        losses = [k for k, v in metrics.items() if "loss" in k and not np.isfinite(v)]
        if bad or losses:
            what = f"{len(bad)} weight tensors became NaN or inf (e.g. {bad[0]})" if bad else f"non-finite {', '.join(losses)}"
            raise FloatingPointError(
                f"iteration {self.iteration}: {what}; nothing of it was saved, {self.out / CHECKPOINT} holds iteration {self.iteration - 1}. "
                "Check the agent options (--set), e.g. a NaN or huge coefficient or learning rate"
            )

    def step(self) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """One iteration of the pipeline: sample, screen, select, evaluate, update; returns what to log."""
        clock = time.perf_counter()
        trajectories, structures = self._sample()
        t_sample = time.perf_counter() - clock
        pool = Pool(trajectories, structures, self.screen(structures), drop=self.cfg.screen)
        t_screen = time.perf_counter() - clock - t_sample
        self.sampled += len(pool)

        selection = self.agent.select(pool, self.batch_size)
        chosen = [int(i) for i in selection.indices]
        if len(chosen) > self.batch_size or not set(chosen) <= set(pool.candidates.tolist()):
            raise RuntimeError(f"agent {self.cfg.agent!r} selected {chosen}: at most {self.batch_size} of the screen's survivors {pool.candidates.tolist()}")
        clock = time.perf_counter()
        result = self.reward([structures[i] for i in chosen])  # the counted cost: the only property evaluation
        t_reward = time.perf_counter() - clock
        self.evaluations += len(chosen)
        self.screen.remember([structures[i] for i in chosen])
        success = np.array([self.task.is_success(result, j) for j in range(len(chosen))], dtype=bool)
        found = self._discover(pool, chosen, success)

        rollout = self._rollout(pool, chosen, result, success, selection)
        metrics = self._metrics(pool, chosen, result, success, rollout)
        clock = time.perf_counter()
        metrics.update(self.agent.update(rollout, self.iteration) if len(rollout) else {})
        metrics.update(t_sample=t_sample, t_screen=t_screen, t_reward=t_reward, t_update=time.perf_counter() - clock)
        self._record(pool, chosen, result, success, found)
        hists = {"reward": result.values, "e_hull": pool.screened.e_hull, **{f"property/{k}": v for k, v in result.properties.items()}}
        return metrics, hists

    def _sample(self) -> tuple[Trajectories | None, list]:
        """A pool of P crystals from the current policy (or the agent, if it generates its own), with no reward."""
        if self.agent.generates:
            return None, self.agent.sample(self.pool_size)
        if self.workers is None:
            rollout = collect(self.sampler, self.policy, self.generator, seed=self.cfg.seed if self.iteration == 0 else None)
            return rollout.trajectories, rollout.structures
        seeds = torch.randint(2**62, (len(self.workers.shares),), generator=self.generator, device=self.generator.device).tolist()
        return self.workers.collect(self.policy, seeds)

    def _discover(self, pool: Pool, chosen: list[int], success: np.ndarray) -> np.ndarray:
        """Which evaluated crystals are discoveries: successes that are stable, unique in the run, novel, and
        distinct from every earlier discovery (the field's SUN success)."""
        found = np.zeros(len(chosen), dtype=bool)
        for j, i in enumerate(chosen):
            if success[j] and pool.screened.sun[i]:
                s = pool.structures[i]
                if not self._discoveries.contains([s])[0]:
                    found[j] = True
                    self._discoveries.add([s])
                    self.discovered.append(s)
        return found

    def _rollout(self, pool: Pool, chosen: list[int], result: RewardResult, success: np.ndarray, selection: Selection) -> Rollout:
        """What the update learns from: the evaluated crystals and, for an agent that learns from them, the
        screened-out ones with the reward's failure value (known, so no evaluation)."""
        taken = set(chosen)
        refused = [i for i in np.flatnonzero(~pool.screened.passed) if i not in taken] if self.agent.learns_from_screened else []
        rows = chosen + refused
        failure = float(getattr(self.reward, "failure_value", 0.0))
        n, m = len(chosen), len(refused)
        pad = lambda arr: np.concatenate([np.asarray(arr, dtype=float), np.full(m, np.nan)])  # noqa: E731
        combined = RewardResult(
            np.concatenate([result.values, np.full(m, failure)]),
            {k: pad(v) for k, v in result.properties.items()},
            {k: pad(v) for k, v in result.components.items()},
            np.concatenate([result.ok, np.zeros(m, dtype=bool)]),
            list(result.reasons) + [f"screened out: {pool.screened.reasons[i]}" for i in refused],
        )
        trajectories = pool.trajectories.index(rows) if pool.trajectories is not None else None
        if trajectories is not None:
            trajectories.rewards = torch.as_tensor(combined.values, dtype=torch.float32, device=trajectories.rewards.device)
        evaluated = np.arange(n + m) < n
        return Rollout(trajectories, [pool.structures[i] for i in rows], combined, np.concatenate([success, np.zeros(m, bool)]), 0.0, evaluated, selection.context)

    def _metrics(self, pool: Pool, chosen: list[int], result: RewardResult, success: np.ndarray, rollout: Rollout) -> dict[str, float]:
        structures = [pool.structures[i] for i in chosen]
        valid = np.array([bool(validity(s)) for s in structures], dtype=bool)
        uniqueness, novelty, _ = unique_novel(structures, valid, self.screen.known)  # the screen's index of the training crystals
        screened = pool.screened
        mean = lambda x: float(np.mean(x)) if len(x) else float("nan")  # noqa: E731
        metrics = {
            "evaluations": float(self.evaluations),
            "evaluated": float(len(chosen)),
            "sampled": float(self.sampled),
            "screen_single_points": float(self.screen.single_points),
            "screen_relax_steps": float(self.screen.relax_steps),
            "discoveries": float(len(self.discovered)),
            "pool_guards_pass": mean(screened.guarded),
            "pool_sun_rate": mean(screened.sun),
            "reward_mean": mean(result.values),
            "reward_max": float(np.max(result.values)) if len(chosen) else float("nan"),
            "success_rate": mean(success),
            "validity": mean(valid),
            "uniqueness": uniqueness,
            "novelty": novelty if novelty is not None else float("nan"),
            # of the policy that sampled this pool, before its update
            "kl": self._kl(pool),
            "ok_rate": mean(result.ok),
            "update_rows": float(len(rollout)),
        }
        for source in getattr(self.reward, "sources", []):
            metrics[f"calls/{source.name}"] = float(source.evaluations)
        for name, values in result.properties.items():
            finite = np.asarray(values, dtype=float)[np.isfinite(values)]
            metrics[f"{name}_mean"] = float(finite.mean()) if len(finite) else float("nan")
        return metrics

    def _kl(self, pool: Pool) -> float:
        """KL(policy || prior) over whole trajectories of the pool's first crystals, before this iteration's update (0 without trajectories)."""
        if pool.trajectories is None:
            return 0.0
        return float(trajectory_kl(self.policy, self.prior, pool.trajectories.index(range(min(self.cfg.kl_crystals, len(pool))))).mean())

    def _record(self, pool: Pool, chosen: list[int], result: RewardResult, success: np.ndarray, found: np.ndarray) -> None:
        it = self.iteration
        screened = pool.screened
        rows = []
        for j, i in enumerate(chosen):
            s = pool.structures[i]
            row = {"material_id": f"it{it:04d}-{i:03d}", "iteration": it, "reward": float(result.values[j]), "success": bool(success[j])}
            row.update({"discovery": bool(found[j]), "e_hull": float(screened.e_hull[i]), "stable": bool(screened.stable[i]), "novel": bool(screened.novel[i])})
            row.update({"unique": bool(screened.unique[i]), "ok": bool(result.ok[j]), "reason": result.reasons[j], "formula": s.composition.reduced_formula})
            row.update({k: float(v[j]) for k, v in result.properties.items()})
            row["cif"] = structure_to_cif(s)
            rows.append(row)
        append_csv(self.out / "evaluated.csv", rows)
        for j in np.argsort(-result.values, kind="stable"):
            if result.ok[j] and result.values[j] > 0:
                self._offer_best(rows[j], pool.structures[chosen[j]])
        best_rows = [{k: v for k, v in entry.items() if k != "structure"} for entry in self.best]
        path = self.out / "best.csv"
        path.unlink(missing_ok=True)
        append_csv(path, best_rows)

    def _offer_best(self, row: dict, structure) -> None:
        if len(self.best) >= self.cfg.best_size and row["reward"] <= self.best[-1]["reward"]:
            return
        for j, entry in enumerate(self.best):
            if entry["formula"] == row["formula"] and self._matcher.fit(entry["structure"], structure):
                if row["reward"] > entry["reward"]:
                    self.best[j] = {**row, "structure": structure}
                    self.best.sort(key=lambda e: -e["reward"])
                return
        self.best.append({**row, "structure": structure})
        self.best.sort(key=lambda e: -e["reward"])
        del self.best[self.cfg.best_size :]


@torch.no_grad()
def evaluate_policy(
    policy: DiffusionPolicy | None,
    task: Task | str,
    num: int = 256,
    seed: int = 12345,
    batch_size: int = 64,
    label: str = "",
    known: list | None = None,
    relax: bool = False,
    sampler: Callable[[int], list] | None = None,
) -> dict[str, float]:
    """Fresh, unfiltered samples of `policy` scored by the task's plain reward (no diversity filter), apart from any budget.

    Returns the success rate, the SUN success rate (successes that are stable on the MLIP hull, unique
    among the samples and, with `known` training crystals, novel; NaN without them), the mean reward
    and the uniqueness.

    Args:
        policy: the policy to sample (its own T).
        task: a registered task (or its id); its reward scores the samples.
        num: how many crystals.
        seed: sampling seed.
        batch_size: crystals per vector-env batch.
        label: when given, a progress bar names what is being scored.
        known: the prior's training crystals, for novelty and the hull.
        relax: relax before reading E_hull, as the run's screen did.
        sampler: makes the `num` crystals instead of `policy` (an agent that generates its own, seeded by its own seed).
    """
    task = get_task(task) if isinstance(task, str) else task
    reward = task.make_reward()
    if sampler is not None:
        structures = sampler(num)
    else:
        batch_size = min(batch_size, num)
        env = CrystalDenoisingVectorEnv(num_envs=batch_size, prior=policy, reward=unscored, num_steps=policy.num_steps)
        generator = torch.Generator(device=policy.device).manual_seed(seed)
        structures = []
        for b in tqdm(range(-(-num // batch_size)), desc=f"sampling {num} fresh crystals of the {label}", unit="batch", disable=not label):
            structures += collect(env, policy, generator, seed=seed + b).structures
        structures = structures[:num]
    result = reward(structures)
    success = np.array([task.is_success(result, i) for i in range(num)], dtype=bool)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # without known crystals the SUN rate is NaN, said below
        screened = Screen(_guard(reward), known or [], ScreenConfig(drop=False, relax=relax))(structures)
    uniqueness, _, _ = unique_novel(structures, np.array([bool(validity(s)) for s in structures]), None)
    return {
        "success_rate": float(success.mean()),
        "sun_success": float((success & screened.sun).mean()) if known else float("nan"),
        "reward_mean": float(result.values.mean()),
        "uniqueness": uniqueness,
    }
