"""ALGORITHMS.md §1 rollout procedure: stored transitions, trainable sets, recomputation, shared noise."""

import pytest
import torch

from vidtune.errors import ConfigError
from vidtune.math.sde import sde_step, subspace_project
from vidtune.sampling.rollout import RolloutSpec, noisy_set, rollout, trainable_steps, trained_per_sample, transition_eval


def _setup(policy, p=2, g=3):
    prompts = [pr for pr in ["a red circle", "two small blue squares move left"] for _ in range(g)][: p * g]
    cond = policy.encode_prompts(prompts)
    return prompts, cond, policy.latent_shape(4, 16, 16)


def test_recomputed_logprobs_equal_rollout_bit_for_bit(tiny_policy):
    """Property 5: unchanged parameters, same batch layout, fp32 ⇒ recomputed log-probs == logp_old exactly,
    so the first PPO ratio is exactly 1. Checked for every trained column, with and without CFG."""
    for guidance in (1.0, 2.5):
        prompts, cond, shape = _setup(tiny_policy)
        uncond = tiny_policy.encode_prompts([""] * len(prompts)) if guidance != 1 else None
        spec = RolloutSpec(steps=6, guidance=guidance)
        ro = rollout(tiny_policy, cond, uncond, prompts, 3, spec, seed=5, latent_shape=shape)
        rows = torch.arange(len(prompts))
        with torch.no_grad():
            for j in range(ro.train_steps.shape[1]):
                lp = transition_eval(tiny_policy, ro, cond, uncond, rows, j).logp
                assert torch.equal(lp, ro.logp_old[:, j]), (guidance, j)


def test_dense_logprob_sums_to_scalar_times_d(tiny_policy):
    """Property 4 on a real rollout: D·L_scalar = Σ_ν L_dense for the same transition."""
    prompts, cond, shape = _setup(tiny_policy, p=1, g=2)
    sc = rollout(tiny_policy, cond, None, prompts, 2, RolloutSpec(steps=4), seed=1, latent_shape=shape)
    de = rollout(tiny_policy, cond, None, prompts, 2, RolloutSpec(steps=4, reduction="dense"), seed=1,
                 latent_shape=shape)
    assert torch.equal(sc.states, de.states)
    d = 3 * 4 * 16 * 16
    assert de.logp_old.shape == (2, sc.logp_old.shape[1], 4, 16, 16)
    assert torch.allclose(d * sc.logp_old, de.logp_old.flatten(2).sum(2), rtol=1e-5)


def test_trainable_set_properties():
    """Property 6: 𝒮_b never holds S−1, has n = max(1, ⌊0.6·15⌋) = 9 entries for S = 16, differs across samples,
    and is reproducible under a seed."""
    spec = RolloutSpec(steps=16)
    noisy = noisy_set(spec, torch.Generator().manual_seed(0))
    a = trainable_steps(spec, noisy, 8, torch.Generator().manual_seed(0))
    b = trainable_steps(spec, noisy, 8, torch.Generator().manual_seed(0))
    assert a.shape == (8, 9) and torch.equal(a, b) and trained_per_sample(spec) == 9
    assert (a != 15).all() and len({tuple(r.tolist()) for r in a}) > 1
    for r in a:
        assert len(set(r.tolist())) == 9


def test_window_noise_only_inside_and_trains_whole_window(tiny_policy):
    """Property 6 (window): std = 0 outside the window; every window holds a non-final transition."""
    spec = RolloutSpec(steps=8, sde_window=(2, 0, 7))
    for seed in range(10):
        noisy = noisy_set(spec, torch.Generator().manual_seed(seed))
        assert int(noisy.sum()) == 2 and not noisy[7]
    prompts, cond, shape = _setup(tiny_policy, p=1, g=2)
    ro = rollout(tiny_policy, cond, None, prompts, 2, spec, seed=3, latent_shape=shape)
    on = ro.sigmas > 0
    assert int(on.sum()) == 2
    assert set(ro.train_steps[0].tolist()) == set(torch.nonzero(on).flatten().tolist())
    assert ro.train_steps.shape[1] == trained_per_sample(spec) == 2  # not ⌊0.6·7⌋ = 4


def test_shared_initial_noise_within_group_only(tiny_policy):
    """Property 7: x_{t0} identical within a group, different across groups; trajectories then differ."""
    prompts, cond, shape = _setup(tiny_policy, p=2, g=3)
    ro = rollout(tiny_policy, cond, None, prompts, 3, RolloutSpec(steps=4), seed=2, latent_shape=shape)
    x0 = ro.states[:, 0]
    assert torch.equal(x0[0], x0[1]) and torch.equal(x0[1], x0[2])
    assert not torch.equal(x0[0], x0[3])
    assert not torch.equal(ro.states[0, 1], ro.states[1, 1])


def test_rollout_rejects_noise_free_and_bad_windows():
    with pytest.raises(ConfigError, match="noise level is 0"):
        RolloutSpec(eta=0.0).validate()
    with pytest.raises(ConfigError, match="sde_window"):
        RolloutSpec(steps=8, sde_window=(2, 6, 8)).validate()


def test_shards_of_whole_groups_are_the_rows_of_the_whole_rollout(tiny_policy):
    """Data parallelism: the rollouts of rows 0–2 and 3–5 (one group of G = 3 each, ``rows=``/``batch=``) are, row
    for row, the rollout of all 6: the same initial and SDE noise, trained transitions and log-probabilities (to
    float rounding of the smaller velocity batch). Rows that split a group are an error."""
    prompts, cond, shape = _setup(tiny_policy, p=2, g=3)
    spec = RolloutSpec(steps=6)
    whole = rollout(tiny_policy, cond, None, prompts, 3, spec, seed=4, latent_shape=shape)
    parts = [rollout(tiny_policy, {k: v[rows] for k, v in cond.items()}, None, prompts[rows], 3, spec, seed=4,
                     latent_shape=shape, rows=rows, batch=6) for rows in (slice(0, 3), slice(3, 6))]
    assert [s for p in parts for s in p.seeds] == whole.seeds
    assert torch.equal(torch.cat([p.train_steps for p in parts]), whole.train_steps)
    assert torch.allclose(torch.cat([p.states for p in parts]), whole.states, atol=1e-6)
    assert torch.allclose(torch.cat([p.logp_old for p in parts]), whole.logp_old, atol=1e-6)
    with pytest.raises(ValueError, match="whole groups"):
        rollout(tiny_policy, {k: v[1:4] for k, v in cond.items()}, None, prompts[1:4], 3, spec, seed=4,
                latent_shape=shape, rows=slice(1, 4), batch=6)


def test_coarse_noise_rollout_is_block_constant_and_recomputes_bit_for_bit(tiny_policy):
    """§1 Coarse noise, pool (2, 4, 4): every SDE step's x_{s+1} − μ_s is constant over 2×4×4 blocks; recomputed
    log-probs equal ``logp_old`` exactly (ρ ≡ 1 on the first update) and equal the Normal density of Pᵀx_{s+1}."""
    pool = (2, 4, 4)
    prompts, cond, shape = _setup(tiny_policy, p=1, g=2)
    ro = rollout(tiny_policy, cond, None, prompts, 2, RolloutSpec(steps=4, noise_pool=pool), seed=3,
                 latent_shape=shape)
    assert ro.noise_pool == pool and not torch.equal(ro.states[0, 2], ro.states[1, 2])
    rows = torch.arange(2)
    with torch.no_grad():
        for j in range(ro.train_steps.shape[1]):
            te = transition_eval(tiny_policy, ro, cond, None, rows, j)
            assert torch.equal(te.logp, ro.logp_old[:, j])
            s = ro.train_steps[:, j]
            step = sde_step(te.x, te.velocity, ro.grid[s].double(), ro.grid[s + 1].double(), ro.sigmas[s].double(),
                            pool)
            resid = ro.states[rows, s + 1] - step.mean
            blocks = resid.unflatten(2, (2, 2)).unflatten(4, (4, 4)).unflatten(6, (4, 4))  # [B, C, 2, 2, 4, 4, 4, 4]
            spread = blocks.amax((3, 5, 7)) - blocks.amin((3, 5, 7))
            assert float(spread.abs().max()) < 1e-5 and float(resid.abs().max()) > 1e-3
            z = subspace_project(resid, pool) / step.std
            want = torch.distributions.Normal(0.0, step.std.float()).log_prob(step.std.float() * z).flatten(1).mean(1)
            assert torch.allclose(te.logp, want, atol=1e-4)


def test_coarse_noise_rejects_dense_reduction_and_pools_that_do_not_divide(tiny_policy):
    with pytest.raises(ConfigError, match="dense"):
        RolloutSpec(noise_pool=(1, 2, 2), reduction="dense").validate()
    with pytest.raises(ConfigError, match=">= 1"):
        RolloutSpec(noise_pool=(0, 2, 2)).validate()
    prompts, cond, shape = _setup(tiny_policy, p=1, g=2)
    with pytest.raises(ConfigError, match=r"noise_pool.*\(1, 3, 3\).*\(4, 16, 16\)"):
        rollout(tiny_policy, cond, None, prompts, 2, RolloutSpec(steps=4, noise_pool=(1, 3, 3)), seed=0,
                latent_shape=shape)
