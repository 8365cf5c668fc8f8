"""ALGORITHMS.md §1 property tests for the SDE step and its log-density."""

import math

import pytest
import torch

from vidtune.math.flow_matching import time_grid
from vidtune.math.sde import (gaussian_logprob, noise_level, pooled_shape, reduce_logprob, sde_step, subspace_lift,
                              subspace_logprob, subspace_project)


def test_eta_zero_is_euler_ode_step():
    """Property 1: σ = 0 ⇒ μ = x + v·Δt exactly and std = 0."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 2, 4, 4, generator=g), torch.randn(2, 3, 2, 4, 4, generator=g)
    dt = torch.tensor(0.6) - torch.tensor(0.7)  # Δt in fp32, as the step computes it
    step = sde_step(x, v, 0.7, 0.6, noise_level(0.7, 0.6, "dance", eta=0.0))
    assert torch.equal(step.mean, x + v * dt)
    assert float(step.std) == 0.0
    step_fg = sde_step(x, v, 0.7, 0.6, noise_level(0.7, 0.6, "flow_grpo", a=0.0))
    assert torch.equal(step_fg.mean, x + v * dt)


def test_schedules_agree_when_sigmas_coincide_and_drift_is_score_form():
    """Property 2: a = η/√(t/(1−t)) makes flow_grpo's σ equal dance's η, so μ and std agree; the drift equals
    v − ½σ²·score with score = −(x − (1−t)·x̂0)/t², x̂0 = x − t·v."""
    t, tn, eta = 0.6, 0.5, 0.3
    a = eta / math.sqrt(t / (1 - t))
    s_d, s_f = noise_level(t, tn, "dance", eta=eta), noise_level(t, tn, "flow_grpo", a=a)
    assert abs(float(s_d) - float(s_f)) < 1e-12
    g = torch.Generator().manual_seed(1)
    x, v = torch.randn(4, 8, generator=g, dtype=torch.float64), torch.randn(4, 8, generator=g, dtype=torch.float64)
    d, f = sde_step(x, v, t, tn, s_d), sde_step(x, v, t, tn, s_f)
    assert torch.allclose(d.mean, f.mean, atol=1e-12) and torch.allclose(d.std, f.std, atol=1e-12)
    x0_hat = x - t * v
    score = -(x - (1 - t) * x0_hat) / t**2
    drift = (d.mean - x) / (tn - t)
    assert torch.allclose(drift, v - 0.5 * eta**2 * score, atol=1e-6)


def test_flow_grpo_uses_next_time_at_t_equal_one():
    """σ at t = 1 uses t̃ = t_1: a·√(1/(1 − t_1)); with a = 0.7, t_1 = 0.75 ⇒ 0.7·2 = 1.4."""
    assert abs(float(noise_level(1.0, 0.75, "flow_grpo", a=0.7)) - 1.4) < 1e-12


def _marginal_run(schedule: str) -> tuple[float, float]:
    m, s0, n, steps = 0.7, 0.5, 100_000, 100
    g = torch.Generator().manual_seed(3)
    grid = time_grid(steps)
    x = torch.randn(n, generator=g, dtype=torch.float64)
    for s in range(steps):
        t, tn = float(grid[s]), float(grid[s + 1])
        vt = (1 - t) ** 2 * s0**2 + t**2
        v = -m + (t - (1 - t) * s0**2) / vt * (x - (1 - t) * m)
        sig = noise_level(t, tn, schedule) if s < steps - 1 else torch.tensor(0.0)
        step = sde_step(x, v, t, tn, sig)
        x = step.mean + step.std * torch.randn(n, generator=g, dtype=torch.float64)
    return float(x.mean()), float(x.std())


def test_marginal_preservation_both_schedules():
    """Property 3: exact 1-D velocity for x0 ~ N(0.7, 0.5²); 100 steps, 1e5 samples ⇒ |mean−m|, |std−s0| < 0.02."""
    for schedule in ("dance", "flow_grpo"):
        mean, std = _marginal_run(schedule)
        assert abs(mean - 0.7) < 0.02, (schedule, mean)
        assert abs(std - 0.5) < 0.02, (schedule, std)


def test_logprob_matches_library_normal_and_reductions():
    """Property 4: ℓ_e equals torch.distributions.Normal.log_prob; D·L_scalar = Σ_ν L_dense."""
    g = torch.Generator().manual_seed(4)
    mean = torch.randn(2, 3, 2, 4, 4, generator=g)
    std = torch.tensor(0.37)
    x = mean + std * torch.randn(mean.shape, generator=g)
    ell = gaussian_logprob(x, mean, std)
    ref = torch.distributions.Normal(mean, std).log_prob(x)
    assert torch.allclose(ell, ref, atol=1e-6)
    d = 3 * 2 * 4 * 4
    scalar, dense = reduce_logprob(ell, "scalar"), reduce_logprob(ell, "dense")
    assert dense.shape == (2, 2, 4, 4)
    assert torch.allclose(d * scalar, dense.flatten(1).sum(1), rtol=1e-6)


def test_masked_scalar_reduction_averages_kept_elements():
    """A mask keeping latent frame 1 only: the scalar reduction is the mean over that frame's elements."""
    ell = torch.arange(2 * 3 * 2 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2, 2)
    mask = torch.tensor([0.0, 1.0]).view(1, 1, 2, 1, 1)
    got = reduce_logprob(ell, "scalar", mask)
    assert torch.allclose(got, ell[:, :, 1].flatten(1).mean(1))


def test_coarse_noise_lift_is_orthonormal_and_projects_by_hand():
    """§1 Coarse noise: PᵀP = I; Pᵀx of a 1×2×2 block is its sum / 2 (k = 4); P·z repeats z / 2 over the block."""
    pool = (1, 2, 2)
    x = torch.tensor([1.0, 2.0, 3.0, 5.0]).view(1, 1, 1, 2, 2)
    assert torch.allclose(subspace_project(x, pool), torch.tensor(11.0 / 2).view(1, 1, 1, 1, 1))
    assert torch.equal(subspace_lift(torch.tensor(3.0).view(1, 1, 1, 1, 1), pool), torch.full((1, 1, 1, 2, 2), 1.5))
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2, 3, 2, 2, 2, generator=g, dtype=torch.float64)
    for pool in ((1, 1, 1), (2, 4, 4), (1, 2, 4)):
        assert torch.allclose(subspace_project(subspace_lift(z, pool), pool), z, atol=1e-12)
    y = torch.randn(2, 3, 4, 8, 8, generator=g, dtype=torch.float64)  # ⟨Pz, y⟩ = ⟨z, Pᵀy⟩
    assert torch.allclose((subspace_lift(z, (2, 4, 4)) * y).sum(), (z * subspace_project(y, (2, 4, 4))).sum())
    assert pooled_shape((3, 4, 8, 8), (2, 4, 4)) == (3, 2, 2, 2)
    with pytest.raises(ValueError, match=r"\(2, 3, 1\) does not divide.*\(4, 8, 8\)"):
        pooled_shape((3, 4, 8, 8), (2, 3, 1))


def test_coarse_noise_step_corrects_the_score_on_the_subspace_only():
    """μ = x + [v + σ²/(2t)·Π(x + (1 − t)v)]·Δt: on a block-constant (x + (1−t)v) it equals the isotropic step; on a
    zero-block-mean one it equals the ODE drift; the isotropic pool reproduces the default bit for bit."""
    t, tn, sig = 0.6, 0.5, torch.tensor(0.4, dtype=torch.float64)
    g = torch.Generator().manual_seed(2)
    v = torch.randn(1, 1, 1, 2, 2, generator=g, dtype=torch.float64)
    const = torch.full((1, 1, 1, 2, 2), 0.8, dtype=torch.float64) - (1 - t) * v  # x + (1−t)v = 0.8 everywhere
    assert torch.allclose(sde_step(const, v, t, tn, sig, (1, 2, 2)).mean, sde_step(const, v, t, tn, sig).mean)
    zero = torch.tensor([1.0, -1.0, 2.0, -2.0], dtype=torch.float64).view(1, 1, 1, 2, 2) - (1 - t) * v
    assert torch.allclose(sde_step(zero, v, t, tn, sig, (1, 2, 2)).mean, zero + v * (tn - t))
    x = torch.randn(2, 3, 2, 4, 4, generator=g)
    w = torch.randn(2, 3, 2, 4, 4, generator=g)
    assert torch.equal(sde_step(x, w, t, tn, 0.3, (1, 1, 1)).mean, sde_step(x, w, t, tn, 0.3).mean)


def test_coarse_noise_preserves_marginals_and_adds_no_cross_block_correlation():
    """Property 3 with pool (1, 1, 2): x0 ~ N(0.7, 0.5²) i.i.d. in 2 elements of one block; 100 steps, 1e5 samples ⇒
    each element's mean and std within 0.02 of (0.7, 0.5) and their correlation below 0.02 in magnitude."""
    m, s0, n, steps = 0.7, 0.5, 100_000, 100
    g = torch.Generator().manual_seed(5)
    grid = time_grid(steps)
    x = torch.randn(n, 1, 1, 1, 2, generator=g, dtype=torch.float64)
    for s in range(steps):
        t, tn = float(grid[s]), float(grid[s + 1])
        vt = (1 - t) ** 2 * s0**2 + t**2
        v = -m + (t - (1 - t) * s0**2) / vt * (x - (1 - t) * m)
        sig = noise_level(t, tn, "dance", eta=0.7) if s < steps - 1 else torch.tensor(0.0)
        step = sde_step(x, v, t, tn, sig, (1, 1, 2))
        z = torch.randn(n, 1, 1, 1, 1, generator=g, dtype=torch.float64)
        x = step.mean + step.std * subspace_lift(z, (1, 1, 2))
    a, b = x.flatten(1).T
    for e in (a, b):
        assert abs(float(e.mean()) - m) < 0.02 and abs(float(e.std()) - s0) < 0.02
    assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.02


def test_coarse_noise_logprob_is_the_normal_density_of_the_projection():
    """ℓ on the subspace = Normal(Pᵀμ, std).log_prob(Pᵀx), one element per block; the isotropic pool gives ℓ_e."""
    g = torch.Generator().manual_seed(6)
    mean = torch.randn(2, 3, 2, 4, 4, generator=g)
    std = torch.tensor(0.2)
    z = torch.randn(2, 3, 1, 2, 2, generator=g)
    x = mean + std * subspace_lift(z, (2, 2, 2))
    ell = subspace_logprob(x, mean, std, (2, 2, 2))
    assert ell.shape == (2, 3, 1, 2, 2)
    assert torch.allclose(ell, torch.distributions.Normal(0.0, std).log_prob(std * z), atol=1e-5)
    assert torch.equal(subspace_logprob(x, mean, std, (1, 1, 1)), gaussian_logprob(x, mean, std))
