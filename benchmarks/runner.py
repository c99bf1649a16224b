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
from ..crystal import MatchIndex, structure_from_cif, validity
from ..files import RunLock
from ..policies import load_prior
from ..policies.pretrain import training_data
from .metrics import unique_novel
from .plots import make_all
from .suites import BenchTask, Suite

REPORTED = ["evals_to_50", "evals_to_80", "final_success", "yield_per_1000", "best_reward", "sun_rate", "uniqueness", "novelty", "kl", "t_sample", "t_reward", "t_update", "wall"]
HIGHER_IS_BETTER = {"final_success": True, "yield_per_1000": True, "best_reward": True, "sun_rate": True, "uniqueness": True, "novelty": True, "evals_to_50": False, "evals_to_80": False, "kl": False}
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
        agents: agent names.
        seeds: seeds per task and agent.
        data_dir: folder with the priors' training CSVs (novelty and the SUN hull).
        device: torch device.
        ray_address: reward evaluation on Ray actors ("local" starts one here).
    """

    out: str
    agents: tuple[str, ...] = ("prior", "ppo", "rwkl", "reinforce")
    seeds: int = 3
    data_dir: str | None = None  # where <prior data file> lives (the priors' training data): novelty and SUN hull
    device: str = "cpu"
    ray_address: str | None = None  # reward evaluation on Ray actors ("local" starts one here)


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


def summarise_run(run_dir: Path, sun: SUNRate) -> dict:
    """The summary row of one finished run: evaluations to 50%/80% success, final success, SUN rate, uniqueness, novelty, time."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    evaluated = pd.read_csv(run_dir / "evaluated.csv")
    final = evaluated[evaluated.iteration == metrics.iteration.iloc[-1]]
    last = metrics.iloc[-1]
    wins = [structure_from_cif(c) for c in evaluated.cif[evaluated.success.astype(bool)]]
    _, _, discoveries = unique_novel(wins, np.ones(len(wins), dtype=bool), sun.known)  # successes passed every guard
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
        "discoveries": len(discoveries),
        "yield_per_1000": 1000.0 * len(discoveries) / max(float(last.evaluations), 1.0),
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
    """Mean and 95% bootstrap interval over seeds per task and agent; the best mean per task and column in bold (ties all bold)."""
    lines = [f"# Suite `{suite.name}`", "", suite.description, ""]
    columns = [c for c in REPORTED if c in results.columns]
    for task, group in results.groupby("task", sort=False):
        spec = next(t for t in suite.tasks if t.task.name == task)
        lines += [f"## {task}", "", f"success: {spec.success}; budget {spec.budget} evaluations; batch {spec.batch_size}, T={spec.steps}", ""]
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
    lines.append("yield_per_1000: distinct, valid, novel successes over the whole run per 1,000 property evaluations. ")
    lines.append("sun_rate: final batch, CHGNet single-point E_hull <= 0.1 eV/atom, unique, novel. t_*: seconds in total. prior: the no-update floor.")
    return "\n".join(lines) + "\n"
