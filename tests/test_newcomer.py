"""What a new user meets first: quiet output with a way to see more, one-line errors, threads."""

import subprocess
import sys

import gymnasium as gym
import pytest
import torch

from latticegym import DEFAULT_THREADS, set_threads
from latticegym.cli import main


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("latticegym 0.")


def test_threads_option_and_python_setting():
    main(["envs"])
    assert torch.get_num_threads() == DEFAULT_THREADS == 1
    set_threads(2)
    assert torch.get_num_threads() == 2
    set_threads()
    with pytest.raises(ValueError, match="threads must be >= 1"):
        set_threads(0)


def test_cuda_and_unknown_devices_are_one_line_errors(capsys):
    for device in (["cuda"] if not torch.cuda.is_available() else []) + ["gpu", "cuda:x"]:
        with pytest.raises(SystemExit):
            main(["sample", "--prior", "perov_5", "--num", "1", "--out", "x.csv", "--device", device])
        err = capsys.readouterr().err
        assert "argument --device" in err and "devices here: cpu" in err and "Traceback" not in err


def test_a_task_name_without_namespace_works_and_a_typo_gets_suggestions(capsys, tmp_path):
    from latticegym.agents.trainer import TrainConfig

    assert TrainConfig(env_id="PerovskiteLowHHI").env_id == "LatticeGym/PerovskiteLowHHI-v0"
    assert main(["train", "--env", "PerovskitLowHHI", "--out", str(tmp_path)]) == 1
    assert "did you mean LatticeGym/PerovskiteLowHHI-v0" in capsys.readouterr().err


def test_render_without_a_mode_says_why():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=2)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode='ansi'"):
        assert env.unwrapped.render() is None


def test_model_chatter_is_hidden_unless_verbose_and_missing_novelty_is_explained(tmp_path):
    args = ["train", "--env", "LatticeGym/PerovskiteFormationEnergy-v0", "--iterations", "1", "--batch-size", "4", "--steps", "10"]
    quiet = subprocess.run([sys.executable, "-m", "latticegym.cli", *args, "--out", str(tmp_path / "q")], capture_output=True, text=True, timeout=600)
    assert quiet.returncode == 0, quiet.stderr
    assert "initialized with" not in quiet.stdout + quiet.stderr and "CHGNet will run" not in quiet.stdout + quiet.stderr
    assert "no --reference: the screen cannot check novelty" in quiet.stderr
    loud = subprocess.run([sys.executable, "-m", "latticegym.cli", *args, "--out", str(tmp_path / "v"), "-v"], capture_output=True, text=True, timeout=600)
    assert loud.returncode == 0 and "initialized with" in loud.stderr
