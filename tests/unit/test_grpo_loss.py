"""Tests of ALGORITHMS.md §2.2–2.4: ratio, clipped surrogate, KL to the reference, loss and logged statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.advantages import group_advantages
from vidtune.math.grpo_loss import (
    clipped_surrogate,
    grpo_loss,
    grpo_objective,
    kl_to_reference,
    likelihood_ratio,
    ratio_stats,
)
from vidtune.math.sde import sde_step, subspace_project

F64 = torch.float64


def test_ratio_hand_values_and_clamp_counter():
    """L_θ − L_old = [0, ln 2, 25, −25] → ρ = [1, 2, e^20, e^−20]; the ±20 clamp acts twice."""
    new = torch.tensor([[0.0, math.log(2.0), 25.0, -25.0]], dtype=F64)
    lr = likelihood_ratio(new, torch.zeros_like(new))
    torch.testing.assert_close(lr.ratio, torch.tensor([[1.0, 2.0, math.exp(20), math.exp(-20)]], dtype=F64))
    assert lr.clamped.item() == 2
    assert likelihood_ratio(new[:, :2], torch.zeros(1, 2, dtype=F64)).clamped.item() == 0


def test_ratio_is_exactly_one_at_theta_old_and_computed_in_fp32():
    """bf16 log-probs are upcast before the subtraction; identical inputs give ρ ≡ 1 exactly."""
    lp = torch.randn(3, 4).bfloat16()
    lr = likelihood_ratio(lp, lp.clone())
    assert lr.ratio.dtype == torch.float32 and torch.equal(lr.ratio, torch.ones(3, 4))
    assert likelihood_ratio(lp.double(), lp.double()).ratio.dtype == F64


def test_surrogate_hand_values():
    """ε = 0.2. A = 2: ρ = 1.5 → max(−3, −2.4) = −2.4; ρ = 0.5 → max(−1, −1.6) = −1.
    A = −1: ρ = 1.5 → max(1.5, 1.2) = 1.5; ρ = 0.5 → max(0.5, 0.8) = 0.8."""
    rho = torch.tensor([[1.5, 0.5], [1.5, 0.5]], dtype=F64)
    loss = clipped_surrogate(torch.tensor([2.0, -1.0], dtype=F64), rho, clip_range=0.2)
    torch.testing.assert_close(loss, torch.tensor([[-2.4, -1.0], [1.5, 0.8]], dtype=F64))


def test_surrogate_dense_broadcast():
    """Dense mode [B, S, F, H, W]: a scalar advantage [B] and a ViPO map [B, F, H, W] broadcast over S; each
    element equals the scalar-mode surrogate of that element's ratio."""
    g = torch.Generator().manual_seed(0)
    rho = 1 + 0.3 * torch.randn(2, 3, 2, 2, 2, generator=g, dtype=F64)
    adv = torch.tensor([1.5, -0.5], dtype=F64)
    dense = clipped_surrogate(adv, rho, clip_range=0.1)
    flat = clipped_surrogate(adv, rho.reshape(2, -1), clip_range=0.1)
    torch.testing.assert_close(dense.reshape(2, -1), flat, rtol=0, atol=0)
    amap = torch.randn(2, 2, 2, 2, generator=g, dtype=F64)
    dense_map = clipped_surrogate(amap, rho, clip_range=0.1)
    for s in range(3):
        ref = torch.maximum(-amap * rho[:, s], -amap * rho[:, s].clamp(0.9, 1.1))
        torch.testing.assert_close(dense_map[:, s], ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="do not broadcast"):
        clipped_surrogate(torch.zeros(2, 5), rho)


def _tiny_policy(b: int, s: int, d: int, seed: int = 0):
    """A differentiable 'policy': L_θ[b, s] = −mean_d (Y − X·W)² with parameters W [d] (fp64)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, s, d, generator=g, dtype=F64)
    y = torch.randn(b, s, d, generator=g, dtype=F64)
    w = torch.randn(d, generator=g, dtype=F64).requires_grad_(True)
    return w, (lambda: -((y - x * w) ** 2).mean(-1)), g


def test_at_theta_old_loss_is_minus_mean_advantage_and_reinforce_gradient():
    """Property 4: at θ = θ_old ρ = 1, L = −(1/B)Σ A_b = 0 (group-centred A, no floor/clip) and
    ∇L = ∇[−mean_b A_b · mean_s L_θ,b,s]."""
    w, logp, g = _tiny_policy(8, 3, 5)
    adv = group_advantages(torch.randn(8, generator=g, dtype=F64), 4)
    lp = logp()
    out = grpo_objective(lp, lp.detach(), adv.advantages, adv.valid)
    assert out.loss.item() == pytest.approx(-adv.advantages.mean().item(), abs=1e-15)
    assert abs(out.loss.item()) < 1e-12
    (grad,) = torch.autograd.grad(out.loss, w)
    (ref,) = torch.autograd.grad(-(adv.advantages * logp().mean(1)).mean(), w)
    torch.testing.assert_close(grad, ref, rtol=1e-12, atol=1e-14)
    assert out.stats.ratio_min.item() == out.stats.ratio_max.item() == 1.0
    assert out.stats.clip_fraction.item() == 0.0 and out.stats.approx_kl.item() == 0.0


@pytest.mark.parametrize(
    ("a", "rho", "zero_grad"),
    [(2.0, 1.5, True), (2.0, 0.5, False), (2.0, 1.05, False), (-1.0, 0.5, True), (-1.0, 1.5, False),
     (-1.0, 0.95, False)],
)
def test_clipping_gradient(a, rho, zero_grad):
    """Property 5 (ε = 0.1): ∂ℓ/∂ρ = 0 for A > 0, ρ > 1.1 and for A < 0, ρ < 0.9; otherwise −A."""
    r = torch.tensor([[rho]], dtype=F64, requires_grad=True)
    (grad,) = torch.autograd.grad(clipped_surrogate(torch.tensor([a], dtype=F64), r, clip_range=0.1).sum(), r)
    assert grad.item() == (0.0 if zero_grad else -a)


def _mu(x, v, t, dt, sigma):
    """§1 Euler–Maruyama mean, written independently of the library: x + [v + σ²/(2t)(x + (1−t)v)]·Δt."""
    return x + (v + sigma**2 / (2 * t) * (x + (1 - t) * v)) * dt


def test_kl_hand_value_and_no_dt_relation():
    """v_θ − v_ref = 1, σ = 0.5, t = 0.5, Δt = −0.25: gain = 1 + 0.25·0.5/1 = 1.125;
    k_exact = 0.25·1.125²·1/(2·0.25) = 0.6328125; k_no_dt = |Δt|·k_exact = 0.158203125."""
    v = torch.zeros(2, 1, 2, 2, 2, dtype=F64)
    k = kl_to_reference(v + 1, v, 0.5, 0.5, -0.25)
    torch.testing.assert_close(k, torch.full((2,), 0.6328125, dtype=F64))
    torch.testing.assert_close(kl_to_reference(v + 1, v, 0.5, 0.5, -0.25, form="no_dt"), 0.25 * k)


def test_kl_zero_at_reference_and_no_dt_scaling_per_sample():
    """Property 6: k = 0 at v_θ = v_ref; k_no_dt = |Δt|·k_exact with per-sample σ, t, Δt."""
    g = torch.Generator().manual_seed(1)
    v = torch.randn(3, 2, 2, 3, 3, generator=g, dtype=F64)
    sig, t, dt = (torch.tensor(z, dtype=F64) for z in ([0.3, 0.7, 1.0], [0.9, 0.5, 0.2], [-0.1, -0.05, -0.2]))
    assert torch.equal(kl_to_reference(v, v.clone(), sig, t, dt), torch.zeros(3, dtype=F64))
    v2 = v + 0.1 * torch.randn(v.shape, generator=g, dtype=F64)
    torch.testing.assert_close(kl_to_reference(v2, v, sig, t, dt, form="no_dt"),
                               dt.abs() * kl_to_reference(v2, v, sig, t, dt), rtol=1e-14, atol=0)


def test_kl_exact_matches_monte_carlo():
    """Property 6: E_{x~π_θ}[L_θ(x) − L_ref(x)] (scalar-mode log-densities, library Normal log-pdf, μ from §1)
    matches k_exact within 2 %. 20 000 draws × D = 64 elements: MC relative std ≈ 0.4 %."""
    g = torch.Generator().manual_seed(2)
    b, shape, sigma, t, t_next = 2, (2, 2, 4, 4), 0.7, 0.6, 0.5
    dt = t_next - t
    x = torch.randn(b, *shape, generator=g, dtype=F64)
    v_ref = torch.randn(b, *shape, generator=g, dtype=F64)
    v_th = v_ref + torch.randn(b, *shape, generator=g, dtype=F64)
    mu_th, mu_ref, std = _mu(x, v_th, t, dt, sigma), _mu(x, v_ref, t, dt, sigma), sigma * math.sqrt(abs(dt))
    draws = mu_th + std * torch.randn(20_000, b, *shape, generator=g, dtype=F64)
    log_ratio = (torch.distributions.Normal(mu_th, std).log_prob(draws)
                 - torch.distributions.Normal(mu_ref, std).log_prob(draws)).flatten(2).mean(-1)
    mc = log_ratio.mean(0)
    k = kl_to_reference(v_th, v_ref, sigma, t, dt)
    assert torch.all((mc / k - 1).abs() < 0.02), (mc, k)
    exact = ((mu_th - mu_ref) ** 2 / (2 * std**2)).flatten(1).mean(1)
    torch.testing.assert_close(k, exact, rtol=1e-12, atol=0)


def test_loss_hand_value_with_step_mask_valid_and_kl():
    """ℓ = [[1, 2, 3], [4, 5, 6], [NaN, NaN, NaN]], 𝒮_0 = {0, 1}, 𝒮_1 = {0, 1, 2}, sample 2 invalid (B_valid = 2):
    L = ((1+2)/2 + (4+5+6)/3)/2 = (1.5 + 5)/2 = 3.25.
    With β = 0.5, k = [[2, 2, 100], [0, 0, 0], ·]: sample 0 gains 0.5·(2+2)/2 = 1 → L = (2.5 + 5)/2 = 3.75."""
    nan = math.nan
    per = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [nan, nan, nan]], dtype=F64)
    valid = torch.tensor([True, True, False])
    mask = torch.tensor([[True, True, False], [True, True, True], [True, True, True]])
    assert grpo_loss(per, valid, step_mask=mask).item() == pytest.approx(3.25, rel=1e-15)
    kl = torch.tensor([[2.0, 2.0, 100.0], [0.0, 0.0, 0.0], [nan, nan, nan]], dtype=F64)
    assert grpo_loss(per, valid, step_mask=mask, kl=kl, beta_kl=0.5).item() == pytest.approx(3.75, rel=1e-15)
    assert grpo_loss(per, torch.zeros(3, dtype=torch.bool)).item() == 0.0


def test_dense_loss_position_mean_and_mask():
    """Dense ℓ [1, 1, 1, 2, 2] = positions [1, 2, 3, 6] → mean_ν = 3; masking out the first latent frame
    (I2V, positions 1 and 2) → mean of [3, 6] = 4.5."""
    per = torch.tensor([1.0, 2.0, 3.0, 6.0]).reshape(1, 1, 2, 1, 2)
    valid = torch.tensor([True])
    assert grpo_loss(per, valid).item() == 3.0
    keep = torch.tensor([0.0, 0.0, 1.0, 1.0]).reshape(1, 2, 1, 2)
    assert grpo_loss(per, valid, position_mask=keep).item() == 4.5


@pytest.mark.parametrize("dense", [False, True])
def test_per_transition_backward_equals_one_backward(dense):
    """Property 8 (fp64, 1e-6 relative): Σ over (micro-batch, transition) of backward(L_chunk) with the stated
    weights 1/(B_valid·|𝒮_b|) equals backward(L); 𝒮_b differs per sample, one sample is invalid, ρ ≠ 1 with
    clipping active, and the KL term (β = 0.3) is on."""
    b, s, d = 6, 4, 8
    w, logp_fn, g = _tiny_policy(b, s, d, seed=3)
    expand = (lambda z: z.reshape(b, s, 2, 2, 2)) if dense else (lambda z: z.mean(-1))

    def logp():
        x = -(logp_fn()[..., None] + 0.1 * torch.arange(d, dtype=F64) * w)  # position-dependent
        return expand(x)

    old = logp().detach() + 0.05 * torch.randn(expand(torch.zeros(b, s, d, dtype=F64)).shape, generator=g,
                                                dtype=F64)
    rewards = torch.randn(b, generator=g, dtype=F64)
    rewards[4] = math.nan
    adv = group_advantages(rewards, 3)
    mask = torch.rand(b, s, generator=g) < 0.7
    mask[:, 0] = True
    w_ref = torch.randn(d, generator=g, dtype=F64)

    def kl():
        return ((w - w_ref) ** 2).sum() * torch.linspace(0.5, 1.5, s, dtype=F64).expand(b, s)

    kw = dict(clip_range=0.03, beta_kl=0.3)
    full = grpo_objective(logp(), old, adv.advantages, adv.valid, step_mask=mask, kl=kl(), **kw)
    assert full.stats.clip_fraction.item() > 0.2
    (g_full,) = torch.autograd.grad(full.loss, w)
    n_steps, n_valid = mask.sum(1), adv.valid.sum()
    acc, total = torch.zeros_like(w), 0.0
    for mb in (slice(0, 3), slice(3, 6)):
        for j in range(s):
            out = grpo_objective(logp()[mb, j:j + 1], old[mb, j:j + 1], adv.advantages[mb], adv.valid[mb],
                                 step_mask=mask[mb, j:j + 1], kl=kl()[mb, j:j + 1], n_steps=n_steps[mb],
                                 n_valid=n_valid, **kw)
            (gc,) = torch.autograd.grad(out.loss, w)
            acc += gc
            total += out.loss.item()
    torch.testing.assert_close(acc, g_full, rtol=1e-6, atol=0)
    assert total == pytest.approx(full.loss.item(), rel=1e-6)


def test_ratio_stats_hand_values():
    """ρ = [1, 1.5, 0.5, 1.00005], ε = 1e-4: clip fraction = 2/4; approx KL = mean((ρ−1) − log ρ)
    = (0 + 0.094535 + 0.193147 + 1.25e-9)/4 = 0.0719205; min 0.5, mean 1.0000125, max 1.5."""
    rho = torch.tensor([[1.0, 1.5, 0.5, 1.00005]], dtype=F64)
    st_ = ratio_stats(likelihood_ratio(rho.log(), torch.zeros_like(rho)), clip_range=1e-4)
    assert st_.clip_fraction.item() == 0.5
    assert st_.approx_kl.item() == pytest.approx(0.07192051842543482, rel=1e-9)
    assert (st_.ratio_min.item(), st_.ratio_max.item()) == pytest.approx((0.5, 1.5))
    assert st_.ratio_mean.item() == pytest.approx(1.0000125, rel=1e-12)


def test_objective_stats_ignore_invalid_samples_and_padding():
    """Ratios of the invalid sample (ρ = e^5) and of padded transitions (ρ = e^−3) never reach the statistics."""
    new = torch.tensor([[0.0, -3.0], [5.0, 5.0]], dtype=F64)
    out = grpo_objective(new, torch.zeros_like(new), torch.tensor([1.0, 0.0], dtype=F64),
                         torch.tensor([True, False]), step_mask=torch.tensor([[True, False], [True, True]]),
                         kl=torch.tensor([[0.2, 9.0], [9.0, 9.0]], dtype=F64))
    assert out.stats.ratio_max.item() == 1.0 and out.stats.ratio_min.item() == 1.0
    assert out.kl_mean.item() == pytest.approx(0.2)
    assert out.loss.item() == -1.0


@settings(max_examples=50, deadline=None)
@given(st.floats(-3, 3), st.floats(0.5, 1.5), st.floats(1e-3, 0.5), st.floats(0.01, 10.0))
def test_surrogate_is_positively_homogeneous(a, rho, eps, w):
    """§3 property 4 relies on this: ℓ(w·A) = w·ℓ(A) for w > 0, in and outside the clip region."""
    r = torch.tensor([[rho]], dtype=F64)
    lhs = clipped_surrogate(torch.tensor([w * a], dtype=F64), r, clip_range=eps)
    rhs = w * clipped_surrogate(torch.tensor([a], dtype=F64), r, clip_range=eps)
    torch.testing.assert_close(lhs, rhs, rtol=1e-14, atol=1e-300)


def test_kl_on_the_coarse_noise_subspace_is_the_projected_means_kl():
    """§1 Coarse noise + §2.3: with projected velocities, k_exact = mean over the d subspace elements of
    (Pᵀμ_θ − Pᵀμ_ref)²/(2 std²), the exact KL of the two subspace Gaussians built by sde_step."""
    pool, t, tn, sig = (2, 2, 2), 0.7, 0.6, 0.5
    g = torch.Generator().manual_seed(11)
    x, v1, v0 = (torch.randn(2, 3, 2, 4, 4, generator=g, dtype=torch.float64) for _ in range(3))
    a, b = sde_step(x, v1, t, tn, sig, pool), sde_step(x, v0, t, tn, sig, pool)
    want = ((subspace_project(a.mean, pool) - subspace_project(b.mean, pool)) ** 2 / (2 * a.std**2)).flatten(1).mean(1)
    got = kl_to_reference(subspace_project(v1, pool), subspace_project(v0, pool), sig, t, tn - t)
    assert torch.allclose(got, want, rtol=1e-9)
