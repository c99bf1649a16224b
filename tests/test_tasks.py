"""Tasks users make: registering a task, Custom-v0 with a reward by name, training your own prior, runs you cannot lose."""

import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import latticegym
import numpy as np
import pandas as pd
import pytest
import torch
from latticegym.agents import PriorAgent
from latticegym.agents.trainer import Trainer
from latticegym.cli import main
from latticegym.envs.tasks import TASKS
from latticegym.files import load_checkpoint
from latticegym.policies.pretrain import pretrain
from test_pretrain import _config, tiny_data  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[1]


def _howto() -> tuple[str, list[str]]:
    """The README's how-to: the task file, and the shell commands that train and bench it."""
    readme = (ROOT / "README.md").read_text()
    task_file = re.search(r"```python\n(# my_task\.py\n.*?)```", readme, flags=re.S).group(1)
    commands = [line for block in re.findall(r"```bash\n(.*?)```", readme, flags=re.S) for line in block.splitlines() if "--plugin my_task.py" in line]
    return task_file, commands


@pytest.mark.slow
def test_the_readme_howto_trains_and_benches_a_task_of_your_own(tmp_path):
    task_file, commands = _howto()
    assert [c.split()[1] for c in commands] == ["train", "bench"]
    (tmp_path / "my_task.py").write_text(task_file)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for command in commands:
        done = subprocess.run(command, shell=True, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    train_dir = next(p for p in (tmp_path / "runs").iterdir() if (p / "metrics.csv").exists())
    assert len(pd.read_csv(train_dir / "metrics.csv")) == 2
    table = next((tmp_path / "runs").glob("*/results.csv"))
    results = pd.read_csv(table)
    assert set(results.agent) >= {"prior", "ppo"} and set(results.task) == {"RoomyPerovskite"}


@pytest.fixture
def registered():
    task = latticegym.register_task("HalfHHI", prior="perov_5", reward="low_hhi", success=[("reward", ">=", 0.5)], overwrite=True)
    yield task
    TASKS.pop("HalfHHI")


def test_a_registered_task_makes_an_env_with_its_success(registered):
    env = gym.make(registered.env_id, num_steps=3)
    obs, _ = env.reset(seed=0)
    agent = PriorAgent(env.unwrapped.policy, 0)
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(agent.act(obs))
    assert terminated and info["success"] == (info["ok"] and reward >= 0.5)
    with pytest.raises(ValueError, match="already registered"):
        latticegym.register_task("HalfHHI", prior="perov_5", reward="low_hhi")
    with pytest.raises(ValueError, match="success condition"):
        latticegym.register_task("Broken", prior="perov_5", reward="low_hhi", success=[("hhi", "<", 1)])


def test_custom_env_takes_a_reward_by_name_and_always_reports_success():
    env = gym.make("LatticeGym/Custom-v0", prior="perov_5", reward="low_hhi", num_steps=3)
    obs, _ = env.reset(seed=0)
    agent = PriorAgent(env.unwrapped.policy, 0)
    for _ in range(3):
        obs, reward, terminated, _, info = env.step(agent.act(obs))
    assert "success" in info and info["success"] == (info["ok"] and reward >= 1.0)
    with pytest.raises(KeyError, match="no reward named 'lowhhi'"):
        gym.make("LatticeGym/Custom-v0", prior="perov_5", reward="lowhhi")


def test_a_prior_whose_chemistry_cannot_pass_the_guards_is_refused():
    with pytest.raises(ValueError, match="none of the anions N, O, F"):
        gym.make("LatticeGym/PerovskiteLowHHI-v0", prior="carbon_24", num_steps=3)


def test_custom_v0_trains_with_a_reward_by_name(tmp_path):
    code = main(["train", "--env", "LatticeGym/Custom-v0", "--prior", "perov_5", "--reward", "low_hhi", "--iterations", "1", "--batch-size", "4", "--steps", "3", "--out", str(tmp_path / "run")])
    assert code == 0 and len(pd.read_csv(tmp_path / "run" / "metrics.csv")) == 1
    assert main(["train", "--env", "LatticeGym/Custom-v0", "--prior", "perov_5", "--out", str(tmp_path / "x")]) == 1  # no reward


def test_train_fine_tunes_a_prior_from_a_pretrain_run_directory(tiny_data, tmp_path):  # noqa: F811
    run = tmp_path / "pre"
    pretrain(_config(tiny_data, run, 1), progress=False)
    code = main(["train", "--env", "PerovskiteLowHHI", "--prior", str(run), "--iterations", "1", "--batch-size", "4", "--steps", "3", "--out", str(tmp_path / "ft")])
    assert code == 0
    policy = load_checkpoint(tmp_path / "ft" / "policy.pt")
    assert policy["spec"]["elements"] == [8, 20, 22, 38, 40, 56, 72]  # the tiny prior's vocabulary, not perov_5's


def test_pretrain_refuses_an_existing_run(tiny_data, tmp_path):  # noqa: F811
    run = tmp_path / "pre"
    pretrain(_config(tiny_data, run, 1), progress=False)
    before = (run / "prior.pt").read_bytes()
    code = main(["pretrain", "--data", str(tiny_data), "--out", str(run), "--epochs", "1", "--batch-size", "8", "--hidden", "16", "--layers", "1"])
    assert code == 1 and (run / "prior.pt").read_bytes() == before


def test_resume_with_only_out_continues_exactly(tmp_path, monkeypatch, capsys):
    args = ["train", "--env", "PerovskiteLowHHI", "--iterations", "3", "--batch-size", "4", "--steps", "3", "--seed", "7", "--no-screen"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    step, calls = Trainer.step, []

    def killed_in_the_second_iteration(self):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(Trainer, "step", killed_in_the_second_iteration)
    assert main([*args, "--out", str(tmp_path / "killed")]) == 130
    assert f"latticegym train --out {tmp_path / 'killed'} --resume" in capsys.readouterr().err
    monkeypatch.setattr(Trainer, "step", step)
    assert main(["train", "--out", str(tmp_path / "killed"), "--resume"]) == 0
    straight, resumed = (pd.read_csv(tmp_path / run / "metrics.csv") for run in ("straight", "killed"))
    timing = [c for c in straight.columns if c.startswith("t_")]
    pd.testing.assert_frame_equal(straight.drop(columns=timing), resumed.drop(columns=timing))
    a, b = (load_checkpoint(tmp_path / run / "policy.pt")["state_dict"] for run in ("straight", "killed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main(["train", "--out", str(tmp_path / "killed"), "--resume", "--seed", "8"]) == 1  # a flag that differs is refused
    assert np.isfinite(straight.reward_mean).all()


TASK_FILE = """
name: LowHHIOxide
prior: perov_5
reward:
  objectives:
    - source: hhi
      shaping: {kind: descending, lo: 1250, hi: 5000}
  guards: {anions: [[O], 0.4, 0.6]}
success: [[hhi, "<=", 1250]]
target: an oxide with HHI <= 1250
"""


def test_a_yaml_task_file_registers_a_task_that_trains_and_resumes_from_its_directory(tmp_path):
    (tmp_path / "task.yaml").write_text(TASK_FILE)
    out = str(tmp_path / "run")
    args = ["train", "--plugin", str(tmp_path / "task.yaml"), "--env", "LatticeGym/LowHHIOxide-v0", "--batch-size", "4", "--steps", "10", "--out", out]
    try:
        assert main([*args, "--iterations", "1"]) == 0
        assert TASKS["LowHHIOxide"].target == "an oxide with HHI <= 1250"
        assert main(["train", "--out", out, "--resume", "--iterations", "2"]) == 0
        evaluated = pd.read_csv(Path(out) / "evaluated.csv")
        metrics = pd.read_csv(Path(out) / "metrics.csv")
        assert len(evaluated) == metrics.evaluations.iloc[-1] > 0 and list(metrics.iteration) == [0, 1]
        assert (evaluated.success == (evaluated.hhi <= 1250) & (evaluated.reason.isna())).all()
    finally:
        TASKS.pop("LowHHIOxide", None)
    (tmp_path / "bad.yaml").write_text("name: X\nprior: perov_5\n")
    assert main(["envs", "--plugin", str(tmp_path / "bad.yaml")]) == 1


def test_experimental_tasks_and_slow_settings_warn_at_train_time(tmp_path):
    from latticegym.agents.trainer import TrainConfig

    with pytest.warns(UserWarning, match="CarbonDensity is experimental"):
        Trainer(TrainConfig(env_id="CarbonDensity", batch_size=2, steps=3, out=str(tmp_path / "c")))
    with pytest.warns(UserWarning, match="rwkl runs MatInvent's released update"):
        Trainer(TrainConfig(env_id="PerovskiteLowHHI", agent="rwkl", batch_size=2, steps=3, out=str(tmp_path / "r")))


def test_a_reward_resolves_from_a_name_a_factory_path_a_yaml_file_a_dict_or_an_object(tmp_path):
    from latticegym.rewards.composite import CompositeReward
    from latticegym.rewards.registry import resolve

    config = "objectives:\n  - source: hhi\n    shaping: {kind: descending, lo: 1250, hi: 5000}\n"
    (tmp_path / "r.yaml").write_text(config)
    built = [resolve("low_hhi"), resolve("latticegym.rewards.library:low_hhi", max_hhi=1000.0), resolve(str(tmp_path / "r.yaml"))]
    assert all(isinstance(r, CompositeReward) for r in built)
    assert resolve({"objectives": [{"source": "hhi"}]}).objectives[0].name == "hhi"
    assert resolve(built[0]) is built[0]
    with pytest.raises(ValueError, match="cannot import 'nothing'"):
        resolve("latticegym.rewards.library:nothing")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "missing.yaml"))


def test_a_tasks_threshold_has_one_source_which_its_reward_reads():
    from dataclasses import replace

    from latticegym.targets import BAND_GAP_WINDOW, LOW_HHI

    low_hhi, gap = TASKS["PerovskiteLowHHI"], TASKS["PerovskiteBandGap"]
    assert low_hhi.success == (("hhi", "<=", LOW_HHI),) and low_hhi.make_reward().objectives[0].shaping.lo == LOW_HHI
    assert gap.success == (("band_gap", "in", BAND_GAP_WINDOW),) and (gap.reward_kwargs["lo"], gap.reward_kwargs["hi"]) == BAND_GAP_WINDOW
    stricter = replace(low_hhi, reward_kwargs={**low_hhi.reward_kwargs, "max_hhi": 1000.0})
    assert stricter.make_reward().objectives[0].shaping.lo == 1000.0  # the reward takes the task's number, not a default of its own
