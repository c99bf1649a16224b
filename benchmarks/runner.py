"""Run tasks x agents x seeds, resume an interrupted sweep, and summarise: results.csv, results.md and plots (PNG).

Each run lives in OUT/runs/<task>/<agent>/seed<k>/ (a normal training run directory). A finished run
leaves summary.json there and is skipped next time; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..agents.trainer import TrainConfig, Trainer, evaluate_policy
from ..crystal import MatchIndex, structure_from_cif, validity
from ..files import RunLock, RunLockedError, atomic_text
from ..policies import load_policy, load_prior
from ..policies.pretrain import training_data
from .metrics import unique_novel
from .plots import make_all
from .suites import VARIANTS, BenchTask, Suite

REPORTED = [
    "evals_to_50", "evals_to_80", "found_50", "found_200", "final_success", "policy_success", "yield_per_1000", "best_reward",
    "sun_rate", "uniqueness", "novelty", "kl", "evaluations_saved", "t_sample", "t_reward", "t_update", "wall",
]  # fmt: skip
HIGHER_IS_BETTER = {
    "final_success": True, "policy_success": True, "yield_per_1000": True, "best_reward": True, "sun_rate": True, "uniqueness": True,
    "novelty": True, "evals_to_50": False, "evals_to_80": False, "found_50": False, "found_200": False, "kl": False,
}  # fmt: skip
BOOTSTRAP_RESAMPLES = 10_000


def bootstrap_interval(values: np.ndarray, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (the seeds of one task and agent)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float(values.mean()), float(values.mean())
    means = np.random.default_rng(seed).choice(values, size=(BOOTSTRAP_RESAMPLES, len(values))).mean(axis=1)
    lo, hi = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


@dataclass
class SweepConfig:
    """A sweep of `latticegym bench`.

    Attributes:
        out: sweep directory.
        agents: agent names, or labels of `suites.VARIANTS` (such as "active-random").
        seeds: seeds per task and agent.
        data_dir: folder with the priors' training CSVs (novelty and the SUN hull).
        device: torch device.
        ray_address: reward evaluation on Ray actors ("local" starts one here).
        run: False only tabulates the runs already finished (a partial sweep's table).
    """

    out: str
    agents: tuple[str, ...] = ("prior", "ppo", "rwkl", "reinforce", "active")
    seeds: int = 3
    data_dir: str | None = None  # where <prior data file> lives (the priors' training data): novelty and SUN hull
    device: str = "cpu"
    ray_address: str | None = None  # reward evaluation on Ray actors ("local" starts one here)
    run: bool = True


def evals_to(metrics: pd.DataFrame, level: float) -> float:
    """Property evaluations spent when the batch success rate first reached `level` (NaN if never)."""
    hit = metrics[metrics.success_rate >= level]
    return float(hit.evaluations.iloc[0]) if len(hit) else math.nan


class SUNRate:
    """Share of a batch that is stable (CHGNet E_hull <= 0.1 eV/atom, single point), unique and novel;
    it also holds the known crystals that novelty is measured against."""

    def __init__(self, known: list, hull_references: list):
        from ..rewards.stability import SUNFilter, ConvexHull, EHull

        self.filter = SUNFilter(EHull(ConvexHull(hull_references)), known)
        self.known = MatchIndex(known)

    def __call__(self, structures: list) -> float:
        ok = np.array([bool(validity(s)) for s in structures])
        _, _, components = self.filter(structures, np.ones(len(structures)), ok)
        return float(components["sun"].mean())


def evals_to_find(metrics: pd.DataFrame, win_iterations: np.ndarray, discoveries: list[int], count: int) -> float:
    """Property evaluations spent by the end of the iteration that found the `count`-th distinct, valid, novel success (NaN if never)."""
    if len(discoveries) < count:
        return math.nan
    iteration = win_iterations[discoveries[count - 1]]
    return float(metrics.evaluations[metrics.iteration == iteration].iloc[0])


def summarise_run(run_dir: Path, sun: SUNRate, task: BenchTask) -> dict:
    """The summary row of one finished run: evaluations to 50%/80% batch success and to 50/200 discoveries,
    final batch and fresh-sample success, yield, SUN rate, uniqueness, novelty, time."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evaluated = pd.read_csv(run_dir / "evaluated.csv")
    final = evaluated[evaluated.iteration == metrics.iteration.iloc[-1]]
    last = metrics.iloc[-1]
    won = evaluated[evaluated.success.astype(bool)]
    wins = [structure_from_cif(c) for c in won.cif]
    _, _, discoveries = unique_novel(wins, np.ones(len(wins), dtype=bool), sun.known)  # successes passed every guard
    fresh = evaluate_policy(load_policy(run_dir, num_steps=task.steps), task.env_id, num=task.policy_samples)
    return {
        "evals_to_50": evals_to(metrics, 0.5),
        "evals_to_80": evals_to(metrics, 0.8),
        "found_50": evals_to_find(metrics, won.iteration.to_numpy(), discoveries, 50),
        "found_200": evals_to_find(metrics, won.iteration.to_numpy(), discoveries, 200),
        "final_success": float(last.success_rate),
        "policy_success": fresh["success_rate"],
        "best_reward": float(metrics.reward_max.max()),
        "sun_rate": sun([structure_from_cif(c) for c in final.cif]),
        "uniqueness": float(last.uniqueness),
        "novelty": float(last.novelty),
        "kl": float(last.kl),
        "t_sample": float(metrics.t_sample.sum()),
        "t_reward": float(metrics.t_reward.sum()),
        "t_update": float(metrics.t_update.sum()),
        "wall": float(metrics[["t_sample", "t_reward", "t_update"]].sum().sum()),
        "evaluations": float(last.evaluations),
        "evaluations_saved": float(metrics.evaluations_saved.sum()) if "evaluations_saved" in metrics else 0.0,
        "discoveries": len(discoveries),
        "yield_per_1000": 1000.0 * len(discoveries) / max(float(last.evaluations), 1.0),
        "iterations": int(len(metrics)),
    }


def run_suite(suite: Suite, cfg: SweepConfig, progress: bool = True) -> pd.DataFrame:
    """Run (or finish) every task x agent x seed of `suite` and tabulate the finished runs.

    Several processes may share `cfg.out`, one per core: each run directory is locked by its
    trainer, a run that another process holds is skipped, and each process writes the table of
    every run finished when it ends.
    """
    out = Path(cfg.out)
    rows = []
    jobs = [(task, agent, seed) for task in suite.tasks for agent in cfg.agents for seed in range(cfg.seeds)]
    todo = [job for job in jobs if finished_summary(_run_dir(out, *job)) is None] if cfg.run else []
    if todo and progress:
        print(
            f"suite {suite.name}: {len(jobs) - len(todo)} of {len(jobs)} runs finished, {len(todo)} to go; the time left shows once one finishes "
            "(on 2 CPU cores a standard-suite run took minutes, MatInvent's update up to 75 minutes: docs/standard_suite/results.md, t_* columns)",
            file=sys.stderr,
        )
    bar = tqdm(todo, desc=f"suite {suite.name}", unit="run", disable=not progress)
    sun_by_task: dict[str, SUNRate] = {}
    for task, label, seed in bar:
        agent, options = resolve_agent(label, task)
        run_unless_held(task, agent, seed, _run_dir(out, task, label, seed), cfg, options, sun_by_task)
    missing = []
    for task, label, seed in jobs:  # every finished run, whichever process ran it
        summary = finished_summary(_run_dir(out, task, label, seed))
        if summary is not None:
            rows.append({"task": task.task.name, "agent": label, "seed": seed, **summary})
        else:
            missing.append(f"{task.task.name}/{label}/seed{seed}")
    results = pd.DataFrame(rows)
    atomic_text(out / "results.csv", results.to_csv(index=False))
    command = f"latticegym bench {suite.selector or '--suite ' + suite.name} --agents {','.join(cfg.agents)} --seeds {cfg.seeds} --out {cfg.out}"
    atomic_text(out / "results.md", results_markdown(results, suite, missing, command))
    make_all(out)
    atomic_text(out / "suite.json", json.dumps({"suite": suite.name, "tasks": [asdict(t) for t in suite.tasks], **asdict(cfg)}, indent=1))
    return results


def _run_dir(out: Path, task: BenchTask, label: str, seed: int) -> Path:
    return out / "runs" / task.task.name / label / f"seed{seed}"


def resolve_agent(label: str, task: BenchTask) -> tuple[str, dict]:
    """The agent and options behind a suite's agent label: an agent name, or a variant such as "active-random"."""
    agent, options = VARIANTS.get(label, (label, {}))
    return agent, {**options, **task.agent_options.get(label, {})}


def run_one(task: BenchTask, agent: str, seed: int, run_dir: Path, cfg: SweepConfig, options: dict, sun_by_task: dict[str, SUNRate]) -> dict:
    """Train (or finish) one run of `agent` on `task` in `run_dir` and return its summary; a finished run is only read.

    `sun_by_task` caches each task's SUNRate (its known crystals) across calls.
    """
    with RunLock(run_dir):  # until the summary is written: another process must not take a finished but unsummarised run
        if finished_summary(run_dir) is None:
            _train_and_summarise(task, agent, seed, run_dir, cfg, options, sun_by_task)
    return finished_summary(run_dir)


def _train_and_summarise(task: BenchTask, agent: str, seed: int, run_dir: Path, cfg: SweepConfig, options: dict, sun_by_task: dict[str, SUNRate]) -> None:
    """Train (or resume) the run in `run_dir`, then write its summary.json."""
    data_file = _data_file(task, cfg.data_dir)
    train = TrainConfig(
        env_id=task.env_id,
        agent=agent,
        iterations=task.iterations,
        batch_size=task.batch_size,
        steps=task.steps,
        seed=seed,
        out=str(run_dir),
        device=cfg.device,
        novelty_reference=data_file,
        agent_options=options,
        diversity=task.diversity,
        ray_address=cfg.ray_address,
    )
    Trainer(train).run(resume=(run_dir / "checkpoint.pt").exists(), progress=False, lock=False)  # run_one holds the lock
    name = task.task.name
    if name not in sun_by_task:
        spec = load_prior(task.task.prior, num_steps=1).spec
        known = training_data(spec, data_file).structures if data_file else []
        sun_by_task[name] = SUNRate(known, known[: task.hull_references] if task.hull_references else known)
    atomic_text(run_dir / "summary.json", json.dumps(summarise_run(run_dir, sun_by_task[name], task), indent=1))


def run_unless_held(task: BenchTask, agent: str, seed: int, run_dir: Path, cfg: SweepConfig, options: dict, sun_by_task: dict[str, SUNRate]) -> None:
    """`run_one`, or a note on stderr when another process holds `run_dir` (so several processes can share a sweep)."""
    try:
        run_one(task, agent, seed, run_dir, cfg, options, sun_by_task)
    except RunLockedError as exc:
        print(f"skipping {run_dir}: {exc}", file=sys.stderr)


def finished_summary(run_dir: Path) -> dict | None:
    """The summary of a finished run, None while it is not finished."""
    path = run_dir / "summary.json"
    return json.loads(path.read_text()) if path.exists() else None


def _data_file(task: BenchTask, data_dir: str | None) -> str | None:
    """The prior's training file inside `data_dir`, when it is there."""
    if not data_dir:
        return None
    path = Path(data_dir) / load_prior(task.task.prior, num_steps=1).spec.extra.get("data", "")
    return str(path) if path.is_file() else None


def results_markdown(results: pd.DataFrame, suite: Suite, missing: list[str] = (), command: str | None = None) -> str:
    """Mean and 95% bootstrap interval over seeds per task and agent; the best mean per task and column in bold (ties all bold).

    `missing` names the sweep's unfinished runs; a table with any is marked partial at the top.
    `command` is the sweep's command line, written under the title.
    """
    lines = [f"# Suite `{suite.name}`", "", suite.description, ""]
    if command:
        lines += [f"Made by `{command}` (several processes may share the sweep; `--tabulate` rewrites this table).", ""]
    if missing:
        lines += [f"**Partial: {len(missing)} of {len(missing) + len(results)} runs are not finished** ({', '.join(missing)}).", ""]
    columns = [c for c in REPORTED if c in results.columns]
    for task, group in results.groupby("task", sort=False):
        spec = next(t for t in suite.tasks if t.task.name == task)
        lines += [f"## {task}", "", f"success: {spec.success}; budget {spec.budget} evaluations; batch {spec.batch_size}, T={spec.steps}; policy_success on {spec.policy_samples} fresh samples", ""]
        by_agent = {agent: rows for agent, rows in group.groupby("agent", sort=False)}
        means = {(agent, col): rows[col].dropna().mean() for agent, rows in by_agent.items() for col in columns}
        best = {}
        for col in columns:
            finite = [means[(a, col)] for a in by_agent if not np.isnan(means[(a, col)])]
            if col in HIGHER_IS_BETTER and finite:
                best[col] = max(finite) if HIGHER_IS_BETTER[col] else min(finite)
        lines.append("| agent | seeds | " + " | ".join(columns) + " |")
        lines.append("|---|---|" + "---|" * len(columns))
        for agent, rows in by_agent.items():
            cells = []
            for col in columns:
                values = rows[col].dropna().to_numpy(dtype=float)
                if not len(values):
                    cells.append("n/a")
                    continue
                lo, hi = bootstrap_interval(values)
                cell = f"{values.mean():.3g} [{lo:.3g}, {hi:.3g}]" + (f" ({len(values)}/{len(rows)})" if len(values) < len(rows) else "")
                cells.append(f"**{cell}**" if col in best and values.mean() == best[col] else cell)
            lines.append(f"| {agent} | {len(rows)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Each cell: mean over seeds [95% percentile-bootstrap interval of the mean]; (k/n): only k of n seeds reached it.")
    lines.append("evals_to_50/80: property evaluations until the batch success rate first reached 50%/80%. ")
    lines.append("found_50/200: property evaluations until the run had found 50/200 distinct, valid, novel successes. ")
    lines.append("final_success: the last training batch (an agent that chooses what to evaluate filters it); "
                 "policy_success: fresh, unfiltered samples of the final policy, scored apart from the budget. ")
    lines.append("yield_per_1000: distinct, valid, novel successes over the whole run per 1,000 property evaluations. ")
    lines.append("evaluations_saved: crystals sampled but never sent to the reward. ")
    lines.append("sun_rate: final batch, CHGNet single-point E_hull <= 0.1 eV/atom, unique, novel. t_*: seconds in total. prior: the no-update floor.")
    return "\n".join(lines) + "\n"
