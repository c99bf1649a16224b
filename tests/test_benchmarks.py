"""The benchmark scripts run and print their figures (the figures themselves are not asserted)."""

import pytest

from latticegym.benchmarks import env_throughput, sampling_throughput


def test_sampling_throughput_prints_a_table(capsys):
    sampling_throughput.main(["--prior", "perov_5", "--steps", "3", "--batch-sizes", "1", "2", "--timed-steps", "2"])
    out = capsys.readouterr().out
    assert "crystals/s" in out and "each figure times 2 steps" in out
    assert len([line for line in out.splitlines() if line.strip().startswith("3 ")]) == 2


@pytest.mark.slow
def test_env_throughput_prints_overhead_and_reward_ratios(capsys):
    env_throughput.main(["--batch", "4", "--steps", "3", "--repeats", "1", "--reward-batch", "6"])
    out = capsys.readouterr().out
    assert "env overhead" in out and "cached reward, repeated batch" in out
