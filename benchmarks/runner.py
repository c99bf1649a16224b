"""Run tasks x agents x seeds, resume an interrupted sweep, and summarise: results.csv, results.md and plots (PNG).

Each run lives in OUT/runs/<task>/<agent>/seed<k>/ (a normal training run directory). A finished run
leaves summary.json there and is skipped next time; an interrupted one resumes from its checkpoint.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from ..agents.trainer import TrainConfig, Trainer
from ..crystal import structure_from_cif, validity
from ..files import RunLock
from ..policies import load_prior
from ..policies.pretrain import training_data
from .plots import make_all
from .suites import BenchTask, Suite

REPORTED = ["evals_to_50", "evals_to_80", "final_success", "best_reward", "sun_rate", "uniqueness", "novelty", "kl", "t_sample", "t_reward", "t_update", "wall"]
HIGHER_IS_BETTER = {"final_success": True, "best_reward": True, "sun_rate": True, "uniqueness": True, "novelty": True, "evals_to_50": False, "evals_to_80": False, "kl": False}


@dataclass
class SweepConfig:
    """A sweep of `latticegym bench`.

    Attributes:
        out: sweep directory.
        agents: agent names.
        seeds: seeds per task and agent.
        data_dir: folder with the priors' training CSVs (novelty and the SUN hull).
        device: torch device.
        ray_address: reward evaluation on Ray actors ("local" starts one here).
    """

    out: str
    agents: tuple[str, ...] = ("ppo", "rwkl", "reinforce")
    seeds: int = 3
    data_dir: str | None = None  # where <prior data file> lives (the priors' training data): novelty and SUN hull
    device: str = "cpu"
    ray_address: str | None = None  # reward evaluation on Ray actors ("local" starts one here)


def evals_to(metrics: pd.DataFrame, level: float) -> float:
    """Property evaluations spent when the batch success rate first reached `level` (NaN if never)."""
    hit = metrics[metrics.success_rate >= level]
    return float(hit.evaluations.iloc[0]) if len(hit) else math.nan


class SUNRate:
    """Share of a batch that is stable (CHGNet E_hull <= 0.1 eV/atom, single point), unique and novel."""

    def __init__(self, known: list, hull_references: list):
        from ..rewards.stability import SUNFilter, ConvexHull, EHull

        self.filter = SUNFilter(EHull(ConvexHull(hull_references)), known)

    def __call__(self, structures: list) -> float:
        ok = np.array([bool(validity(s)) for s in structures])
        _, _, components = self.filter(structures, np.ones(len(structures)), ok)
        return float(components["sun"].mean())


def summarise_run(run_dir: Path, sun: SUNRate) -> dict:
    """The summary row of one finished run: evaluations to 50%/80% success, final success, SUN rate, uniqueness, novelty, time."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evaluated = pd.read_csv(run_dir / "evaluated.csv")
    final = evaluated[evaluated.iteration == metrics.iteration.iloc[-1]]
    last = metrics.iloc[-1]
    return {
        "evals_to_50": evals_to(metrics, 0.5),
        "evals_to_80": evals_to(metrics, 0.8),
        "final_success": float(last.success_rate),
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
        "iterations": int(len(metrics)),
    }


def run_suite(suite: Suite, cfg: SweepConfig, progress: bool = True) -> pd.DataFrame:
    """Run (or finish) every task x agent x seed of `suite`; holds the lock on `cfg.out` throughout."""
    with RunLock(cfg.out):
        return _run_suite(suite, cfg, progress)


def _run_suite(suite: Suite, cfg: SweepConfig, progress: bool) -> pd.DataFrame:
    out = Path(cfg.out)
    rows = []
    jobs = [(task, agent, seed) for task in suite.tasks for agent in cfg.agents for seed in range(cfg.seeds)]
    bar = tqdm(jobs, desc=f"suite {suite.name}", unit="run", disable=not progress)
    known_by_task: dict[str, SUNRate] = {}
    for task, agent, seed in bar:
        run_dir = out / "runs" / task.task.name / agent / f"seed{seed}"
        summary_path = run_dir / "summary.json"
        if not summary_path.exists():
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
                agent_options=task.agent_options.get(agent, {}),
                ray_address=cfg.ray_address,
            )
            Trainer(train).run(resume=(run_dir / "checkpoint.pt").exists(), progress=False)
            if task.task.name not in known_by_task:
                spec = load_prior(task.task.prior, num_steps=1).spec
                known = training_data(spec, data_file).structures if data_file else []
                known_by_task[task.task.name] = SUNRate(known, known[: task.hull_references] if task.hull_references else known)
            summary_path.write_text(json.dumps(summarise_run(run_dir, known_by_task[task.task.name]), indent=1))
        rows.append({"task": task.task.name, "agent": agent, "seed": seed, **json.loads(summary_path.read_text())})
    results = pd.DataFrame(rows)
    results.to_csv(out / "results.csv", index=False)
    (out / "results.md").write_text(results_markdown(results, suite))
    make_all(out)
    (out / "suite.json").write_text(json.dumps({"suite": suite.name, "tasks": [asdict(t) for t in suite.tasks], **asdict(cfg)}, indent=1))
    return results


def _data_file(task: BenchTask, data_dir: str | None) -> str | None:
    """The prior's training file inside `data_dir`, when it is there."""
    if not data_dir:
        return None
    path = Path(data_dir) / load_prior(task.task.prior, num_steps=1).spec.extra.get("data", "")
    return str(path) if path.is_file() else None


def results_markdown(results: pd.DataFrame, suite: Suite) -> str:
    """Mean ± std over seeds per task and agent; the best mean per task and column in bold (ties all bold)."""
    lines = [f"# Suite `{suite.name}`", "", suite.description, ""]
    columns = [c for c in REPORTED if c in results.columns]
    for task, group in results.groupby("task", sort=False):
        spec = next(t for t in suite.tasks if t.task.name == task)
        lines += [f"## {task}", "", f"success: {spec.success}; budget {spec.budget} evaluations; batch {spec.batch_size}, T={spec.steps}", ""]
        stats = group.groupby("agent", sort=False)[columns].agg(["mean", "std"])
        best = {}
        for col in columns:
            if col in HIGHER_IS_BETTER:
                means = stats[(col, "mean")]
                if means.notna().any():
                    best[col] = means.max() if HIGHER_IS_BETTER[col] else means.min()
        lines.append("| agent | seeds | " + " | ".join(columns) + " |")
        lines.append("|---|---|" + "---|" * len(columns))
        for agent in stats.index:
            cells = []
            for col in columns:
                mean, std = stats.loc[agent, (col, "mean")], stats.loc[agent, (col, "std")]
                cell = "n/a" if np.isnan(mean) else f"{mean:.3g} ± {0.0 if np.isnan(std) else std:.2g}"
                cells.append(f"**{cell}**" if col in best and mean == best[col] else cell)
            lines.append(f"| {agent} | {int((group.agent == agent).sum())} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("evals_to_50/80: property evaluations until the batch success rate first reached 50%/80% (n/a: never). ")
    lines.append("sun_rate: final batch, CHGNet single-point E_hull <= 0.1 eV/atom, unique, novel. t_*: seconds in total.")
    return "\n".join(lines) + "\n"
