import math

import numpy as np
import pytest
import torch
from helpers import perovskite
from latticegym.crystal import CrystalBatch
from latticegym.policies.checkpoint import load_policy, save_policy
from latticegym.policies.diffusion import (
    DiffusionPolicy,
    DiffusionState,
    PriorSpec,
    StepDistribution,
)
from latticegym.policies.network import DenoiserConfig
from latticegym.policies.noise import (
    Schedules,
    score_second_moment,
    wrapped_normal_log_prob,
)
from scipy.stats import norm


def tiny_policy(seed=0, num_steps=20) -> DiffusionPolicy:
    torch.manual_seed(seed)
    spec = PriorSpec(elements=[8, 22, 38], num_atoms={2: 1, 5: 3}, lattice_scale=4.0)
    return DiffusionPolicy(spec, DenoiserConfig(num_types=3, hidden=32, layers=2, frequencies=4), num_steps=num_steps).eval()


def random_state(policy, b=4, seed=1) -> DiffusionState:
    return policy.initial_state(b, torch.Generator().manual_seed(seed))


def test_wrapped_log_prob_matches_brute_force_across_the_boundary():
    mean = np.array([0.01, 0.99, 0.5, 0.0, 0.97, 0.2])
    std = np.array([0.05, 0.05, 0.3, 0.5, 0.02, 0.4])
    x = np.array([0.98, 0.02, 0.9, 0.5, 0.01, 0.7])
    brute = np.log(sum(norm.pdf(x + k, mean, std) for k in range(-50, 51)))
    ours = wrapped_normal_log_prob(torch.tensor(x), torch.tensor(mean), torch.tensor(std)).numpy()
    np.testing.assert_allclose(ours, brute, rtol=1e-9, atol=1e-9)
    # and it is a density on [0, 1)
    grid = torch.linspace(0, 1, 20001, dtype=torch.float64)
    for m, s in [(0.02, 0.1), (0.9, 0.45)]:
        p = torch.exp(wrapped_normal_log_prob(grid, torch.full_like(grid, m), torch.full_like(grid, s)))
        assert torch.trapezoid(p, grid).item() == pytest.approx(1.0, abs=1e-6)


def _random_dist(b=3, n=4, k=3, seed=0, frac_std=0.05, dtype=torch.float64) -> StepDistribution:
    g = torch.Generator().manual_seed(seed)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)[:b, :n]
    m = mask[..., None].to(dtype)
    return StepDistribution(
        types_mean=torch.randn(b, n, k, generator=g, dtype=dtype) * m,
        types_std=torch.rand(b, generator=g, dtype=dtype) + 0.1,
        frac_mean=torch.rand(b, n, 3, generator=g, dtype=dtype) * m,
        frac_std=torch.full((b,), frac_std, dtype=dtype),
        lattice_mean=torch.randn(b, 3, 3, generator=g, dtype=dtype),
        lattice_std=torch.rand(b, generator=g, dtype=dtype) + 0.05,
        mask=mask,
    )


def test_step_log_prob_is_the_brute_force_joint_density():
    dist = _random_dist()
    action = dist.sample(torch.Generator().manual_seed(3))
    ours = dist.log_prob(action).numpy()
    for i in range(3):
        m = dist.mask[i].numpy()
        total = norm.logpdf(action.lattice[i].numpy(), dist.lattice_mean[i].numpy(), dist.lattice_std[i].item()).sum()
        total += norm.logpdf(action.types[i][m].numpy(), dist.types_mean[i][m].numpy(), dist.types_std[i].item()).sum()
        x, mu, s = action.frac[i][m].numpy(), dist.frac_mean[i][m].numpy(), dist.frac_std[i].item()
        total += np.log(sum(norm.pdf(x + k, mu, s) for k in range(-30, 31))).sum()
        assert ours[i] == pytest.approx(total, rel=1e-9)


def test_samples_follow_the_distribution():
    dist = _random_dist(b=1, n=1)
    g = torch.Generator().manual_seed(0)
    draws = torch.stack([dist.sample(g).lattice[0, 0, 0] for _ in range(4000)])
    assert draws.mean().item() == pytest.approx(dist.lattice_mean[0, 0, 0].item(), abs=4 * dist.lattice_std.item() / math.sqrt(4000))
    assert draws.std().item() == pytest.approx(dist.lattice_std.item(), rel=0.05)


def test_kl_is_zero_against_itself_and_matches_monte_carlo():
    p, q = _random_dist(seed=0, frac_std=0.01), _random_dist(seed=0, frac_std=0.01)
    assert torch.allclose(p.kl(p), torch.zeros(3, dtype=torch.float64))
    q.types_mean = q.types_mean + 0.3 * q.mask[..., None]
    q.lattice_mean = q.lattice_mean - 0.2
    q.frac_mean = torch.remainder(q.frac_mean + 0.02, 1.0) * q.mask[..., None]
    closed = p.kl(q)
    g = torch.Generator().manual_seed(1)
    samples = [p.sample(g) for _ in range(3000)]
    mc = torch.stack([p.log_prob(x) - q.log_prob(x) for x in samples]).mean(0)
    se = torch.stack([p.log_prob(x) - q.log_prob(x) for x in samples]).std(0) / math.sqrt(3000)
    assert torch.all((mc - closed).abs() < 4 * se + 1e-6), (mc, closed, se)


def test_wrapped_kl_is_an_upper_bound_for_wide_steps():
    p, q = _random_dist(seed=2, frac_std=0.3), _random_dist(seed=2, frac_std=0.3)
    q.frac_mean = torch.remainder(q.frac_mean + 0.25, 1.0) * q.mask[..., None]
    g = torch.Generator().manual_seed(0)
    samples = [p.sample(g) for _ in range(2000)]
    mc = torch.stack([p.log_prob(x) - q.log_prob(x) for x in samples]).mean(0)
    assert torch.all(mc <= p.kl(q) + 0.05)


def test_policy_sample_log_prob_and_kl_are_consistent():
    policy = tiny_policy()
    state = random_state(policy)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        action, logp = policy.sample(state, 20, g)
        assert torch.allclose(logp, policy.step_distribution(state, 20).log_prob(action))
        assert torch.allclose(policy.step_distribution(state, 20).kl(policy.frozen_copy().step_distribution(state, 20)), torch.zeros(4), atol=1e-5)
        other = tiny_policy(seed=1)
        assert (policy.step_distribution(state, 20).kl(other.step_distribution(state, 20)) > 0).all()
    assert torch.isfinite(logp).all()
    assert (action.frac >= 0).all() and (action.frac < 1).all()
    assert (action.types[~state.mask] == 0).all()


def test_log_prob_has_gradients_and_the_prior_does_not():
    policy = tiny_policy()
    prior = policy.frozen_copy()
    state = random_state(policy)
    with torch.no_grad():
        action, _ = policy.sample(state, 7)
    loss = -policy.step_distribution(state, 7).log_prob(action).mean() + policy.step_distribution(state, 7).kl(prior.step_distribution(state, 7)).mean()
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.parameters())
    assert all(p.grad is None for p in prior.parameters())


def test_padding_never_changes_results():
    policy = tiny_policy()
    batch5 = CrystalBatch.from_structures([perovskite()], n_max=5)
    batch5.atom_types[:] = np.where(batch5.mask, [38, 22, 8, 8, 8], 0)
    padded = CrystalBatch(
        np.pad(batch5.atom_types, ((0, 0), (0, 3))),
        np.pad(batch5.frac_coords, ((0, 0), (0, 3), (0, 0))),
        batch5.lattice,
        np.pad(batch5.mask, ((0, 0), (0, 3))),
    )
    a = policy.encode(batch5)
    b = DiffusionState(
        torch.cat([a.types, torch.zeros(1, 3, 3)], 1),
        torch.cat([a.frac, torch.zeros(1, 3, 3)], 1),
        a.lattice,
        torch.cat([a.mask, torch.zeros(1, 3, dtype=torch.bool)], 1),
    )
    assert torch.equal(b.mask, policy.encode(padded).mask)
    with torch.no_grad():
        da, db = policy.step_distribution(a, 10), policy.step_distribution(b, 10)
        torch.testing.assert_close(da.frac_mean, db.frac_mean[:, :5])
        torch.testing.assert_close(da.lattice_mean, db.lattice_mean)
        act_a = da.sample(torch.Generator().manual_seed(0))
        garbage = torch.full((1, 3, 3), 0.37)
        act_b = DiffusionState(torch.cat([act_a.types, garbage], 1), torch.cat([act_a.frac, garbage], 1), act_a.lattice, b.mask)
        torch.testing.assert_close(da.log_prob(act_a), db.log_prob(act_b))  # garbage in padding is ignored
        other = tiny_policy(seed=3)
        torch.testing.assert_close(policy.step_distribution(a, 10).kl(other.step_distribution(a, 10)), policy.step_distribution(b, 10).kl(other.step_distribution(b, 10)))


def test_network_invariances():
    policy = tiny_policy()
    state = policy.initial_state(2, torch.Generator().manual_seed(1), num_atoms=torch.tensor([5, 2]))
    net = policy.network
    t = torch.full((2,), 0.3)
    q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(0)))
    shift = torch.tensor([0.3, -0.2, 0.77])
    perm = torch.tensor([4, 0, 3, 1, 2])
    with torch.no_grad():
        a, f, l = net(state.types, state.frac, state.lattice, state.mask, t)
        a2, f2, l2 = net(state.types, state.frac, state.lattice @ q.T, state.mask, t)  # rotate the cell
        torch.testing.assert_close(a2, a, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(f2, f, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(l2, l @ q.T, atol=1e-4, rtol=1e-4)
        m = state.mask[..., None]
        a3, f3, l3 = net(state.types, torch.remainder(state.frac + shift, 1.0) * m, state.lattice, state.mask, t)  # translate
        torch.testing.assert_close(f3, f, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(l3, l, atol=1e-4, rtol=1e-4)
        a4, f4, _ = net(state.types[:1, perm], state.frac[:1, perm], state.lattice[:1], state.mask[:1, perm], t[:1])  # permute atoms
        torch.testing.assert_close(f4, f[:1, perm], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(a4, a[:1, perm], atol=1e-4, rtol=1e-4)


def test_respacing():
    sch = Schedules(1000)
    assert sch.respaced(1000).tolist() == list(range(1001))
    taus = sch.respaced(50)
    assert len(taus) == 51 and taus[0] == 0 and taus[-1] == 1000 and (taus.diff() > 0).all()
    assert sch.respaced(1).tolist() == [0, 1000]
    with pytest.raises(ValueError, match="num_steps"):
        sch.respaced(0)
    policy = tiny_policy(num_steps=50)
    with pytest.raises(ValueError, match="step index must be in 1..50"):
        policy.step_distribution(random_state(policy), 51)


def test_last_step_keeps_a_tenth_of_the_noise_it_removes():
    policy = tiny_policy(num_steps=20)
    state = random_state(policy)
    sch = policy.schedules
    with torch.no_grad():
        last, before = policy.step_distribution(state, 1), policy.step_distribution(state, 2)
    beta_1 = 1 - sch.alpha_bar[1]
    torch.testing.assert_close(last.types_std, beta_1.sqrt().expand(4))  # decoded by argmax: left as is
    torch.testing.assert_close(last.lattice_std, 0.1 * beta_1.sqrt().expand(4))
    torch.testing.assert_close(last.frac_std, 0.1 * sch.sigma[1].expand(4))
    assert (before.lattice_std == before.types_std).all()  # earlier steps: the DDPM posterior std for both
    policy.spec.last_step_std = 1.0
    with torch.no_grad():
        torch.testing.assert_close(policy.step_distribution(state, 1).frac_std, sch.sigma[1].expand(4))


def test_shipped_perov_prior_samples_square_cubic_cells():
    # Every perov_5 cell is cubic; re-adding sqrt(beta_1) of noise on the last step skewed them by ~0.6 degrees.
    from latticegym.benchmarks.measure.last_step import cell_shape
    from latticegym.policies import load_prior

    def median_skew(last_step_std):
        policy = load_prior("perov_5", num_steps=20)
        policy.spec.last_step_std = last_step_std
        with torch.no_grad():
            return cell_shape(policy.generate(64, seed=0, batch_size=64).to_structures())["skew_deg"][0]

    sharp, noisy = median_skew(0.1), median_skew(1.0)
    assert sharp < 0.3 < noisy, (sharp, noisy)


def test_score_normaliser_matches_monte_carlo():
    sigma = torch.tensor([0.01, 0.1, 0.5], dtype=torch.float64)
    from latticegym.policies.noise import wrapped_normal_score

    z = torch.randn(200000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mc = (wrapped_normal_score(z * sigma, sigma.expand(200000, 3)) ** 2).mean(0)
    torch.testing.assert_close(score_second_moment(sigma), mc, rtol=0.02, atol=0)


def test_generation_is_seeded_and_decodes():
    policy = tiny_policy(num_steps=5)
    a = policy.generate(6, seed=11, batch_size=4)
    b = policy.generate(6, seed=11, batch_size=4)
    c = policy.generate(6, seed=12, batch_size=4)
    np.testing.assert_array_equal(a.frac_coords, b.frac_coords)
    assert not np.array_equal(a.frac_coords, c.frac_coords)
    assert set(a.num_atoms) <= {2, 5}
    assert set(np.unique(a.atom_types[a.mask])) <= {8, 22, 38}
    assert len(a.to_structures()) == 6


def test_encode_rejects_unknown_elements():
    policy = tiny_policy()
    batch = CrystalBatch.from_structures([perovskite()])
    batch.atom_types[0, 0] = 26
    with pytest.raises(ValueError, match=r"elements \[26\] are not in this prior's vocabulary"):
        policy.encode(batch)


def test_checkpoint_round_trip(tmp_path):
    policy = tiny_policy()
    path = save_policy(policy, tmp_path / "p.pt")
    loaded = load_policy(path, num_steps=20)
    state = random_state(policy)
    with torch.no_grad():
        torch.testing.assert_close(loaded.step_distribution(state, 3).frac_mean, policy.step_distribution(state, 3).frac_mean)
    assert loaded.spec == policy.spec
