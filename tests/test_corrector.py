"""Langevin corrector steps as MDP actions: their density, KL, episode layout and use by the agents."""

import math

import gymnasium as gym
import latticegym
import numpy as np
import pytest
import torch
from latticegym.agents import PriorAgent
from latticegym.agents.ppo import PPO, PPOConfig
from latticegym.agents.rollout import collect
from latticegym.policies import load_prior
from latticegym.policies.diffusion import StepDistribution
from scipy.stats import norm

T, C = 4, 2


def policy(lr: float | None = None):
    p = load_prior("perov_5", num_steps=T)
    p.set_num_steps(T, correctors=C, corrector_step_lr=lr)
    return p


def state_of(p, seed=0, batch=3):
    return p.initial_state(batch, torch.Generator().manual_seed(seed))


def brute_wrapped_log_density(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """log of sum over 101 periodic images of the normal density, in float64, independently of the package."""
    images = np.arange(-50, 51)
    return np.log(norm.pdf(x[..., None] + images, loc=mean[..., None], scale=std[..., None]).sum(-1))


def _held(frac_mean, frac_std):
    """A corrector-step distribution (types and lattice held) with the given coordinate means and stds."""
    b, n = frac_mean.shape[:2]
    return StepDistribution(torch.zeros(b, n, 2), torch.zeros(b), frac_mean, frac_std, torch.eye(3).expand(b, 3, 3), torch.zeros(b), torch.ones(b, n, dtype=torch.bool), torch.ones(b, dtype=torch.bool))


def test_episode_layout_counts_correctors_before_each_predictor_step():
    p = policy()
    assert p.episode_length == T * (1 + C)
    kinds = [("C" if bool(p.phase(n)[1]) else "P") + str(int(p.phase(n)[0])) for n in range(p.episode_length, 0, -1)]
    assert kinds == ["C4", "C4", "P4", "C3", "C3", "P3", "C2", "C2", "P2", "C1", "C1", "P1"]


def test_corrector_step_is_diffcsp_langevin_on_coordinates_with_types_and_lattice_held():
    p = policy()
    x = state_of(p)
    n = p.episode_length  # the first action: a corrector at level T
    k, is_corrector = p.phase(n)
    assert bool(is_corrector) and int(k) == T
    with torch.no_grad():
        dist = p.step_distribution(x, n)
    t = p.taus[T]
    sigma = p.schedules.sigma[t]
    with torch.no_grad():
        _, pred_f, _ = p.network(x.types, x.frac, x.lattice, x.mask, t.float().expand(len(x)) / p.schedules.num_timesteps)
    gamma = 1e-6 * (sigma / p.spec.sigma_min) ** 2  # perov_5's DiffCSP step size
    mask = x.mask[..., None].float()
    expected = torch.remainder(x.frac + gamma * pred_f * p.schedules.score_norm[t].sqrt(), 1.0) * mask
    torch.testing.assert_close(dist.frac_mean, expected)
    torch.testing.assert_close(dist.frac_std, torch.full((len(x),), float((2 * gamma).sqrt())))
    action = dist.sample(torch.Generator().manual_seed(1))
    assert torch.equal(action.types, x.types * mask) and torch.equal(action.lattice, x.lattice)


def test_corrector_log_prob_matches_a_brute_force_wrapped_normal():
    p = policy(lr=2e-6)  # std ~0.2 at level T: the images matter
    x = state_of(p)
    with torch.no_grad():
        dist = p.step_distribution(x, p.episode_length)
    action = dist.sample(torch.Generator().manual_seed(2))
    mask = x.mask.numpy()
    std = np.broadcast_to(dist.frac_std.double().numpy()[:, None, None], action.frac.shape)
    brute = brute_wrapped_log_density(action.frac.double().numpy(), dist.frac_mean.double().numpy(), std)
    expected = (brute.sum(-1) * mask).sum(-1)
    np.testing.assert_allclose(dist.log_prob(action).double().numpy(), expected, rtol=1e-4)


def test_corrector_density_matches_sampled_histogram_across_the_wrap():
    mean = torch.tensor([[[0.98, 0.5, 0.02]]])
    std = torch.tensor([0.15])
    dist = _held(mean, std)
    g = torch.Generator().manual_seed(0)
    draws = np.array([dist.sample(g).frac[0, 0, 0].item() for _ in range(4000)])
    counts, edges = np.histogram(draws, bins=20, range=(0, 1))
    centres = (edges[:-1] + edges[1:]) / 2
    density = np.exp(brute_wrapped_log_density(centres, np.full(20, 0.98), np.full(20, 0.15)))
    np.testing.assert_allclose(counts / len(draws), density / 20, atol=0.012)
    assert counts[0] > counts[10] and counts[-1] > counts[10]  # mass on both sides of the boundary


@pytest.mark.parametrize("std, exact", [(0.02, True), (0.3, False)])
def test_corrector_kl_against_monte_carlo_including_wrap_around(std, exact):
    p_mean = torch.tensor([[[0.995, 0.40, 0.70]]])
    q_mean = torch.tensor([[[0.010, 0.43, 0.69]]])  # 0.015 apart across the boundary, not 0.985
    p, q = _held(p_mean, torch.tensor([std])), _held(q_mean, torch.tensor([std]))
    g = torch.Generator().manual_seed(0)
    samples = [p.sample(g) for _ in range(6000)]
    mc = float(np.mean([(p.log_prob(a) - q.log_prob(a)).item() for a in samples]))
    closed = float(p.kl(q))
    assert math.isfinite(closed) and closed > 0
    if exact:  # small std: the wrapped KL equals the Gaussian one
        assert closed == pytest.approx(mc, rel=0.1)
    else:  # the images overlap: the closed form is an upper bound
        assert closed >= mc - 0.01


def test_corrector_kl_through_the_policy_is_zero_for_the_prior_and_positive_when_weights_move():
    p = policy()
    prior = p.frozen_copy()
    x = state_of(p)
    n = p.episode_length
    assert torch.allclose(p.step_distribution(x, n).kl(prior.step_distribution(x, n)), torch.zeros(len(x)), atol=1e-6)
    with torch.no_grad():
        for w in p.network.parameters():
            w.add_(0.01 * torch.randn_like(w))
    kl = p.step_distribution(x, n).kl(prior.step_distribution(x, n))
    assert (kl > 0).all() and torch.isfinite(kl).all()


def test_env_counts_actions_refuses_a_moved_lattice_on_a_corrector_step_and_finishes():
    env = gym.make("LatticeGym/PerovskiteLowHHI-v0", num_steps=T, correctors=C, render_mode="ansi")
    obs, _ = env.reset(seed=0)
    assert obs["t"] == T * (1 + C) and env.observation_space["t"].n == T * (1 + C) + 1
    assert "next: corrector" in env.render()
    agent = PriorAgent(env.unwrapped.policy, 0)
    bad = agent.act(obs)
    bad["lattice"] = bad["lattice"] * 1.1
    with pytest.raises(ValueError, match=r"action\['lattice'\] changed .* corrector step"):
        env.step(bad)
    steps, done = 0, False
    while not done:
        obs, reward, done, _, info = env.step(agent.act(obs))
        steps += 1
    assert steps == T * (1 + C) and "structure" in info


def test_ppo_updates_on_rollouts_with_corrector_steps():
    p = policy()
    prior = p.frozen_copy()
    env = latticegym.make_vec("LatticeGym/PerovskiteLowHHI-v0", num_envs=4, prior=prior, num_steps=T).unwrapped
    assert env.episode_length == T * (1 + C)
    rollout = collect(env, p, torch.Generator().manual_seed(0), seed=0)
    assert rollout.trajectories.log_probs.shape == (T * (1 + C), 4) and torch.isfinite(rollout.trajectories.log_probs).all()
    agent = PPO(p, prior, PPOConfig(minibatch_size=2, step_fraction=0.5, replay_capacity=0), seed=0)
    stats = agent.update(rollout, 0)
    assert math.isfinite(stats["policy_loss"]) and math.isfinite(stats["trajectory_kl"])
