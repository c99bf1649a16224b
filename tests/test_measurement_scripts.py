"""The measurement scripts of `benchmarks/` run and print their figures (the figures themselves are not asserted)."""

import pytest

from latticegym.benchmarks import sampling_throughput, throughput


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
    from latticegym.benchmarks.screen_cost import main

    main(["--crystals", "3", "--steps", "8", "--hull-references", "20", "--data", str(perov_path.parent)])
    out = capsys.readouterr().out
    assert "single point" in out and "relaxation" in out and "relaxation / single point" in out
