"""The equal tuning budget: every learning agent gets the same runs on a task that no suite reports.

Protocol (`TUNING`): for each agent, a 2 x 2 grid over its two most sensitive settings, the default
before tuning and one alternative each, so four runs of one seed per agent; the task is
PerovskiteBandGap (experimental, in no reported suite), T = 100, batch 64, 512 evaluations. The
setting with the highest yield (distinct, valid, novel successes per 1,000 evaluations) wins, ties
going to the higher final success and then to the pre-tuning default; the winners ship as the
defaults, and a test holds the defaults to the "Chosen" lines of docs/standard_suite/tuning.md.
The exception is the MatInvent baseline `rwkl`, which keeps its released settings as its defaults
(a baseline runs as its authors released it); its winner ships as the suite label `rwkl-tuned`,
and the standard suite reports both.

    python -m latticegym.benchmarks.measure.tuning --out runs/tuning --data-dir ../shared/data [--agents ppo rwkl]

`active` runs PPO inside, so it is tuned after PPO's winner has shipped, over its own two settings.

Finished runs are skipped, so the command resumes; several processes can share one OUT (a run that
another holds is skipped), and each writes the table of every finished run to OUT/tuning.md.
"""

from __future__ import annotations

import argparse
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd

from ..runner import SweepConfig, finished_summary, resolve_agent, run_unless_held
from ..suites import SUITES, BenchTask

CRITERION = ("yield_per_1000", "final_success")  # higher is better, compared in this order
# A baseline keeps its authors' released settings as its defaults; its winner ships as a suite variant.
SHIPPED_AS = {"rwkl": "rwkl-tuned"}


@dataclass(frozen=True)
class TuningPlan:
    """What every agent is tuned on, and over which settings (the first value of each is the default before tuning)."""

    task: BenchTask
    grids: dict[str, dict[str, tuple]] = field(default_factory=dict)
    seed: int = 0

    def variants(self, agent: str) -> list[dict]:
        """Every combination of `agent`'s grid, the all-defaults one first."""
        grid = self.grids[agent]
        return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


TUNING = TuningPlan(
    BenchTask("LatticeGym/PerovskiteBandGap-v0", budget=512),
    {
        "ppo": {"lr": (3e-4, 1e-3), "kl_coef": (0.01, 0.001)},
        "reinforce": {"lr": (3e-4, 1e-3), "kl_coef": (0.01, 0.001)},
        "rwkl": {"lr": (1e-4, 3e-4), "sigma": (0.025, 0.1)},
        "active": {"oversample": (4, 8), "kappa": (1.0, 0.0)},  # its PPO settings are PPO's tuned ones
    },
)


def label(options: dict) -> str:
    """A run-directory name for one setting, e.g. "lr=0.001,kl_coef=0.01"."""
    return ",".join(f"{k}={v}" for k, v in options.items())


def check_plan(plan: TuningPlan) -> None:
    """Equal budgets, and a tuning task that no reported suite holds."""
    reported = {t.env_id for name, suite in SUITES.items() if name != "quick" for t in suite.tasks}
    if plan.task.env_id in reported:
        raise ValueError(f"{plan.task.env_id} is reported in a suite; tune on a task that is not")
    sizes = {agent: len(plan.variants(agent)) for agent in plan.grids}
    if len(set(sizes.values())) > 1:
        raise ValueError(f"unequal tuning budgets (runs per agent): {sizes}")


def run_tuning(plan: TuningPlan, cfg: SweepConfig, agents: list[str]) -> pd.DataFrame:
    """Run (or finish) every variant of `agents`, then tabulate every finished run under `cfg.out`."""
    check_plan(plan)
    out = Path(cfg.out)
    known: dict[str, list] = {}
    for agent in agents:
        for options in plan.variants(agent):
            base = resolve_agent(agent, plan.task)
            run_unless_held(plan.task, replace(base, options={**base.options, **options}), plan.seed, out / "runs" / agent / label(options), cfg, known)
    rows = []
    for agent in plan.grids:
        for options in plan.variants(agent):
            summary = finished_summary(out / "runs" / agent / label(options))
            if summary is not None:
                rows.append({"agent": agent, "setting": label(options), **summary})
    results = pd.DataFrame(rows)
    (out / "tuning.md").write_text(tuning_markdown(results, plan))
    return results


def choose(results: pd.DataFrame, plan: TuningPlan, agent: str) -> dict | None:
    """The winning setting of `agent` (None until all its runs are done); ties go to the earlier variant, the default first."""
    variants = plan.variants(agent)
    rows = results[results.agent == agent] if len(results) else results
    if len(rows) < len(variants):
        return None
    order = {label(v): i for i, v in enumerate(variants)}
    key = lambda r: tuple(-float(r[c]) if pd.notna(r[c]) else float("inf") for c in CRITERION) + (order[r["setting"]],)  # noqa: E731
    best = min((r for _, r in rows.iterrows()), key=key)
    return variants[order[best["setting"]]]


def tuning_markdown(results: pd.DataFrame, plan: TuningPlan) -> str:
    """One table per agent: each setting's figures, and the winner."""
    columns = ["yield_per_1000", "final_success", "evals_to_50", "uniqueness", "novelty", "kl", "wall"]
    t = plan.task
    lines = [
        "# Tuning",
        "",
        f"Task {t.env_id} (in no reported suite), seed {plan.seed}, T={t.steps}, batch {t.batch_size}, {t.budget} evaluations per run; "
        f"{len(next(iter(plan.grids.values())))} settings x 2 values = the same {len(plan.variants(next(iter(plan.grids))))} runs for every agent. "
        f"Winner: highest {CRITERION[0]}, then {CRITERION[1]}, then the pre-tuning default (listed first). "
        "Command: `python -m latticegym.benchmarks.measure.tuning --out runs/tuning --data-dir ../shared/data`.",
        "",
    ]
    for agent in plan.grids:
        rows = results[results.agent == agent] if len(results) else results
        winner = choose(results, plan, agent)
        lines += [f"## {agent}", "", "| setting | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
        for _, r in rows.iterrows():
            mark = " (chosen)" if winner is not None and r["setting"] == label(winner) else ""
            lines.append(f"| {r['setting']}{mark} | " + " | ".join(f"{float(r[c]):.3g}" for c in columns) + " |")
        lines += ["", f"{len(rows)} of {len(plan.variants(agent))} runs done." if winner is None else f"Chosen: {label(winner)}.", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="tuning directory (resumes)")
    parser.add_argument("--data-dir", default=None, help="folder with the priors' training CSVs (novelty)")
    parser.add_argument("--agents", nargs="+", default=list(TUNING.grids), help="agents to run here (default: all)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    unknown = set(args.agents) - set(TUNING.grids)
    if unknown:
        parser.error(f"--agents: no tuning grid for {sorted(unknown)}; grids: {sorted(TUNING.grids)}")
    import torch

    torch.set_num_threads(1)
    run_tuning(TUNING, SweepConfig(out=args.out, data_dir=args.data_dir, device=args.device), args.agents)
    print((Path(args.out) / "tuning.md").read_text())


if __name__ == "__main__":
    main()
