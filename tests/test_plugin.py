import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(__file__).parent / "plugin"

CODE = """
import gymnasium as gym, numpy as np
import latticegym
from latticegym.agents import PriorAgent
from latticegym.rewards import available, make
assert "volume_per_atom" in available()
reward = make("volume_per_atom", target=16.0)
env = gym.make("LatticeGym/Custom-v0", prior="perov_5", reward=reward, num_steps=3)
obs, _ = env.reset(seed=0)
agent = PriorAgent(env.unwrapped.policy, seed=0)
done = False
while not done:
    obs, r, done, _, info = env.step(agent.act(obs))
print(info["ok"], "volume_per_atom" in info["properties"], np.isfinite(r))
"""


@pytest.mark.slow
def test_reward_from_a_separately_installed_package(tmp_path):
    src = tmp_path / "plugin"
    shutil.copytree(PLUGIN, src)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "install", "--no-deps", "--no-build-isolation", "-q", str(src)], check=True, capture_output=True)
    try:
        out = subprocess.run([sys.executable, "-c", CODE], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert out.stdout.split()[-2:] == ["True", "True"]
    finally:
        subprocess.run([*pip, "uninstall", "-y", "-q", "latticegym-test-plugin"], capture_output=True)
