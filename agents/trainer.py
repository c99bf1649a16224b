"""The training loop: roll out through the vector env, score, update, log, checkpoint; resumable exactly.

Each iteration ends with, in this order, its rows in `evaluated.csv` and `metrics.csv`, `best.csv`,
TensorBoard/W&B, then an atomic `checkpoint.pt` (policy, optimizer, agent, every RNG stream, reward
caches and diversity memory). `--resume` loads it, drops any rows a killed run wrote past it, and
continues with the next iteration as if nothing happened.
"""

from __future__ import annotations

import contextlib
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import gymnasium as gym
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
from ..policies.pretrain import training_data
from ..rewards.composite import CompositeReward
from ..rewards.filters import DiversityFilter
from .base import Agent, trajectory_kl
from .loggers import RunLog, append_csv, truncate_csv
from .active import ActiveConfig, ActiveLearning
from .options import check_ranges, parse_options
from .ppo import PPO, PPOConfig
from .prior_only import PriorOnly, PriorOnlyConfig
from .reinforce import REINFORCE, REINFORCEConfig
from .rollout import Rollout, collect, unscored
from .rwkl import RewardWeightedKL, RWKLConfig

AGENTS: dict[str, tuple[type, type]] = {
    "ppo": (PPO, PPOConfig),
    "rwkl": (RewardWeightedKL, RWKLConfig),
    "reinforce": (REINFORCE, REINFORCEConfig),
    "prior": (PriorOnly, PriorOnlyConfig),
    "active": (ActiveLearning, ActiveConfig),
}
CHECKPOINT = "checkpoint.pt"


@dataclass
class TrainConfig:
    """One training run.

    Attributes:
        env_id: a registered task id (a bare task name is accepted).
        agent: "ppo", "rwkl", "reinforce", "active" (PPO on the crystals a surrogate chose to evaluate) or "prior" (no updates, the floor).
        iterations: RL iterations, one batch each.
        batch_size: crystals sampled per iteration.
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
    batch_size: int = 64
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
        check_ranges(self, at_least_one=("iterations", "batch_size", "steps", "best_size"), non_negative=("kl_crystals", "rollout_workers", "correctors"))
        if self.ray_workers is not None:
            check_ranges(self, at_least_one=("ray_workers",))


def make_agent(name: str, policy: DiffusionPolicy, prior: DiffusionPolicy, options: dict | None = None, seed: int = 0) -> Agent:
    """Build agent `name` (a key of `AGENTS`) with `options` parsed by its config's field types."""
    if name not in AGENTS:
        raise ValueError(f"unknown agent {name!r}; agents: {', '.join(AGENTS)}")
    cls, config_cls = AGENTS[name]
    return cls(policy, prior, config_cls(**parse_options(config_cls, options or {}, f"agent {name!r}")), seed=seed)


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


class TimedReward:
    """Passes a reward through, adding up the seconds it takes (the env calls it inside `step`)."""

    def __init__(self, reward):
        self.reward = reward
        self.seconds = 0.0

    def __call__(self, structures):
        start = time.perf_counter()
        try:
            return self.reward(structures)
        finally:
            self.seconds += time.perf_counter() - start


def _with_diversity(reward, mode: str, default: dict | None):
    spec = default if mode == "default" else (None if mode == "none" else {"mode": mode})
    if spec is None:
        return reward
    if not isinstance(reward, CompositeReward):
        raise ValueError(f"a diversity filter needs a CompositeReward, the task's reward is {type(reward).__name__}; pass diversity='none'")
    if not any(isinstance(f, DiversityFilter) for f in reward.filters):
        reward.filters.append(DiversityFilter(**spec))
    return reward


class Trainer:
    """The training loop of `latticegym train`: roll out, score, update, log and checkpoint, resumably.

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
        self.agent = make_agent(cfg.agent, self.policy, self.prior, cfg.agent_options, seed=cfg.seed)
        self.reward = _with_diversity(self.task.make_reward(), cfg.diversity, self.agent.default_diversity)
        check_chemistry(self.prior, self.reward)  # the env warns when the prior is not the task's own
        _warn_costs(self.task, cfg)
        self.workers = None
        if cfg.ray_address or cfg.rollout_workers:
            from ..rewards.parallel import connect, distribute

            connect(cfg.ray_address or "local")
            if cfg.rollout_workers:  # first: reward actors then take the CPUs that are left
                from .distributed import RolloutWorkers

                self.workers = RolloutWorkers(self.task.prior, cfg.steps, cfg.batch_size, cfg.rollout_workers, cfg.correctors)
            if cfg.ray_address:
                distribute(self.reward, cfg.ray_workers)
        if hasattr(self.agent, "attach"):  # an agent that models the reward to choose what to evaluate
            self.agent.attach(self.reward)
        self.timed = TimedReward(self.reward)
        self.pool = None
        if getattr(self.agent, "oversample", 1) > 1:
            if self.workers is not None:
                raise ValueError(f"agent {cfg.agent!r} samples its own pool; it does not take rollout workers")
            self.pool = CrystalDenoisingVectorEnv(
                num_envs=cfg.batch_size * self.agent.oversample, prior=self.prior, reward=unscored, num_steps=cfg.steps, correctors=cfg.correctors
            )
        self.env: CrystalDenoisingVectorEnv = gym.make_vec(
            cfg.env_id,
            num_envs=cfg.batch_size,
            vectorization_mode="vector_entry_point",
            prior=self.prior,
            reward=self.timed,
            num_steps=cfg.steps,
            success=self.task.success,
        ).unwrapped
        self.generator = torch.Generator(device=self.policy.device).manual_seed(cfg.seed)
        self.novelty = MatchIndex(self._reference(cfg.novelty_reference)) if cfg.novelty_reference else None
        self.iteration = 0  # the next one to run
        self.best: list[dict] = []
        self.scored = 0
        self._matcher = StructureMatcher()

    def _reference(self, path: str) -> list:
        known = training_data(self.prior.spec, path)
        if not known.structures:
            raise ValueError(f"--reference {path}: no readable crystals ({len(known.skipped)} rows rejected), so novelty would be meaningless")
        vocabulary = set(self.prior.spec.elements)
        outside = np.mean([not {el.Z for el in s.composition.elements} <= vocabulary for s in known.structures])
        if outside > 0.5:
            raise ValueError(f"--reference {path}: {outside:.0%} of its crystals hold elements the prior never generates, so no sample could match them (another chemistry?)")
        return known.structures

    # ------------------------------------------------------------------ checkpoints
    def save(self, wandb_id: str | None) -> None:
        """Write checkpoint.pt atomically (the previous one kept as checkpoint.pt.prev)."""
        state = {
            "iteration": self.iteration,
            "config": asdict(self.cfg),
            "policy": self.policy.network.state_dict(),
            "agent": self.agent.state_dict(),
            "generator": self.generator.get_state(),
            "env_rng": self.env.np_random.bit_generator.state,
            "pool_rng": self.pool.np_random.bit_generator.state if self.pool is not None else None,
            "reward": self.reward.state_dict() if hasattr(self.reward, "state_dict") else None,
            "best": self.best,
            "scored": self.scored,
            "wandb_id": wandb_id,
        }
        atomic_save(to_plain(state), self.out / CHECKPOINT, keep_previous=True)

    def load(self) -> str | None:
        """Restore the state of OUT/checkpoint.pt (or its .prev if it is corrupt); returns the W&B run id."""
        path = self.out / CHECKPOINT
        state = saved_state(self.out)
        saved = {k: v for k, v in state["config"].items() if k not in ("iterations", "out", "device", "wandb", "ray_address", "ray_workers", "plugins")}
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
        for env, rng in ((self.env, state["env_rng"]), (self.pool, state.get("pool_rng"))):
            if env is not None:
                env.np_random = np.random.default_rng()
                env.np_random.bit_generator.state = rng
        if state["reward"] is not None:
            self.reward.load_state_dict(state["reward"])
        self.best, self.scored = state["best"], state["scored"]
        return state["wandb_id"]

    # ------------------------------------------------------------------ the loop
    def run(self, resume: bool = False, progress: bool = True, lock: bool = True) -> Path:
        """Run (or with `resume`, continue) to `cfg.iterations`, holding the run directory's lock throughout
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
                while self.iteration < self.cfg.iterations:
                    metrics, hists = self.step()
                    self._check_finite(metrics)
                    log.log(self.iteration, metrics, hists)
                    self.iteration += 1
                    self.save(log.wandb_id)
                    save_policy(self.policy, self.out / "policy.pt")
                    bar.set_postfix(reward=f"{metrics['reward_mean']:.3f}", success=f"{metrics['success_rate']:.2f}", kl=f"{metrics['kl']:.1f}")
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
        it = self.iteration
        self.timed.seconds = 0.0
        rollout = self._collect(it)
        t_reward = self.timed.seconds
        metrics = self._metrics(rollout)
        start = time.perf_counter()
        stats = self.agent.update(rollout, it)
        t_update = time.perf_counter() - start
        metrics.update(stats)
        metrics.update(t_sample=rollout.seconds - t_reward, t_reward=t_reward, t_update=t_update)
        self._record(rollout)
        hists = {"reward": rollout.result.values, **{f"property/{k}": v for k, v in rollout.result.properties.items()}}
        return metrics, hists

    def _collect(self, it: int) -> Rollout:
        seed = self.cfg.seed if it == 0 else None
        if self.pool is not None:  # sample a pool, let the agent choose what the reward sees
            start = time.perf_counter()
            pool = collect(self.pool, self.policy, self.generator, seed=seed)
            chosen = self.agent.select(pool.structures, self.cfg.batch_size, pool.trajectories)
            return self._score(pool.trajectories.index(chosen), [pool.structures[i] for i in chosen], start, sampled=len(pool.structures))
        if self.workers is None:
            return collect(self.env, self.policy, self.generator, seed=seed)
        start = time.perf_counter()
        seeds = torch.randint(2**62, (len(self.workers.shares),), generator=self.generator, device=self.generator.device).tolist()
        trajectories, structures = self.workers.collect(self.policy, seeds)
        return self._score(trajectories, structures, start)

    def _score(self, trajectories, structures: list, start: float, sampled: int = 0) -> Rollout:
        """Score crystals sampled outside the env in one reward call: one cache, one diversity memory."""
        result = self.timed(structures)
        trajectories.rewards = torch.as_tensor(result.values, dtype=torch.float32, device=trajectories.rewards.device)
        success = np.array([self.task.is_success(result, i) for i in range(len(structures))], dtype=bool)
        return Rollout(trajectories, structures, result, success, time.perf_counter() - start, sampled)

    def _metrics(self, rollout: Rollout) -> dict[str, float]:
        structures, result = rollout.structures, rollout.result
        self.scored += len(structures)
        valid = np.array([bool(validity(s)) for s in structures], dtype=bool)
        uniqueness, novelty, _ = unique_novel(structures, valid, self.novelty)  # the metrics' definitions
        metrics = {
            "evaluations": float(getattr(self.reward, "evaluations", self.scored)),
            "reward_mean": float(np.mean(result.values)),
            "reward_max": float(np.max(result.values)),
            "success_rate": float(np.mean(rollout.success)),
            "validity": float(valid.mean()),
            "uniqueness": uniqueness,
            "novelty": novelty if novelty is not None else float("nan"),
            # of the policy that sampled this batch, before its update
            "kl": float(trajectory_kl(self.policy, self.prior, rollout.trajectories.index(range(min(self.cfg.kl_crystals, len(structures))))).mean()),
            "ok_rate": float(np.mean(result.ok)),
            "evaluations_saved": float(rollout.evaluations_saved),
        }
        for name, values in result.properties.items():
            finite = np.asarray(values, dtype=float)[np.isfinite(values)]
            metrics[f"{name}_mean"] = float(finite.mean()) if len(finite) else float("nan")
        return metrics

    def _record(self, rollout: Rollout) -> None:
        result, it = rollout.result, self.iteration
        rows = []
        for i, s in enumerate(rollout.structures):
            row = {"material_id": f"it{it:04d}-{i:03d}", "iteration": it, "reward": float(result.values[i]), "success": bool(rollout.success[i])}
            row.update({"ok": bool(result.ok[i]), "reason": result.reasons[i], "formula": s.composition.reduced_formula})
            row.update({k: float(v[i]) for k, v in result.properties.items()})
            row["cif"] = structure_to_cif(s)
            rows.append(row)
        append_csv(self.out / "evaluated.csv", rows)
        for i in np.argsort(-result.values, kind="stable"):
            if result.ok[i] and result.values[i] > 0:
                self._offer_best(rows[i], rollout.structures[i])
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
def evaluate_policy(policy: DiffusionPolicy, env_id: str, num: int = 256, seed: int = 12345, batch_size: int = 64, label: str = "") -> dict[str, float]:
    """Success rate, mean reward and uniqueness of `num` fresh samples under the task's plain reward.

    Args:
        policy: the policy to sample (its own T).
        env_id: a registered task id; its reward scores the samples, without a diversity filter.
        num: how many crystals.
        seed: sampling seed, the same for every policy compared.
        batch_size: crystals per vector-env batch.
        label: when given, a progress bar names what is being scored.
    """
    batch_size = min(batch_size, num)
    env = gym.make_vec(env_id, num_envs=batch_size, vectorization_mode="vector_entry_point", prior=policy, num_steps=policy.num_steps).unwrapped
    generator = torch.Generator(device=policy.device).manual_seed(seed)
    success, rewards, structures = [], [], []
    for b in tqdm(range(-(-num // batch_size)), desc=f"scoring {num} fresh samples of the {label}", unit="batch", disable=not label):
        rollout = collect(env, policy, generator, seed=seed + b)
        success.append(rollout.success)
        rewards.append(rollout.result.values)
        structures += rollout.structures
    success, rewards = np.concatenate(success)[:num], np.concatenate(rewards)[:num]
    structures = structures[:num]
    uniqueness, _, _ = unique_novel(structures, np.array([bool(validity(s)) for s in structures]), None)
    return {"success_rate": float(success.mean()), "reward_mean": float(rewards.mean()), "uniqueness": uniqueness}
