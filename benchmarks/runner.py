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

from ..agents import AGENTS, make_agent
from ..agents.evaluation import evaluate_policy, known_crystals
from ..agents.trainer import TrainConfig, Trainer, evaluated_per_iteration
from ..files import RunLock, RunLockedError, atomic_text
from ..policies import load_policy, load_prior
from .plots import make_all
from .suites import VARIANTS, BenchTask, Label, Suite

REPORTED = [
    "found_50", "found_200", "yield_per_1000", "policy_sun_success", "policy_success", "pool_sun_rate", "evaluations", "screen_calls",
    "sampled", "evals_to_50", "evals_to_80", "final_success", "best_reward", "uniqueness", "novelty", "kl", "t_sample", "t_screen",
    "t_reward", "t_update", "wall",
]  # fmt: skip
# Columns that an agent's choice of what to evaluate cannot inflate: the only ones bolded (not kl, which a floor wins by not learning).
HIGHER_IS_BETTER = {
    "found_50": False, "found_200": False, "yield_per_1000": True, "policy_sun_success": True, "policy_success": True, "pool_sun_rate": True,
}  # fmt: skip
# Read from the batches an agent chose to evaluate: marked † for agents that choose from a larger pool.
SELECTION_INFLATED = ("evals_to_50", "evals_to_80", "final_success", "best_reward", "uniqueness", "novelty")
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
        only: run only these tasks of the suite, by name (empty: all); the table still covers the whole suite.
        merge: results.csv files of other sweeps of this suite (machines that share no disk, or a sweep whose
            run directories are gone): their rows stand for runs not finished here; the plots show only runs here.
    """

    out: str
    agents: tuple[str, ...] = ("prior", "pyxtal", "matinvent", "ppo", "grpo", "active")
    seeds: int = 3
    data_dir: str | None = None  # where <prior data file> lives (the priors' training data): novelty and SUN hull
    device: str = "cpu"
    ray_address: str | None = None  # reward evaluation on Ray actors ("local" starts one here)
    run: bool = True
    only: tuple[str, ...] = ()
    merge: tuple[str, ...] = ()


def evals_to(metrics: pd.DataFrame, level: float) -> float:
    """Property evaluations spent when the batch success rate first reached `level` (NaN if never)."""
    hit = metrics[metrics.success_rate >= level]
    return float(hit.evaluations.iloc[0]) if len(hit) else math.nan


def evals_to_find(metrics: pd.DataFrame, discovery_iterations: np.ndarray, count: int) -> float:
    """Property evaluations spent by the end of the iteration that made the `count`-th discovery (NaN if never)."""
    if len(discovery_iterations) < count:
        return math.nan
    return float(metrics.evaluations[metrics.iteration == discovery_iterations[count - 1]].iloc[0])


def policy_seed(seed: int) -> int:
    """The sampling seed of a run's fresh policy samples: drawn from the run's seed, so seeds differ between runs."""
    return int(np.random.SeedSequence([seed, 0x5EED]).generate_state(1)[0])


def summarise_run(run_dir: Path, task: BenchTask, known: list, seed: int, label: Label | None = None) -> dict:
    """The summary row of one finished run: evaluations to 50 and 200 discoveries (SUN successes), yield,
    the final policy's fresh-sample success and SUN success, the costs, and the batch figures."""
    metrics = pd.read_csv(run_dir / "metrics.csv")
    path = run_dir / "evaluated.csv"  # absent when the screen refused every crystal of the run
    evaluated = pd.read_csv(path) if path.exists() else pd.DataFrame({"iteration": [], "success": [], "discovery": []})
    final = evaluated[evaluated.iteration == metrics.iteration.iloc[-1]]
    last = metrics.iloc[-1]
    found = evaluated.iteration[evaluated.discovery.astype(bool)].to_numpy()
    label = label or Label("ppo")
    if AGENTS[label.agent][0].generates:  # a floor that samples without the policy: score its own fresh crystals
        agent = make_agent(label.agent, None, None, label.options, seed=policy_seed(seed))
        agent.attach(None, known)
        fresh = evaluate_policy(None, task.task, num=task.policy_samples, known=known, relax=task.relax, sampler=agent.sample)
    else:
        fresh = evaluate_policy(load_policy(run_dir, num_steps=task.steps), task.task, num=task.policy_samples, seed=policy_seed(seed), known=known, relax=task.relax)
    evaluations = float(last.evaluations)
    return {
        "found_50": evals_to_find(metrics, found, 50),
        "found_200": evals_to_find(metrics, found, 200),
        "yield_per_1000": 1000.0 * len(found) / max(evaluations, 1.0),
        "discoveries": len(found),
        "policy_success": fresh["success_rate"],
        "policy_sun_success": fresh["sun_success"],
        "pool_sun_rate": float(last.pool_sun_rate),
        "evaluations": evaluations,
        "screen_calls": float(last.screen_single_points + last.screen_relax_steps),
        "screen_single_points": float(last.screen_single_points),
        "screen_relax_steps": float(last.screen_relax_steps),
        "sampled": float(last.sampled),
        **{c: float(last[c]) for c in metrics.columns if c.startswith("calls/")},
        "evals_to_50": evals_to(metrics, 0.5),
        "evals_to_80": evals_to(metrics, 0.8),
        "final_success": float(final.success.astype(bool).mean()) if len(final) else math.nan,
        "best_reward": float(metrics.reward_max.max()),
        "uniqueness": float(last.uniqueness),
        "novelty": float(last.novelty),
        "kl": float(last.kl),
        **{t: float(metrics[t].sum()) for t in ("t_sample", "t_screen", "t_reward", "t_update")},
        "wall": float(metrics[["t_sample", "t_screen", "t_reward", "t_update"]].sum().sum()),
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
    names = {task.task.name for task in suite.tasks}
    if set(cfg.only) - names:
        raise ValueError(f"only: {', '.join(sorted(set(cfg.only) - names))} is not a task of suite {suite.name!r}; its tasks are {', '.join(sorted(names))}")
    chosen = [job for job in jobs if not cfg.only or job[0].task.name in cfg.only]
    merged = merged_rows(cfg.merge)  # before any run, so that a bad file fails now and not after the sweep
    todo = [job for job in chosen if finished_summary(_run_dir(out, *job)) is None] if cfg.run else []
    if todo and progress:
        print(
            f"suite {suite.name}: {len(chosen) - len(todo)} of {len(chosen)} runs finished, {len(todo)} to go; the time left shows once one finishes "
            "(on 2 CPU cores a standard-suite run took minutes, MatInvent's released pipeline about 2 hours: docs/standard_suite/results.md, t_* and wall columns)",
            file=sys.stderr,
        )
    bar = tqdm(todo, desc=f"suite {suite.name}", unit="run", disable=not progress)
    known_by_task: dict[str, list] = {}
    for task, label, seed in bar:
        run_unless_held(task, resolve_agent(label, task), seed, _run_dir(out, task, label, seed), cfg, known_by_task)
    missing = []
    for task, label, seed in jobs:  # every finished run, whichever process ran it
        summary = finished_summary(_run_dir(out, task, label, seed))
        if summary is not None:
            rows.append({"task": task.task.name, "agent": label, "seed": seed, **summary})
        elif (task.task.name, label, seed) in merged:
            rows.append(merged[(task.task.name, label, seed)])
        else:
            missing.append(f"{task.task.name}/{label}/seed{seed}")
    results = pd.DataFrame(rows)
    atomic_text(out / "results.csv", results.to_csv(index=False))
    command = f"latticegym bench {suite.selector or '--suite ' + suite.name} --agents {','.join(cfg.agents)} --seeds {cfg.seeds} --out {cfg.out}"
    command += "".join(f" --merge {path}" for path in cfg.merge)
    atomic_text(out / "results.md", results_markdown(results, suite, missing, command))
    make_all(out)
    atomic_text(out / "suite.json", json.dumps({"suite": suite.name, "tasks": [asdict(t) for t in suite.tasks], **asdict(cfg)}, indent=1))
    return results


def merged_rows(paths: tuple[str, ...]) -> dict[tuple[str, str, int], dict]:
    """The rows of other sweeps' results.csv files by (task, agent, seed); a later file's row wins."""
    rows = {}
    for path in paths:
        table = pd.read_csv(path)
        lacking = {"task", "agent", "seed"} - set(table.columns)
        if lacking:
            raise ValueError(f"{path}: not a sweep's results.csv (no {', '.join(sorted(lacking))} column)")
        for row in table.to_dict("records"):
            rows[(row["task"], row["agent"], int(row["seed"]))] = {k: v for k, v in row.items() if not (isinstance(v, float) and np.isnan(v))}
    return rows


def _run_dir(out: Path, task: BenchTask, label: str, seed: int) -> Path:
    return out / "runs" / task.task.name / label / f"seed{seed}"


def resolve_agent(label: str, task: BenchTask) -> Label:
    """What a suite's agent label runs: an agent name, or a variant such as "active-random", with the task's options for the label."""
    base = VARIANTS.get(label, Label(label))
    return Label(base.agent, {**base.options, **task.agent_options.get(label, {})}, base.train, base.note)


def run_one(task: BenchTask, label: Label, seed: int, run_dir: Path, cfg: SweepConfig, known_by_task: dict[str, list]) -> dict:
    """Train (or finish) one run of `label` on `task` in `run_dir` and return its summary; a finished run is only read.

    `known_by_task` caches each task's training crystals (novelty and the hull) across calls.
    """
    with RunLock(run_dir):  # until the summary is written: another process must not take a finished but unsummarised run
        if finished_summary(run_dir) is None:
            _train_and_summarise(task, label, seed, run_dir, cfg, known_by_task)
    return finished_summary(run_dir)


def _train_and_summarise(task: BenchTask, label: Label, seed: int, run_dir: Path, cfg: SweepConfig, known_by_task: dict[str, list]) -> None:
    """Train (or resume) the run in `run_dir`, then write its summary.json."""
    data_file = _data_file(task, cfg.data_dir)
    settings = {"batch_size": task.batch_size, "relax": task.relax, **label.train}
    train = TrainConfig(
        env_id=task.env_id,
        agent=label.agent,
        budget=task.budget,
        steps=task.steps,
        seed=seed,
        out=str(run_dir),
        device=cfg.device,
        novelty_reference=data_file,
        hull_references=task.hull_references,
        agent_options=label.options,
        diversity=task.diversity,
        ray_address=cfg.ray_address,
        **settings,
    )
    train.iterations = task.max_iterations(evaluated_per_iteration(train))
    Trainer(train).run(resume=(run_dir / "checkpoint.pt").exists(), progress=False, lock=False)  # run_one holds the lock
    name = task.task.name
    if name not in known_by_task:
        known_by_task[name] = known_crystals(load_prior(task.task.prior, num_steps=1), data_file)
    atomic_text(run_dir / "summary.json", json.dumps(summarise_run(run_dir, task, known_by_task[name], seed, label), indent=1))


def run_unless_held(task: BenchTask, label: Label, seed: int, run_dir: Path, cfg: SweepConfig, known_by_task: dict[str, list]) -> None:
    """`run_one`, or a note on stderr when another process holds `run_dir` (so several processes can share a sweep)."""
    try:
        run_one(task, label, seed, run_dir, cfg, known_by_task)
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


def _selects(agent_label: str) -> bool:
    """Whether a label's agent evaluates a choice from a pool larger than what it evaluates (its config's `oversample` > 1)."""
    agent = VARIANTS.get(agent_label, Label(agent_label)).agent
    return agent in AGENTS and getattr(AGENTS[agent][1](), "oversample", 1) > 1


def results_markdown(results: pd.DataFrame, suite: Suite, missing: list[str] = (), command: str | None = None) -> str:
    """Mean and 95% bootstrap interval over seeds per task and agent.

    Only columns that selection cannot inflate (`HIGHER_IS_BETTER`) are bolded, at the best mean per
    task (ties all bold) among the agents with the task's full count of seeds, so that an unfinished
    agent's single seed is never shown as the best; in the columns read from the evaluated batches
    (`SELECTION_INFLATED`) an agent that chooses from a larger pool is marked †. `missing` names the sweep's unfinished runs;
    a table with any is marked partial at the top. `command` is the sweep's command line.
    """
    lines = [f"# Suite `{suite.name}`", "", suite.description, ""]
    if command:
        lines += [f"Made by `{command}` (several processes may share the sweep; `--tabulate` rewrites this table).", ""]
    if missing:
        lines += [f"**Partial: {len(missing)} of {len(missing) + len(results)} runs are not finished** ({', '.join(missing)}).", ""]
    if results.empty:
        return "\n".join(lines + ["No run has finished yet.", ""])
    columns = [c for c in REPORTED if c in results.columns]
    for task, group in results.groupby("task", sort=False):
        spec = next(t for t in suite.tasks if t.task.name == task)
        batch = f"batch {spec.batch_size}" if spec.batch_size else "each agent's batch (64; matinvent 16)"
        lines += [
            f"## {task}", "",
            f"success: {spec.success}; budget {spec.budget} property evaluations; {batch}, T={spec.steps}; "
            f"screen E_hull from a CHGNet {'relaxation' if spec.relax else 'single point'}; policy figures on {spec.policy_samples} fresh samples", "",
        ]  # fmt: skip
        by_agent = {agent: rows for agent, rows in group.groupby("agent", sort=False)}
        means = {(agent, col): rows[col].dropna().mean() for agent, rows in by_agent.items() for col in columns}
        full = max(len(rows) for rows in by_agent.values())
        complete = [a for a, rows in by_agent.items() if len(rows) == full]
        best = {}
        for col in columns:
            finite = [means[(a, col)] for a in complete if not np.isnan(means[(a, col)])]
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
                if col in SELECTION_INFLATED and _selects(agent):
                    cell += " †"
                cells.append(f"**{cell}**" if col in best and values.mean() == best[col] else cell)
            lines.append(f"| {agent} | {len(rows)} | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Each cell: mean over seeds [95% percentile-bootstrap interval of the mean]; (k/n): only k of n seeds reached it. "
                 "Bold: the best mean, only in columns that an agent's choice of what to evaluate cannot inflate, "
                 "and only among agents with the task's full count of seeds.")
    lines.append("")
    lines.append("- A discovery is a SUN success: the task's target met, stable (E_hull <= 0.1 eV/atom on the screen's CHGNet hull), "
                 "novel against the prior's training crystals, and distinct from the run's earlier discoveries.")
    lines.append("- found_50/200: property evaluations until the run's 50th/200th discovery. yield_per_1000: discoveries per 1,000 property evaluations.")
    lines.append("- policy_success / policy_sun_success: fresh, unfiltered samples of the final policy (a seed drawn per run), "
                 "scored apart from the budget: the share that meets the target / that is also a SUN success.")
    lines.append("- pool_sun_rate: the share of the last sampled pool that passed the whole screen (guards, unique, novel, stable).")
    lines.append("- evaluations: crystals sent to the property (the counted cost; each once). screen_calls: CHGNet single points and "
                 "relaxation steps spent screening. sampled: crystals the policy generated.")
    lines.append("- evals_to_50/80, final_success, best_reward, uniqueness, novelty: read from the evaluated batches; † marks agents "
                 "that choose them from a larger pool (matinvent, active), whose batches these figures flatter.")
    lines.append("- Every agent evaluates only crystals that pass the screen, except `rwkl`/`rwkl-tuned` (the unscreened ablation). "
                 "ppo and reinforce also learn from screened-out crystals at the failure reward (known, no evaluation); "
                 "matinvent, rwkl and active learn from evaluated crystals only. t_*: seconds in total. prior: the no-update floor.")
    return "\n".join(lines) + "\n"
