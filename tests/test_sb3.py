import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO

import latticegym  # noqa: F401
from latticegym.agents.sb3 import DiffusionActorCriticPolicy
from latticegym.envs.wrappers import FlattenAction


def make_env():
    return FlattenAction(gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=4))


def test_sb3_ppo_learns_with_the_diffusion_step_as_its_distribution():
    model = PPO(DiffusionActorCriticPolicy, make_env(), n_steps=16, batch_size=8, n_epochs=2, gamma=1.0, gae_lambda=1.0, learning_rate=1e-5, seed=0)
    before = {k: v.clone() for k, v in model.policy.diffusion.state_dict().items()}
    model.learn(32)
    assert any(not torch.equal(before[k], v) for k, v in model.policy.diffusion.state_dict().items())
    assert model.num_timesteps == 32


def test_sb3_log_prob_is_the_diffusion_step_log_prob():
    env = make_env()
    model = PPO(DiffusionActorCriticPolicy, env, n_steps=8, batch_size=8, seed=0)
    policy = model.policy
    obs, _ = env.reset(seed=1)
    obs_t, _ = policy.obs_to_tensor(obs)
    with torch.no_grad():
        actions, values, log_prob = policy(obs_t)
        values2, log_prob2, entropy = policy.evaluate_actions(obs_t, actions)
    torch.testing.assert_close(log_prob, log_prob2)
    assert entropy is None and values.shape == (1, 1)
    flat = actions[0].numpy()
    step = env.action(flat)  # the wrapper's unflattening is the policy's flattening, reversed
    state, k = policy._state_and_step(obs_t)
    expected = policy.diffusion.step_distribution(state, k).log_prob(policy._unflat(torch.as_tensor(flat)[None], state.mask))
    torch.testing.assert_close(log_prob, expected)
    assert set(step) == {"types", "frac", "lattice"} and step["types"].shape == (5, 56)
    _, reward, terminated, truncated, _ = env.step(flat)
    assert reward == 0.0 and not terminated and not truncated


def test_flatten_action_rejects_a_wrong_shape():
    with pytest.raises(ValueError, match="flat action has shape"):
        make_env().action(np.zeros(3))


def test_a_mismatched_prior_is_a_clear_error():
    with pytest.raises(ValueError, match="prior 'carbon_24' has N_max=24"):
        PPO(DiffusionActorCriticPolicy, make_env(), policy_kwargs={"prior": "carbon_24"})


def test_deterministic_evaluation_samples_with_a_warning():
    from stable_baselines3.common.evaluation import evaluate_policy

    env = make_env()
    model = PPO(DiffusionActorCriticPolicy, env, n_steps=8, batch_size=8, seed=0)
    obs, _ = env.reset(seed=0)
    with pytest.warns(UserWarning, match="deterministic=True samples"):
        first, _ = model.predict(obs, deterministic=True)
    second, _ = model.predict(obs, deterministic=True)
    assert not np.allclose(first, second)  # samples, not the step mean
    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=2, return_episode_rewards=True)
    assert lengths == [4, 4] and all(np.isfinite(rewards))
