import gymnasium as gym
import latticegym  # noqa: F401
import numpy as np
import pytest
import torch
from latticegym.agents.sb3 import DiffusionActorCriticPolicy
from latticegym.envs.wrappers import FlattenAction
from latticegym.rewards.base import RewardResult
from stable_baselines3 import PPO


def make_env():
    return FlattenAction(gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=4))


def oxygen_fraction(structures):
    values = np.array([s.composition.get_atomic_fraction("O") for s in structures])
    return RewardResult(values, {"oxygen": values})


def test_sb3_ppo_raises_the_likelihood_of_its_above_average_steps():
    """After one update, the steps SB3 rated above average (advantage > 0) are likelier and the others less likely."""
    env = FlattenAction(gym.make("LatticeGym/Custom-v0", prior="perov_5", reward=oxygen_fraction, num_steps=4))
    model = PPO(DiffusionActorCriticPolicy, env, n_steps=32, batch_size=32, n_epochs=1, gamma=1.0, gae_lambda=1.0, learning_rate=1e-6, seed=0)
    model.learn(32)
    batch = next(model.rollout_buffer.get())  # the update's own data stays until the next rollout
    with torch.no_grad():
        _, log_prob, _ = model.policy.evaluate_actions(batch.observations, batch.actions)
    change = (log_prob - batch.old_log_prob).numpy()
    advantages = batch.advantages.numpy()
    advantages = (advantages - advantages.mean()) / advantages.std()  # as SB3 normalises them for its loss
    assert model.num_timesteps == 32 and np.ptp(batch.returns.numpy()) > 0  # the oxygen fraction varies between episodes
    assert np.mean(change * advantages) > 0
    assert change[advantages > 0].mean() > change[advantages < 0].mean()


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
