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

import numpy as np
import torch
from tqdm import tqdm

from ..benchmarks.metrics import unique_novel
from ..crystal import MatchIndex, validity
from ..envs.denoising import CrystalDenoisingVectorEnv, check_chemistry
from ..envs.registration import CUSTOM_ID, load_plugins
from ..envs.tasks import FULL_REWARD, Task, get_task
from ..files import RunLock, atomic_save, clear_temporaries, from_plain, load_checkpoint, non_finite, restore_generator, same_content, to_plain
from ..policies import load_prior, save_policy
from ..rewards.base import RewardResult
from ..rewards.composite import CompositeReward
from ..rewards.filters import DiversityFilter
from . import AGENTS, make_agent
from .base import Agent, step_kls
from .rwkl import RWKLConfig
from .loggers import RunLog, append_csv, truncate_csv
from .records import BestList, evaluated_rows
from ..options import check_ranges, parse_options
from .evaluation import known_crystals
from .pipeline import Pool, Screen, ScreenConfig, Selection, reward_guard
from .rollout import Rollout, Trajectories, collect, unscored

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
        self.screen = Screen(reward_guard(self.reward), self.known, ScreenConfig(drop=cfg.screen, relax=cfg.relax, hull_references=cfg.hull_references))
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
        self.best = BestList(cfg.best_size, self.screen.history)
        self.evaluations = 0  # crystals sent to the property: the headline cost
        self.sampled = 0
        self.discovered: list = []  # SUN successes, each distinct from the earlier ones
        self._discoveries = MatchIndex()

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
            "best": self.best.state_dict(),
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
        self.best = BestList(self.cfg.best_size, self.screen.history)  # the restored history
        self.best.load_state_dict(state["best"])
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
                    metrics, hists, update_keys = self.step()
                    self._check_finite(metrics)
                    log.log(self.iteration, metrics, hists, update_keys)
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

    def step(self) -> tuple[dict[str, float], dict[str, np.ndarray], set[str]]:
        """One iteration of the pipeline: sample, screen, select, evaluate, update; returns what to log:
        the metrics, the histograms, and which metrics the agent's update returned."""
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
        stats = self.agent.update(rollout, self.iteration) if len(rollout) else {}
        metrics.update(stats)
        metrics.update(t_sample=t_sample, t_screen=t_screen, t_reward=t_reward, t_update=time.perf_counter() - clock)
        self._record(pool, chosen, result, success, found)
        hists = {"reward": result.values, "e_hull": pool.screened.e_hull, **{f"property/{k}": v for k, v in result.properties.items()}}
        return metrics, hists, set(stats)

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
            **self._kl(pool),
            "ok_rate": mean(result.ok),
            "update_rows": float(len(rollout)),
        }
        for source in getattr(self.reward, "sources", []):
            metrics[f"calls/{source.name}"] = float(source.evaluations)
        for name, values in result.properties.items():
            finite = np.asarray(values, dtype=float)[np.isfinite(values)]
            metrics[f"{name}_mean"] = float(finite.mean()) if len(finite) else float("nan")
        return metrics

    def _kl(self, pool: Pool) -> dict[str, float]:
        """KL(policy || prior) of the pool's first trajectories before this iteration's update: over all steps
        (`kl`) and of the last step alone (`kl_last_step`, most of it); zeros without trajectories."""
        if pool.trajectories is None:
            return {"kl": 0.0, "kl_last_step": 0.0}
        kls = step_kls(self.policy, self.prior, pool.trajectories.index(range(min(self.cfg.kl_crystals, len(pool)))))
        return {"kl": float(kls.sum(0).mean()), "kl_last_step": float(kls[-1].mean())}

    def _record(self, pool: Pool, chosen: list[int], result: RewardResult, success: np.ndarray, found: np.ndarray) -> None:
        rows = evaluated_rows(self.iteration, pool, chosen, result, success, found)
        append_csv(self.out / "evaluated.csv", rows)
        for j in np.argsort(-result.values, kind="stable"):
            if result.ok[j] and result.values[j] > 0:
                self.best.offer(rows[j], pool.structures[chosen[j]])
        self.best.write(self.out / "best.csv")
