import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from latticegym.agents import AGENTS
from latticegym.benchmarks.runner import evals_to, results_markdown
from latticegym.benchmarks.suites import SUITES, BenchTask, get_suite

from helpers import run_cli, run_cli_measured


def make_agent_config(agent: str):
    return AGENTS[agent][1]()


def test_suites_name_env_success_budget_and_settings():
    for suite in SUITES.values():
        for task in suite.tasks:
            assert task.env_id.startswith("LatticeGym/") and task.budget > 0 and task.success
            assert task.max_iterations(16) * 16 >= task.max_iterations_factor * task.budget
    with pytest.raises(KeyError, match="suites: quick, standard"):
        get_suite("nope")


def test_evals_to_reports_the_first_crossing():
    metrics = pd.DataFrame({"evaluations": [64, 128, 192, 256], "success_rate": [0.1, 0.55, 0.4, 0.9]})
    assert evals_to(metrics, 0.5) == 128 and evals_to(metrics, 0.8) == 256
    assert evals_to(metrics, 0.95) != evals_to(metrics, 0.95)  # NaN: never reached


def test_markdown_bolds_only_what_selection_cannot_inflate_and_marks_selecting_agents():
    results = pd.DataFrame(
        [{"task": "PerovskiteLowHHI", "agent": "ppo", "seed": s, "yield_per_1000": 80.0 + 10 * s, "final_success": 0.2, "kl": 10.0} for s in range(2)]
        + [{"task": "PerovskiteLowHHI", "agent": "active", "seed": s, "yield_per_1000": 50.0, "final_success": 0.9, "kl": 5.0} for s in range(2)]
    )
    md = results_markdown(results, get_suite("quick"))
    assert "| ppo | 2 | **85 [80, 90]** | 0.2 [0.2, 0.2] | 10 [10, 10] |" in md
    assert "| active | 2 | 50 [50, 50] | 0.9 [0.9, 0.9] † | 5 [5, 5] |" in md  # the higher batch success is not bold, nor the lower KL


def test_markdown_never_bolds_an_agent_with_fewer_seeds_than_the_others():
    results = pd.DataFrame(
        [{"task": "PerovskiteLowHHI", "agent": "ppo", "seed": s, "yield_per_1000": 80.0} for s in range(3)]
        + [{"task": "PerovskiteLowHHI", "agent": "matinvent", "seed": 0, "yield_per_1000": 500.0}]
    )
    md = results_markdown(results, get_suite("quick"))
    assert "| ppo | 3 | **80 [80, 80]** |" in md
    assert "| matinvent | 1 | 500 [500, 500] |" in md


def test_bootstrap_interval_covers_the_mean_and_narrows_with_seeds():
    from latticegym.benchmarks.runner import bootstrap_interval

    rng = np.random.default_rng(0)
    few, many = rng.normal(1.0, 0.5, 3), rng.normal(1.0, 0.5, 30)
    lo, hi = bootstrap_interval(few)
    assert lo <= few.mean() <= hi and lo < hi
    assert np.diff(bootstrap_interval(many))[0] < hi - lo
    assert bootstrap_interval(np.array([2.0])) == (2.0, 2.0)


@pytest.mark.slow
def test_quick_suite_end_to_end_and_a_rerun_skips_finished_runs(tmp_path, perov_path):
    out = tmp_path / "bench"
    # One of the quick suite's two tasks (the cheaper), which keeps CI's time; docs/quick_suite has both.
    args = ("bench", "--suite", "quick", "--only", "PerovskiteFormationEnergy", "--agents", "prior,matinvent,rwkl", "--seeds", "1", "--out", str(out), "--data", str(perov_path.parent))
    result, peak_gb = run_cli_measured(*args, timeout=900)
    assert result.returncode == 0, result.stderr
    assert peak_gb < 4.0, f"the quick suite peaked at {peak_gb:.2f} GB"
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 3 and set(results.agent) == {"prior", "matinvent", "rwkl"}
    for col in ("found_50", "yield_per_1000", "policy_success", "policy_sun_success", "pool_sun_rate", "evaluations", "screen_calls", "sampled", "final_success", "kl", "t_screen"):
        assert col in results.columns
    by = results.set_index(["task", "agent"])
    budgets = {t.task.name: t.budget for t in get_suite("quick").tasks}
    for (task, agent), row in by.iterrows():  # every run spends its budget (or stops at its cap) and no more than one batch past it
        assert budgets[task] <= row.evaluations < budgets[task] + 16 or row.iterations == get_suite("quick").tasks[0].max_iterations(16)
    assert (by.sampled.xs("matinvent", level="agent") >= 12 * by.evaluations.xs("matinvent", level="agent")).all()  # pools of 12 x 16
    assert (by.screen_calls > 0).all()
    assert results.policy_success.between(0, 1).all() and results.policy_sun_success.between(0, 1).all()
    assert (results.policy_sun_success <= results.policy_success).all()
    md = (out / "results.md").read_text()
    assert "## PerovskiteFormationEnergy" in md and f"`latticegym bench --suite quick --agents prior,matinvent,rwkl --seeds 1 --out {out}`" in md
    assert "3 of 6 runs are not finished" in md  # the LowHHI half, not run
    assert "†" in md  # matinvent chooses its batches
    for png in ("learning_curves.png", "property_histograms.png", "gallery.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "runs/PerovskiteFormationEnergy/matinvent/seed0/summary.json").read_text())
    start = time.time()
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0 and time.time() - start < 120
    assert json.loads((out / "runs/PerovskiteFormationEnergy/matinvent/seed0/summary.json").read_text()) == summary
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)


def test_a_variant_label_names_an_agent_and_its_options():
    from latticegym.benchmarks.runner import resolve_agent

    task = get_suite("standard").tasks[0]
    assert (resolve_agent("active-random", task).agent, resolve_agent("active-random", task).options) == ("active", {"acquisition": "random"})
    assert (resolve_agent("ppo", task).agent, resolve_agent("ppo", task).options, resolve_agent("ppo", task).train) == ("ppo", {}, {})
    assert resolve_agent("rwkl", task).train == {"screen": False}  # the unscreened ablation


def test_experimental_tasks_stay_out_of_the_standard_suite():
    from latticegym.envs.tasks import TASKS

    standard = {t.task.name for t in get_suite("standard").tasks}
    assert standard and not {name for name, t in TASKS.items() if t.experimental} & standard


def test_tuning_gives_every_agent_the_same_runs_on_an_unreported_task():
    from latticegym.benchmarks.measure.tuning import TUNING, TuningPlan, check_plan

    check_plan(TUNING)
    assert {len(TUNING.variants(a)) for a in TUNING.grids} == {4}
    assert set(TUNING.grids) >= {"ppo", "rwkl", "reinforce", "active"}
    reported = TuningPlan(BenchTask("LatticeGym/PerovskiteFormationEnergy-v0", budget=64), {"ppo": {"lr": (1e-3,)}})
    with pytest.raises(ValueError, match="reported"):
        check_plan(reported)
    with pytest.raises(ValueError, match="unequal"):
        check_plan(TuningPlan(TUNING.task, {"ppo": {"lr": (1, 2)}, "rwkl": {"lr": (1,)}}))


def test_tuning_runs_each_setting_once_and_tabulates_it(tmp_path):
    from latticegym.benchmarks.runner import SweepConfig
    from latticegym.benchmarks.measure.tuning import TuningPlan, run_tuning

    tiny = BenchTask("LatticeGym/PerovskiteBandGap-v0", budget=8, batch_size=4, steps=3, hull_references=5, policy_samples=4)
    plan = TuningPlan(tiny, {"reinforce": {"lr": (1e-4, 3e-4)}})
    cfg = SweepConfig(out=str(tmp_path))
    first = run_tuning(plan, cfg, ["reinforce"])
    assert list(first.setting) == ["lr=0.0001", "lr=0.0003"] and "Chosen: lr=" in (tmp_path / "tuning.md").read_text()
    stamp = (tmp_path / "runs" / "reinforce" / "lr=0.0001" / "summary.json").stat().st_mtime
    again = run_tuning(plan, cfg, ["reinforce"])  # finished runs are read, not rerun
    assert (tmp_path / "runs" / "reinforce" / "lr=0.0001" / "summary.json").stat().st_mtime == stamp
    pd.testing.assert_frame_equal(first, again)


def test_shipped_defaults_are_the_settings_the_tuning_table_chose():
    table = (Path(__file__).parents[1] / "docs" / "standard_suite" / "tuning.md").read_text()
    chosen = dict(re.findall(r"^## (\w+)\n(?:.*\n)*?Chosen: (.*)\.$", table, flags=re.M))
    from latticegym.benchmarks.suites import VARIANTS
    from latticegym.benchmarks.measure.tuning import SHIPPED_AS, TUNING, label

    assert set(chosen) == set(TUNING.grids), "every agent's tuning must be finished and recorded"
    for agent, setting in chosen.items():
        if agent in SHIPPED_AS:  # a baseline keeps its released defaults; the winner is a suite label
            variant = VARIANTS[SHIPPED_AS[agent]]
            assert variant.agent == agent and label(variant.options) == setting
            continue
        config = make_agent_config(agent)
        assert label({k: getattr(config, k) for k in TUNING.grids[agent]}) == setting, agent


def test_tuning_chooses_by_yield_then_success_then_the_default():
    from latticegym.benchmarks.measure.tuning import TuningPlan, choose, label

    plan = TuningPlan(BenchTask("LatticeGym/PerovskiteBandGap-v0", budget=64), {"ppo": {"lr": (3e-4, 1e-3), "kl_coef": (0.01, 0.001)}})
    variants = plan.variants("ppo")
    rows = pd.DataFrame([{"agent": "ppo", "setting": label(v), "yield_per_1000": y, "final_success": s} for v, y, s in zip(variants, [5, 9, 9, 1], [0.1, 0.2, 0.3, 0.9])])
    assert choose(rows.iloc[:3], plan, "ppo") is None  # not every run is done
    assert choose(rows, plan, "ppo") == variants[2]
    rows["yield_per_1000"] = 3.0
    rows["final_success"] = 0.5
    assert choose(rows, plan, "ppo") == variants[0]


def test_evals_to_find_counts_to_the_iteration_of_the_kth_discovery():
    from latticegym.benchmarks.runner import evals_to_find

    metrics = pd.DataFrame({"iteration": [0, 1, 2], "evaluations": [10.0, 20.0, 30.0]})
    discovery_iterations = np.array([0, 1, 1, 2])
    assert evals_to_find(metrics, discovery_iterations, 3) == 20.0
    assert evals_to_find(metrics, discovery_iterations, 4) == 30.0
    assert np.isnan(evals_to_find(metrics, discovery_iterations, 5))


def test_a_partial_sweep_says_so_at_the_top():
    results = pd.DataFrame([{"task": "PerovskiteLowHHI", "agent": "ppo", "seed": 0, "final_success": 0.5}])
    md = results_markdown(results, get_suite("quick"), ["PerovskiteLowHHI/ppo/seed1"])
    assert "**Partial: 1 of 2 runs are not finished** (PerovskiteLowHHI/ppo/seed1)" in md
    assert "Partial" not in results_markdown(results, get_suite("quick"))


def test_only_runs_the_named_tasks_and_still_tabulates_the_whole_suite(tmp_path, monkeypatch):
    from latticegym.benchmarks import runner

    ran = []
    monkeypatch.setattr(runner, "run_unless_held", lambda task, label, seed, run_dir, cfg, known: ran.append((task.task.name, seed)))
    monkeypatch.setattr(runner, "make_all", lambda out: None)
    cfg = runner.SweepConfig(out=str(tmp_path), agents=("prior",), seeds=2, only=("PerovskiteLowHHI",))
    runner.run_suite(get_suite("quick"), cfg, progress=False)
    assert ran == [("PerovskiteLowHHI", 0), ("PerovskiteLowHHI", 1)]
    md = (tmp_path / "results.md").read_text()
    assert "PerovskiteFormationEnergy/prior/seed0" in md and "No run has finished yet." in md  # the whole suite, listed as not finished
    with pytest.raises(ValueError, match="PerovskiteMagnet is not a task of suite 'quick'"):
        runner.run_suite(get_suite("quick"), runner.SweepConfig(out=str(tmp_path), only=("PerovskiteMagnet",)), progress=False)


def test_merge_fills_runs_not_finished_here_from_another_sweeps_results(tmp_path, monkeypatch):
    from latticegym.benchmarks import runner

    monkeypatch.setattr(runner, "make_all", lambda out: None)
    here = tmp_path / "runs" / "PerovskiteLowHHI" / "prior" / "seed0"
    here.mkdir(parents=True)
    (here / "summary.json").write_text(json.dumps({"yield_per_1000": 7.0}))
    elsewhere = tmp_path / "elsewhere.csv"
    pd.DataFrame([
        {"task": "PerovskiteLowHHI", "agent": "prior", "seed": 0, "yield_per_1000": 99.0},  # finished here too: here wins
        {"task": "PerovskiteLowHHI", "agent": "prior", "seed": 1, "yield_per_1000": 5.0, "found_200": np.nan},
        {"task": "PerovskiteLowHHI", "agent": "ppo", "seed": 0, "yield_per_1000": 3.0},  # not in this sweep's agents
    ]).to_csv(elsewhere, index=False)  # fmt: skip
    cfg = runner.SweepConfig(out=str(tmp_path), agents=("prior",), seeds=2, run=False, merge=(str(elsewhere),))
    results = runner.run_suite(get_suite("quick"), cfg, progress=False)
    assert results.set_index(["task", "seed"]).yield_per_1000.to_dict() == {("PerovskiteLowHHI", 0): 7.0, ("PerovskiteLowHHI", 1): 5.0}
    md = (tmp_path / "results.md").read_text()
    assert f"--merge {elsewhere}`" in md and "PerovskiteFormationEnergy/prior/seed0" in md  # still partial: FE finished nowhere
    (tmp_path / "bad.csv").write_text("agent,seed\nppo,0\n")
    ran = []
    monkeypatch.setattr(runner, "run_unless_held", lambda *args: ran.append(args))
    with pytest.raises(ValueError, match="bad.csv: not a sweep's results.csv \\(no task column\\)"):
        runner.run_suite(get_suite("quick"), runner.SweepConfig(out=str(tmp_path), merge=(str(tmp_path / "bad.csv"),)), progress=False)
    assert ran == []  # refused before any run, not after the sweep


def test_bench_holds_a_run_until_its_summary_is_written(tmp_path, monkeypatch):
    from latticegym.benchmarks import runner
    from latticegym.benchmarks.suites import BenchTask

    run_dir = tmp_path / "run"
    probe = f"from latticegym.files import RunLock, RunLockedError\ntry:\n    RunLock({str(run_dir)!r}).acquire(); print('free')\nexcept RunLockedError:\n    print('held')"
    seen = []

    def summarise(*args):  # what a second process finds while the summary is being written
        seen.append(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True).stdout.strip())
        return {"done": 1}

    monkeypatch.setattr(runner, "summarise_run", summarise)
    task = BenchTask("LatticeGym/PerovskiteLowHHI-v0", budget=4, batch_size=4, steps=3)
    assert runner.run_one(task, runner.resolve_agent("prior", task), 0, run_dir, runner.SweepConfig(out=str(tmp_path)), {}) == {"done": 1}
    assert seen == ["held"]
