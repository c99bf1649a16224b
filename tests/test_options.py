"""options.py: typed --set parsing and the one range and choice check."""

import pytest


def test_set_values_parse_with_the_field_type():
    from latticegym.agents.ppo import PPOConfig
    from latticegym.options import parse_option

    assert parse_option(PPOConfig, "lr", "1e-5") == 1e-5  # YAML would read this as a string
    assert parse_option(PPOConfig, "adaptive_kl_target", "none") is None
    assert parse_option(PPOConfig, "epochs", "3") == 3
    for key, value, message in [("lr", ".nan", "finite float"), ("epochs", "2.5", "expected int"), ("epochs", "-1", r"epochs must be in \[1, 1e\+09\]"), ("minibatch_size", "0", r"in \[1, "), ("lr", "1e300", r"lr must be in \(0, 1\]")]:
        with pytest.raises(ValueError, match=message):
            PPOConfig(**{key: parse_option(PPOConfig, key, value)})


def test_choices_and_fractions_are_checked_by_the_one_mechanism():
    from latticegym.agents import ActiveConfig, GRPOConfig, PPOConfig

    for make, message in [
        (lambda: PPOConfig(replay_mix=1.0), r"PPOConfig.replay_mix must be in \[0, 1\), got 1.0"),
        (lambda: PPOConfig(advantage_groups="size"), r"PPOConfig.advantage_groups must be one of \('batch', 'num_atoms'\), got 'size'"),
        (lambda: GRPOConfig(kl_to="reference"), r"GRPOConfig.kl_to must be one of \('prior', 'rollout'\)"),
        (lambda: ActiveConfig(baseline="mean"), r"ActiveConfig.baseline must be one of \('pool', 'batch'\)"),
    ]:
        with pytest.raises(ValueError, match=message):
            make()
    assert PPOConfig(replay_mix=0.0).replay_mix == 0.0


def test_a_cli_number_is_checked_as_every_setting_is():
    import argparse

    from latticegym.options import bounded

    steps = bounded(int, 1, 1000, "an integer in 1..1000")
    assert steps("40") == 40
    for text in ("0", "1001", "x", "2.5"):
        with pytest.raises(argparse.ArgumentTypeError, match=f"expected an integer in 1..1000, got '{text}'"):
            steps(text)
    with pytest.raises(argparse.ArgumentTypeError, match="got 'nan'"):
        bounded(float, 0.0, 1.0, "a number in [0, 1]")("nan")
