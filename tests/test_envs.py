import gymnasium as gym
import latticegym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from latticegym.agents import PriorAgent
from latticegym.envs.denoising import CrystalDenoisingEnv, CrystalDenoisingVectorEnv
from latticegym.envs.registration import env_ids
from latticegym.envs.tasks import TASKS
from latticegym.rewards.base import RewardResult
from latticegym.rewards.composite import CompositeReward, Objective
from latticegym.rewards.properties import Density

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def density_reward():
    return CompositeReward([Objective(Density())])


@pytest.mark.parametrize("env_id", env_ids())
def test_check_env_on_every_registered_id(env_id):
    kwargs = {"prior": "perov_5", "reward": density_reward()} if env_id.endswith("Custom-v0") else {}
    env = gym.make(env_id, num_steps=4, **kwargs)
    check_env(env.unwrapped)
    assert env.unwrapped.num_steps == 4


def rollout(env, seed):
    obs, _ = env.reset(seed=seed)
    agent = PriorAgent(env.unwrapped.policy, seed)
    observations = [obs]
    done = False
    while not done:
        obs, reward, done, truncated, info = env.step(agent.act(obs))
        assert not truncated
        observations.append(obs)
    return observations, reward, info


def test_episode_follows_the_mdp():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=5)
    obs, _ = env.reset(seed=0)
    assert obs["t"] == 5 and obs["mask"].sum() == 5
    assert env.observation_space.contains(obs)
    agent = PriorAgent(env.unwrapped.policy, 0)
    rewards = []
    for _ in range(5):
        action = agent.act(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        rewards.append(reward)
        assert terminated == (obs["t"] == 0)
    assert rewards[:-1] == [0.0] * 4
    assert info["structure"].num_sites == 5
    assert "hhi" in info["properties"] and "hhi" in info["components"] and isinstance(info["success"], bool)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(action)


def test_seeding_is_reproducible():
    a, ra, _ = rollout(gym.make("LatticeGym/CarbonDensity-v0", num_steps=4), seed=7)
    b, rb, _ = rollout(gym.make("LatticeGym/CarbonDensity-v0", num_steps=4), seed=7)
    c, _, _ = rollout(gym.make("LatticeGym/CarbonDensity-v0", num_steps=4), seed=8)
    for x, y in zip(a, b):
        for key in x:
            np.testing.assert_array_equal(x[key], y[key])
    assert ra == rb
    assert not np.array_equal(a[-1]["frac"], c[-1]["frac"])


def test_bad_actions_raise_clear_errors():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=3)
    obs, _ = env.reset(seed=0)
    good = PriorAgent(env.unwrapped.policy, 0).act(obs)
    with pytest.raises(ValueError, match=r"action\['lattice'\] has shape \(3, 4\), expected \(3, 3\)"):
        env.step({**good, "lattice": np.zeros((3, 4))})
    nan = good["frac"].copy()
    nan[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"action\['frac'\] contains NaN or inf at index \(2, 1\)"):
        env.step({**good, "frac": nan})
    with pytest.raises(ValueError, match="contains NaN or inf"):
        env.step({**good, "lattice": np.full((3, 3), np.inf)})
    with pytest.raises(ValueError, match="must be a dict with keys"):
        env.step(np.zeros(3))
    shifted = {**good, "frac": good["frac"] + 3.25}
    obs2, *_ = env.step(shifted)
    np.testing.assert_allclose(obs2["frac"], np.remainder(good["frac"] + 3.25, 1.0), atol=1e-5)


def test_degenerate_final_crystal_is_a_failure_not_a_crash():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=1)
    obs, _ = env.reset(seed=0)
    action = PriorAgent(env.unwrapped.policy, 0).act(obs)
    action["lattice"] = np.zeros((3, 3))
    _, reward, terminated, _, info = env.step(action)
    assert terminated and reward == 0.0 and not info["ok"]
    assert "volume" in info["reason"] and "degenerate" in info["reason"]


def test_vector_env_lockstep_and_autoreset():
    venv = latticegym.make_vec("LatticeGym/PerovskiteLowHHI-v0", num_envs=6, num_steps=3)
    assert isinstance(venv.unwrapped, CrystalDenoisingVectorEnv)
    assert venv.unwrapped.metadata["autoreset_mode"].value == "NextStep"
    obs, _ = venv.reset(seed=3)
    assert obs["types"].shape == (6, 5, venv.unwrapped.policy.num_types) and (obs["t"] == 3).all()
    assert venv.observation_space.contains(obs)
    agent = PriorAgent(venv.unwrapped.policy, 3)
    for _ in range(3):
        obs, rewards, terminated, truncated, info = venv.step(agent.act(obs))
    assert terminated.all() and not truncated.any() and np.isfinite(rewards).all()
    assert len(info["structure"]) == 6 and info["properties"]["hhi"].shape == (6,)
    obs, rewards, terminated, _, _ = venv.step(agent.act(obs))  # next-step autoreset
    assert (obs["t"] == 3).all() and not terminated.any() and (rewards == 0).all()
    assert gym.make_vec("LatticeGym/CarbonDensity-v0", num_envs=2, vectorization_mode="vector_entry_point").unwrapped.num_envs == 2


def test_custom_env_takes_any_reward_and_renders_ansi():
    calls = []

    def reward(structures):
        calls.append(len(structures))
        return RewardResult(np.array([s.volume for s in structures]))

    env = gym.make("LatticeGym/Custom-v0", prior="carbon_24", reward=reward, num_steps=2, render_mode="ansi")
    obs, _ = env.reset(seed=0, options={"num_atoms": 8})
    assert obs["mask"].sum() == 8
    text = env.render()
    assert "step 0/2" in text and "C" in text and "a=" in text
    _, final_reward, info = rollout(env, seed=1)
    assert final_reward == info["reward"] == pytest.approx(info["structure"].volume)
    venv = CrystalDenoisingVectorEnv(num_envs=3, prior="carbon_24", reward=reward, num_steps=2)
    obs, _ = venv.reset(seed=0)
    agent = PriorAgent(venv.policy, 0)
    for _ in range(2):
        obs, r, *_ = venv.step(agent.act(obs))
    assert calls[-1] == 3  # one batched reward call
    with pytest.raises(ValueError, match="give a reward"):
        CrystalDenoisingEnv(prior="perov_5")


@pytest.mark.slow
@pytest.mark.parametrize("task", [t for t in TASKS])
def test_prior_rollouts_give_finite_rewards_on_every_task(task):
    venv = CrystalDenoisingVectorEnv(num_envs=3, task=task, num_steps=20)
    obs, _ = venv.reset(seed=0, options={"num_atoms": 6 if task.startswith("Carbon") else 5})
    agent = PriorAgent(venv.policy, 0)
    for _ in range(20):
        obs, rewards, terminated, _, info = venv.step(agent.act(obs))
    assert terminated.all() and np.isfinite(rewards).all()
    assert all(isinstance(r, str) for r in info["reason"])


def test_the_single_env_is_the_vector_env_of_one_and_the_last_info_holds_the_reward_result():
    def density(structures):  # no guards: every crystal gets a value
        values = np.array([s.density for s in structures])
        return RewardResult(values, {"density": values})

    single = CrystalDenoisingEnv(prior="perov_5", reward=density, num_steps=3)
    vector = CrystalDenoisingVectorEnv(1, prior="perov_5", reward=density, num_steps=3)
    assert isinstance(single.vector, CrystalDenoisingVectorEnv) and single.policy is single.vector.policy
    obs, _ = single.reset(seed=5)
    vobs, _ = vector.reset(seed=5)
    agent, vagent = PriorAgent(single.policy, 5), PriorAgent(vector.policy, 5)
    for _ in range(3):
        for key in obs:
            np.testing.assert_array_equal(obs[key], vobs[key][0])
        obs, reward, done, _, info = single.step(agent.act(obs))
        vobs, vreward, _, _, vinfo = vector.step(vagent.act(vobs))
    result = vinfo["reward_result"]
    assert done and isinstance(result, RewardResult) and len(result.values) == 1
    np.testing.assert_allclose([reward, result.values[0], info["reward_result"].values[0], info["properties"]["density"]], vreward[0], rtol=1e-6)
    assert reward > 0
    with pytest.raises(RuntimeError, match="call reset"):
        single.step(agent.act(obs))  # the single env does not autoreset


def test_render_without_a_mode_says_why():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=2)
    env.reset(seed=0)
    with pytest.warns(UserWarning, match="render_mode='ansi'"):
        assert env.unwrapped.render() is None


def test_env_constructor_and_reset_validate_their_inputs():
    import latticegym

    with pytest.raises(ValueError, match=r"num_envs must be an integer in \[1, 1e\+09\], got 0"):
        latticegym.make_vec("LatticeGym/PerovskiteLowHHI-v0", num_envs=0)
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=2)
    with pytest.raises(ValueError, match=r"options\['num_atoms'\] must be an integer"):
        env.reset(options={"num_atoms": "5"})


def test_rewards_and_actions_are_validated():
    import gymnasium as gym
    from latticegym.agents import PriorAgent
    from latticegym.rewards.base import RewardResult

    env = gym.make("LatticeGym/Custom-v0", prior="perov_5", reward=lambda s: RewardResult(np.zeros(len(s) + 1)), num_steps=1)
    obs, _ = env.reset(seed=0)
    agent = PriorAgent(env.unwrapped.policy, 0)
    with pytest.raises(ValueError, match="returned 2 values"):
        env.step(agent.act(obs))
    obs, _ = env.reset(seed=0)
    action = agent.act(obs)
    action["lattice"] = action["lattice"] + 1j
    with pytest.raises(ValueError, match=r"action\[.lattice.\] has dtype complex64; expected real numbers"):
        env.step(action)
    with pytest.raises(ValueError, match="one real number per crystal"):
        RewardResult(np.array([1 + 2j]))
