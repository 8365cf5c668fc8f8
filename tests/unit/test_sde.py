"""ALGORITHMS.md §1 property tests for the SDE step and its log-density."""

import math

import torch

from vidtune.math.flow_matching import time_grid
from vidtune.math.sde import gaussian_logprob, noise_level, reduce_logprob, sde_step


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
