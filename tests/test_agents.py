import gymnasium as gym
import latticegym  # noqa: F401  registers the envs
import numpy as np
import pytest
import torch
from helpers import perovskite, rocksalt
from latticegym.agents.base import normalized_advantages, step_kls, step_terms
from latticegym.agents.grpo import CHEMELEON2, GRPO, GRPOConfig, group_advantages
from latticegym.agents.ppo import PPO, PPOConfig
from latticegym.agents.reinforce import REINFORCE, REINFORCEConfig
from latticegym.agents.replay import Replay
from latticegym.agents.rollout import collect
from latticegym.agents import rwkl
from latticegym.agents.rwkl import RewardWeightedKL, RWKLConfig
from latticegym.policies import load_prior
from latticegym.rewards.base import RewardResult

T = 6


@pytest.fixture(scope="module")
def prior():
    return load_prior("perov_5", num_steps=T).frozen_copy()


def oxygen_fraction(structures):
    """A cheap, smooth reward: the fraction of oxygen atoms."""
    values = [s.composition.get_atomic_fraction("O") for s in structures]
    return RewardResult(np.array(values), {"oxygen": np.array(values)})


def make_env(prior, batch=8):
    return gym.make_vec("LatticeGym/Custom-v0", num_envs=batch, vectorization_mode="vector_entry_point", prior=prior, reward=oxygen_fraction).unwrapped


def trainable(prior):
    policy = load_prior("perov_5", num_steps=T)
    return policy


def test_collect_stores_states_log_probs_and_the_env_rewards(prior):
    env = make_env(prior)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(0), seed=0)
    traj = rollout.trajectories
    assert traj.types.shape[:2] == (T + 1, 8) and traj.log_probs.shape == (T, 8)
    for k in (T, 1):
        expected = policy.step_distribution(traj.state(k), k).log_prob(traj.state(k - 1))
        torch.testing.assert_close(traj.log_probs[T - k], expected, rtol=1e-5, atol=1e-3)
    decoded = policy.decode(traj.final).to_structures()
    assert [s.composition for s in decoded] == [s.composition for s in rollout.structures]
    np.testing.assert_allclose(traj.rewards.numpy(), oxygen_fraction(rollout.structures).values, rtol=1e-6)


def test_step_kls_are_zero_for_the_prior_and_are_each_steps_kl(prior):
    env = make_env(prior, batch=4)
    policy = trainable(prior)
    traj = collect(env, policy, torch.Generator().manual_seed(1), seed=1).trajectories
    assert torch.allclose(step_kls(policy, prior, traj), torch.zeros(T, 4), atol=1e-4)
    with torch.no_grad():
        for p in policy.network.parameters():
            p.add_(1e-3 * torch.randn_like(p))
    kls = step_kls(policy, prior, traj, chunk=5)
    by_step = torch.stack([policy.step_distribution(traj.state(k), k).kl(prior.step_distribution(traj.state(k), k)) for k in range(T, 0, -1)]).detach()
    assert (kls > 0).all()
    torch.testing.assert_close(kls, by_step, rtol=1e-4, atol=1e-4)


def test_advantages_are_normalised_per_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 30.0])
    adv = normalized_advantages(rewards, torch.tensor([0, 0, 0, 1, 1]))
    torch.testing.assert_close(adv[:3], torch.tensor([-1.2247, 0.0, 1.2247]), rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(adv[3:], torch.tensor([-1.0, 1.0]), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    "agent_cls, config",
    [
        (PPO, PPOConfig(lr=3e-4, epochs=1, step_fraction=1.0, kl_coef=0.0, replay_capacity=0, clip_range=10.0)),
        (REINFORCE, REINFORCEConfig(lr=3e-4, step_fraction=1.0, kl_coef=0.0)),
        (GRPO, GRPOConfig(lr=3e-4, epochs=1, step_fraction=1.0, kl_coef=0.0, clip_range=10.0)),
        (GRPO, GRPOConfig(**{**CHEMELEON2, "lr": 3e-4, "kl_coef": 0.0, "step_fraction": 1.0, "minibatch_size": 16})),
    ],
    ids=["ppo", "reinforce", "grpo-omatg", "grpo-chemeleon2"],
)
def test_policy_gradient_raises_the_likelihood_of_better_trajectories(prior, agent_cls, config):
    env = make_env(prior, batch=16)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(2), seed=2)
    traj = rollout.trajectories
    before = torch.stack([step_terms(policy, prior, traj, k)[0] for k in range(T, 0, -1)]).sum(0).detach()
    stats = agent_cls(policy, prior, config).update(rollout, 0)
    assert all(np.isfinite(v) for v in stats.values())
    after = torch.stack([step_terms(policy, prior, traj, k)[0] for k in range(T, 0, -1)]).sum(0).detach()
    gain = (after - before).numpy()
    advantage = (traj.rewards - traj.rewards.mean()).numpy()
    assert np.corrcoef(gain, advantage)[0, 1] > 0.3, (gain, advantage)


def test_ppo_with_an_outside_baseline_pushes_a_batch_that_beats_it(prior):
    """An acquired batch of equal rewards teaches nothing against its own mean, but beats the pool's."""
    env = make_env(prior, batch=8)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(3), seed=3)
    rollout.trajectories.rewards = torch.ones(8)
    config = PPOConfig(epochs=1, step_fraction=1.0, kl_coef=0.0, replay_capacity=0)  # one minibatch: every ratio is 1
    params = lambda: torch.cat([p.detach().flatten().clone() for p in policy.network.parameters()])  # noqa: E731
    before = params()
    assert PPO(policy, prior, config).update(rollout, 0)["policy_loss"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(params(), before)  # zero advantages, no KL: nothing moves
    stats = PPO(policy, prior, config).update(rollout, 0, baseline=(0.4, 0.3))
    assert stats["policy_loss"] == pytest.approx(-(1.0 - 0.4) / 0.3, rel=1e-5)  # -mean advantage
    assert not torch.equal(params(), before)


def test_ppo_ratio_starts_at_one_and_replay_keeps_behaviour_log_probs(prior):
    env = make_env(prior)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(3), seed=3)
    new, old, kl = step_terms(policy, prior, rollout.trajectories, 3)
    torch.testing.assert_close(new, old, rtol=1e-5, atol=1e-3)
    assert torch.allclose(kl, torch.zeros_like(kl), atol=1e-5)
    agent = PPO(policy, prior, PPOConfig(replay_capacity=4, replay_top_k=4, replay_mix=0.5))
    agent.update(rollout, 0)
    assert 1 <= len(agent.replay) <= 4
    stored = agent.replay.buffer
    i = int(np.flatnonzero(stored.extra["iteration"] == 0)[0])
    j = int(torch.nonzero((rollout.trajectories.rewards == stored.rewards[i])).flatten()[0])
    torch.testing.assert_close(stored.log_probs[:, i], rollout.trajectories.log_probs[:, j])
    stats = agent.update(collect(env, policy, torch.Generator().manual_seed(4)), 1)
    assert stats["replayed"] >= 1


def test_replay_keeps_the_best_per_composition_within_capacity(prior):
    env = make_env(prior, batch=4)
    traj = collect(env, trainable(prior), torch.Generator().manual_seed(5), seed=5).trajectories
    traj.rewards = torch.tensor([0.1, 0.9, 0.5, 0.7])
    structures = [rocksalt(), rocksalt(), perovskite(), perovskite()]
    replay = Replay(capacity=8)
    replay.add(traj, structures, np.ones(4, bool), top_k=4, iteration=0)
    assert sorted(replay.buffer.rewards.tolist()) == pytest.approx([0.7, 0.9])
    assert set(replay.buffer.extra["key"]) == {"NaCl", "SrTiO3"}
    replay.purge({"NaCl"})
    assert list(replay.buffer.extra["key"]) == ["SrTiO3"]
    small = Replay(capacity=1)
    small.add(traj, structures, np.array([True, False, True, True]), top_k=4, iteration=0)
    assert small.buffer.rewards.tolist() == pytest.approx([0.7])


def test_reward_weighted_kl_trains_on_top_k_with_a_fresh_optimizer(prior):
    env = make_env(prior)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(6), seed=6)
    agent = RewardWeightedKL(policy, prior, RWKLConfig(timesteps=4, accum_steps=2, epochs=1, replay_sample=2))
    weights = [p.clone() for p in policy.network.parameters()]
    stats = agent.update(rollout, 0)
    assert stats["trained_on"] == 4  # top half of 8, replay still empty
    assert any((a != b).any() for a, b in zip(weights, policy.network.parameters()))
    assert "optimizer" not in agent.state_dict()
    stats = agent.update(collect(env, policy, torch.Generator().manual_seed(7)), 1)
    assert stats["trained_on"] == 6


def test_reward_weighted_kl_sweeps_timesteps_noisiest_first_with_accumulation(prior, monkeypatch):
    env = make_env(prior)
    policy = trainable(prior)
    rollout = collect(env, policy, torch.Generator().manual_seed(6), seed=6)
    seen, steps = [], []
    real_corrupt = policy.corrupt
    monkeypatch.setattr(policy, "corrupt", lambda x0, g, t=None: seen.append(t) or real_corrupt(x0, g, t=t))
    real_step = torch.optim.Adam.step
    monkeypatch.setattr(torch.optim.Adam, "step", lambda self, *a, **k: steps.append(1) or real_step(self, *a, **k))
    RewardWeightedKL(policy, prior, RWKLConfig(timesteps=10, accum_steps=4, epochs=2, replay_capacity=0)).update(rollout, 0)
    sweep = [1000, 889, 778, 667, 556, 445, 334, 223, 112, 1]
    assert seen == sweep * 2 and len(steps) == 2 * 3  # ceil(10 / 4) optimizer steps per epoch


def test_reward_weighted_kl_batches_each_window_into_the_gradient_of_one_pass_per_timestep(prior, monkeypatch):
    env = make_env(prior)
    rollout = collect(env, trainable(prior), torch.Generator().manual_seed(6), seed=6)
    trained = []
    for per_pass in (1, 512):  # 1: MatInvent's loop, a forward and backward per timestep
        monkeypatch.setattr(rwkl, "CRYSTALS_PER_PASS", per_pass)
        policy = trainable(prior)
        stats = RewardWeightedKL(policy, prior, RWKLConfig(timesteps=10, accum_steps=4, epochs=2, replay_capacity=0)).update(rollout, 0)
        trained.append(([p.detach().clone() for p in policy.network.parameters()], stats))
    (one, one_stats), (batched, batched_stats) = trained
    moved = max((a - b).abs().max().item() for a, b in zip(one, trainable(prior).network.parameters()))
    assert moved > 1e-5
    # Summation order moves a few weights whose Adam step divides float noise by a near-zero gradient.
    assert max((a - b).abs().max().item() for a, b in zip(one, batched)) < 0.02 * moved
    assert batched_stats == pytest.approx(one_stats, rel=1e-5)


def test_reward_weighted_kl_defaults_are_matinvents_released_settings():
    cfg = RWKLConfig()
    assert (cfg.lr, cfg.topk_ratio, cfg.epochs, cfg.timesteps, cfg.accum_steps, cfg.sigma) == (1e-4, 0.5, 3, 1000, 50, 0.025)
    assert (cfg.replay_capacity, cfg.replay_sample, cfg.replay_cutoff) == (100, 10, 0.1)
    assert RewardWeightedKL.default_diversity == {"mode": "composition", "tol": 3, "buffer": 6}


def test_replay_keeps_only_rewards_above_the_cutoff_and_purges_zeroed_keys(prior):
    env = make_env(prior)
    rollout = collect(env, prior, torch.Generator().manual_seed(3), seed=3)
    traj = rollout.trajectories
    traj.rewards = torch.tensor([0.05, 0.5, 0.2, 0.1, 0.9, 0.0, 0.3, 0.6])
    replay = Replay(capacity=8, dedup="structure")
    replay.add(traj, rollout.structures, np.ones(8, dtype=bool), top_k=8, iteration=0, min_reward=0.1)
    assert sorted(replay.buffer.rewards.tolist()) == pytest.approx([0.2, 0.3, 0.5, 0.6, 0.9])
    rollout.result.components["diversity"] = np.where(np.arange(8) == 4, 0.0, 1.0)  # the 0.9 crystal is now zeroed
    replay.purge_penalised(rollout)
    assert max(replay.buffer.rewards.tolist()) == pytest.approx(0.6) and len(replay) == 4


def test_grpo_advantages_are_standardised_within_each_group():
    rewards = torch.tensor([1.0, 2.0, 3.0, 10.0, 30.0, 0.5])
    groups = torch.tensor([5, 5, 5, 8, 8, 5])
    adv = group_advantages(rewards, groups)
    for g in (5, 8):
        sel = groups == g
        assert adv[sel].mean().abs() < 1e-6 and (adv[sel].std(unbiased=False) - 1).abs() < 1e-4
    assert adv[3] < 0 < adv[2]  # 10 is low among 10 and 30, 3 is high among 0.5, 1, 2 and 3


def test_grpo_settings_are_checked():
    with pytest.raises(ValueError, match="kl_to"):
        GRPOConfig(kl_to="reference")
    with pytest.raises(ValueError, match="log_prob"):
        GRPOConfig(log_prob="max")
