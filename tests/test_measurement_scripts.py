"""The measurement scripts of `benchmarks/` run and print their figures (the figures themselves are not asserted)."""

import pytest
from latticegym.benchmarks.measure import sampling_throughput, throughput


def test_sampling_throughput_prints_a_table(capsys):
    sampling_throughput.main(["--prior", "perov_5", "--steps", "3", "--batch-sizes", "1", "2", "--timed-steps", "2"])
    out = capsys.readouterr().out
    assert "crystals/s" in out and "each figure times 2 steps" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("3 ")]) == 2


@pytest.mark.slow
def test_throughput_prints_overhead_and_reward_ratios(capsys):
    throughput.main(["--batch", "4", "--steps", "3", "--repeats", "1", "--reward-batch", "6", "--iterations", "1", "--ray-structures", "2", "--relax-steps", "3"])
    out = capsys.readouterr().out
    assert "env overhead" in out and "cached reward, repeated batch" in out
    assert "reward" in out and "update" in out and "1 actor(s)" in out and "in-process (no Ray)" in out


def test_the_screen_cost_benchmark_prints_both_screens(perov_path, capsys):
    from latticegym.benchmarks.measure.screen_cost import main

    main(["--crystals", "2", "--steps", "8", "--hull-references", "20", "--data", str(perov_path.parent)])
    out = capsys.readouterr().out
    assert "single point" in out and "relaxation" in out and "relaxation / single point" in out


def test_the_threads_benchmark_prints_ratios_idle_and_loaded(capsys):
    from latticegym.benchmarks.measure import threads

    threads.main(["--threads", "1", "--load", "1", "--repeats", "1", "--steps", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert "ratio" in lines[0] and [line.split()[:2] for line in lines[1:]] == [["0", "1"], ["1", "1"]]


def test_the_last_step_benchmark_compares_each_std(capsys):
    from latticegym.benchmarks.measure import last_step

    last_step.main(["--num", "4", "--steps", "3", "--stds", "1.0,0.1"])
    out = capsys.readouterr().out
    assert "1.0" in out and "0.1" in out


@pytest.mark.slow
def test_the_prior_quality_benchmark_prints_the_generation_metrics(perov_path, capsys):
    from latticegym.benchmarks.measure import prior_quality

    prior_quality.main(["--prior", "perov_5", "--data", str(perov_path), "--num", "6", "--steps", "3"])
    lines = capsys.readouterr().out.splitlines()
    assert "struct_valid" in lines[1] and lines[2].startswith("perov_5") and lines[3].startswith("real data")


def test_the_pressure_benchmark_compares_real_and_sampled_crystals(perov_path, capsys):
    from latticegym.benchmarks.measure import pressure

    pressure.main(["--data", str(perov_path), "--num", "2"])
    assert "GPa" in capsys.readouterr().out


def test_the_reward_cost_benchmark_prints_seconds_per_crystal(perov_path, capsys):
    from latticegym.benchmarks.measure import reward_cost

    reward_cost.main(["--tasks", "PerovskiteLowHHI", "--batches", "2", "--data", str(perov_path.parent)])
    assert "PerovskiteLowHHI" in capsys.readouterr().out


def test_the_guard_thresholds_script_measures_every_family(perov_path, capsys):
    from latticegym.benchmarks.measure import guard_thresholds

    guard_thresholds.main(["--data-dir", str(perov_path.parent), "--samples", "2"])
    out = capsys.readouterr().out
    assert "perov" in out.lower() and "carbon" in out.lower()


def test_the_update_passes_benchmark_times_both_modes_and_puts_the_default_back(capsys):
    from latticegym.agents import rwkl
    from latticegym.benchmarks.measure import update_passes

    default = rwkl.CRYSTALS_PER_PASS
    update_passes.main(["--batch", "3", "--timesteps", "4", "--steps", "3"])
    out = capsys.readouterr().out
    assert "per timestep / per window:" in out and "largest difference between the two" in out
    assert rwkl.CRYSTALS_PER_PASS == default
