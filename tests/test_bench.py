import json
import time

import numpy as np
import pandas as pd
import pytest
from test_cli import run_cli, run_cli_measured

from latticegym.benchmarks.runner import evals_to, results_markdown
from latticegym.benchmarks.suites import SUITES, get_suite


def test_suites_name_env_success_budget_and_settings():
    for suite in SUITES.values():
        for task in suite.tasks:
            assert task.env_id.startswith("LatticeGym/") and task.budget > 0 and task.success
            assert task.iterations * task.batch_size >= task.budget
    with pytest.raises(KeyError, match="suites: quick, standard"):
        get_suite("nope")


def test_evals_to_reports_the_first_crossing():
    metrics = pd.DataFrame({"evaluations": [64, 128, 192, 256], "success_rate": [0.1, 0.55, 0.4, 0.9]})
    assert evals_to(metrics, 0.5) == 128 and evals_to(metrics, 0.8) == 256
    assert evals_to(metrics, 0.95) != evals_to(metrics, 0.95)  # NaN: never reached


def test_markdown_bolds_the_best_mean_per_task():
    results = pd.DataFrame(
        [
            {"task": "PerovskiteLowHHI", "agent": "ppo", "seed": s, "final_success": 0.8 + 0.1 * s, "kl": 10.0} for s in range(2)
        ]
        + [{"task": "PerovskiteLowHHI", "agent": "rwkl", "seed": s, "final_success": 0.2, "kl": 5.0} for s in range(2)]
    )
    md = results_markdown(results, get_suite("quick"))
    assert "| ppo | 2 | **0.85 [0.8, 0.9]** | 10 [10, 10] |" in md and "| rwkl | 2 | 0.2 [0.2, 0.2] | **5 [5, 5]** |" in md


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
    args = ("bench", "--suite", "quick", "--agents", "prior,ppo,rwkl", "--seeds", "1", "--out", str(out), "--data", str(perov_path.parent))
    result, peak_gb = run_cli_measured(*args, timeout=1500)
    assert result.returncode == 0, result.stderr
    assert peak_gb < 4.0, f"the quick suite peaked at {peak_gb:.2f} GB"
    results = pd.read_csv(out / "results.csv")
    assert len(results) == 6 and set(results.agent) == {"prior", "ppo", "rwkl"}
    for col in ("evals_to_50", "evals_to_80", "final_success", "yield_per_1000", "best_reward", "sun_rate", "uniqueness", "novelty", "kl", "t_sample", "t_reward", "t_update"):
        assert col in results.columns
    assert results.novelty.notna().all() and results.sun_rate.between(0, 1).all()
    assert "## PerovskiteFormationEnergy" in (out / "results.md").read_text()
    for png in ("learning_curves.png", "property_histograms.png", "gallery.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "runs/PerovskiteLowHHI/ppo/seed0/summary.json").read_text())
    start = time.time()
    again = run_cli(*args, timeout=600)
    assert again.returncode == 0 and time.time() - start < 120
    assert json.loads((out / "runs/PerovskiteLowHHI/ppo/seed0/summary.json").read_text()) == summary
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results)


def test_experimental_tasks_stay_out_of_the_standard_suite():
    from latticegym.envs.tasks import TASKS

    standard = {t.task.name for t in get_suite("standard").tasks}
    assert standard and not {name for name, t in TASKS.items() if t.experimental} & standard
