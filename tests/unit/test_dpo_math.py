"""ALGORITHMS.md §8.1 and §8.3 on given per-sample errors: §8 property tests 1, 4 and 6, plus the decoupled
coefficients checked against autograd on the loss (the model-level gradient tests 2, 3, 5 live elsewhere)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.dpo import (batch_weights, beta_at_t, decoupled_coefficients, dpo_loss, dynamic_beta,
                              pair_weights)


def _errors(n: int, seed: int, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    """[e_θ^w, e_ref^w, e_θ^l, e_ref^l] ~ U(0, 0.01) and t ~ U(0, 1), each [n]."""
    errors = [torch.rand(n, generator=g, dtype=dtype) * 0.01 for _ in range(4)]
    return errors + [torch.rand(n, generator=g, dtype=dtype)]


@pytest.mark.parametrize("beta_t", ["constant", "eps"])
def test_property1_policy_equals_reference(beta_t):
    """§8 property 1: e_θ = e_ref ⇒ Δ = 0, z = 0, ℓ = −logsigmoid(0) = log 2, implicit accuracy mean 1[0 > 0] = 0."""
    e_w, _, e_l, _, t = _errors(6, 0)
    out = dpo_loss(e_w, e_l, t, e_w.clone(), e_l.clone(), beta=5000.0, beta_t=beta_t)
    assert torch.equal(out.z, torch.zeros(6, dtype=torch.float64))
    assert float(out.loss) == pytest.approx(math.log(2), abs=1e-12)
    assert float(out.accuracy) == 0.0 and float(out.margin) == 0.0


def test_hand_example():
    """β = 2, constant: e_θ^w = 0.1, e_ref^w = 0.3, e_θ^l = 0.5, e_ref^l = 0.2 ⇒ Δ = (0.1 − 0.3) − (0.5 − 0.2) = −0.5,
    z = −½·2·(−0.5) = 0.5, ℓ = log(1 + e^{−0.5}) = 0.474077; accuracy 1, margin 0.5, gaps −0.2 and 0.3."""
    c = lambda x: torch.tensor([x], dtype=torch.float64)  # noqa: E731
    out = dpo_loss(c(0.1), c(0.5), c(0.4), c(0.3), c(0.2), beta=2.0)
    assert float(out.delta) == pytest.approx(-0.5) and float(out.z) == pytest.approx(0.5)
    assert float(out.loss) == pytest.approx(0.4740769841801067)
    assert (float(out.accuracy), float(out.margin)) == pytest.approx((1.0, 0.5))
    assert (float(out.winner_gap), float(out.loser_gap)) == pytest.approx((-0.2, 0.3))


def test_eps_beta_t_and_weights():
    """``eps``: β_t = β(1 − t)²; t = [0, 0.5, 1], β = 4 ⇒ β_t = [4, 1, 0]. With Δ ≡ −1 (z = β_t/2 = [2, 0.5, 0]) and
    ω = [2, 1, 0]: L = (2·softplus(−2) + 1·softplus(−0.5) + 0)/3 = (2·0.126928 + 0.474077)/3 = 0.242644."""
    t = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    torch.testing.assert_close(beta_at_t(4.0, t, "eps"), torch.tensor([4.0, 1.0, 0.0], dtype=torch.float64))
    zero, one = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    out = dpo_loss(zero, one, t, zero, zero, beta=4.0, beta_t="eps", weights=torch.tensor([2.0, 1.0, 0.0]))
    torch.testing.assert_close(out.z, torch.tensor([2.0, 0.5, 0.0], dtype=torch.float64))
    assert float(out.loss) == pytest.approx((2 * math.log1p(math.exp(-2)) + math.log1p(math.exp(-0.5))) / 3)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 16), st.integers(0, 10_000), st.floats(1.0, 1e4), st.sampled_from(["constant", "eps"]))
def test_property4_reference_free_is_main_loss_with_zero_reference_and_double_beta(n, seed, beta, beta_t):
    """§8 property 4: ℓ_free(β) = ℓ_main(e_ref ≡ 0, 2β): z = −½·2β·(e^w − e^l) = β(e^l − e^w)."""
    e_w, _, e_l, _, t = _errors(n, seed)
    free = dpo_loss(e_w, e_l, t, beta=beta, beta_t=beta_t, form="reference_free")
    zero = torch.zeros(n, dtype=torch.float64)
    main = dpo_loss(e_w, e_l, t, zero, zero, beta=2 * beta, beta_t=beta_t)
    torch.testing.assert_close(free.z, main.z, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(free.loss, main.loss, rtol=1e-12, atol=1e-12)


@settings(deadline=None, max_examples=40)
@given(st.integers(1, 16), st.integers(0, 10_000), st.sampled_from(["standard", "reference_free"]))
def test_property4_swapping_winner_and_loser_negates_z(n, seed, form):
    """§8 property 4: exchanging (e^w, e_ref^w) ↔ (e^l, e_ref^l) negates Δ and therefore z."""
    e_w, r_w, e_l, r_l, t = _errors(n, seed)
    refs = (r_w, r_l) if form == "standard" else (None, None)
    swapped_refs = (r_l, r_w) if form == "standard" else (None, None)
    a = dpo_loss(e_w, e_l, t, *refs, beta=3000.0, form=form)
    b = dpo_loss(e_l, e_w, t, *swapped_refs, beta=3000.0, form=form)
    torch.testing.assert_close(b.z, -a.z, rtol=0, atol=1e-12)
    assert bool((a.z != 0).all())


@pytest.mark.parametrize("form", ["standard", "reference_free"])
@pytest.mark.parametrize("beta_t", ["constant", "eps"])
def test_decoupled_coefficients_match_autograd(form, beta_t):
    """§8.3: ∂L/∂e_θ^w = winner = ½η (standard) or η (reference-free), ∂L/∂e_θ^l = −winner, with
    η_k = β_{t_k}·sigmoid(−z_k)·ω_k / N — compared with autograd of the loss on the e values (fp64, rtol 1e-10)."""
    e_w, r_w, e_l, r_l, t = _errors(7, 3)
    e_w.requires_grad_(True)
    e_l.requires_grad_(True)
    w = torch.linspace(0.5, 2.0, 7, dtype=torch.float64)
    refs = (r_w, r_l) if form == "standard" else (None, None)
    out = dpo_loss(e_w, e_l, t, *refs, beta=800.0, beta_t=beta_t, weights=w, form=form)
    out.loss.backward()
    coef = decoupled_coefficients(out.z, t, beta=800.0, beta_t=beta_t, weights=w, form=form)
    assert not coef.eta.requires_grad
    torch.testing.assert_close(coef.winner, e_w.grad, rtol=1e-10, atol=0)
    torch.testing.assert_close(coef.loser, e_l.grad, rtol=1e-10, atol=0)
    expected_eta = beta_at_t(800.0, t, beta_t) * torch.sigmoid(-out.z.detach()) * w / 7
    torch.testing.assert_close(coef.eta, expected_eta)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_property6_dynamic_beta_endpoints_and_monotone(schedule):
    """§8 property 6: β(0) = β_0, β(N_anneal) = κ·β_0 (and stays there), non-increasing. Midpoint p = ½:
    linear 1 − 0.2·0.5 = 0.9; cosine 0.8 + 0.2·(1 + cos(π/2))/2 = 0.9 (both ×β_0 = 4500)."""
    b = [dynamic_beta(n, 5000.0, 100, kappa=0.8, schedule=schedule) for n in range(0, 151)]
    assert b[0] == pytest.approx(5000.0) and b[100] == pytest.approx(4000.0) and b[150] == pytest.approx(4000.0)
    assert b[50] == pytest.approx(4500.0)
    assert all(x >= y - 1e-9 for x, y in zip(b, b[1:]))
    assert b[10] > b[90]  # strictly decreasing somewhere, not a constant


def test_dynamic_beta_constant_schedule():
    """``constant``: f = 1 ⇒ β(n) = β_0 for every n."""
    assert {dynamic_beta(n, 7.0, 10, schedule="constant") for n in range(20)} == {7.0}


def test_pair_weights_hand_example():
    """gaps [0.1, 0.4, 0.2, 0.8, 0.6, 0.3, 1.0, 0.5], q = 0.25: ⌊0.25·8⌋ = 2 dropped (0.1, 0.2 at positions 0, 2).
    Kept mean = 3.6/6 = 0.6 ⇒ ω = gap/0.6 = [2/3, 4/3, 1, 1/2, 5/3, 5/6] (no clipping, mean already 1)."""
    pw = pair_weights(torch.tensor([0.1, 0.4, 0.2, 0.8, 0.6, 0.3, 1.0, 0.5], dtype=torch.float64))
    assert pw.n_dropped == 2 and pw.index.tolist() == [1, 3, 4, 5, 6, 7]
    torch.testing.assert_close(pw.omega, torch.tensor([2 / 3, 4 / 3, 1, 1 / 2, 5 / 3, 5 / 6], dtype=torch.float64))


def test_pair_weights_clip_then_renormalise():
    """q = 0, gaps [0, 1×8, 100]: mean = 108/10 = 10.8; ratios 0 → 0.2, 1/10.8 = 0.093 → 0.2, 100/10.8 = 9.26 → 5;
    sum = 9·0.2 + 5 = 6.8, mean 0.68 ⇒ ω = [0.2/0.68 ×9, 5/0.68] = [0.294118…, 7.352941]."""
    pw = pair_weights(torch.tensor([0.0] + [1.0] * 8 + [100.0], dtype=torch.float64), drop_q=0.0)
    expected = torch.tensor([0.2 / 0.68] * 9 + [5 / 0.68], dtype=torch.float64)
    torch.testing.assert_close(pw.omega, expected)


@settings(deadline=None, max_examples=80)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=40), st.floats(0.0, 0.9))
def test_property6_pair_weights_drop_and_mean(gap_ints, q):
    """§8 property 6: exactly ⌊q·n⌋ pairs dropped, each dropped gap ≤ every kept gap, ω mean 1 over the kept pool
    (gaps drawn from a small set so ties are frequent)."""
    gaps = torch.tensor(gap_ints, dtype=torch.float64) / 4
    pw = pair_weights(gaps, drop_q=q)
    n = len(gap_ints)
    assert pw.n_dropped == math.floor(q * n) and pw.index.numel() == n - math.floor(q * n)
    dropped = sorted(set(range(n)) - set(pw.index.tolist()))
    if dropped and pw.index.numel():
        assert float(gaps[dropped].max()) <= float(gaps[pw.index].min())
    if pw.omega.numel():
        assert abs(float(pw.omega.mean()) - 1.0) < 1e-12


def test_pair_weights_reject_negative_gap():
    """gap = score(w) − score(l) must be ≥ 0; a negative gap means the pair is mislabelled."""
    with pytest.raises(ValueError, match="gaps"):
        pair_weights(torch.tensor([0.5, -0.1]))


def test_fp32_compute_dtype():
    """bf16 inputs are computed in fp32 (ALGORITHMS.md §0): z = −½·β·Δ with Δ = 0.5 − 0.25 = 0.25, β = 8 ⇒ z = −1."""
    h = lambda x: torch.tensor([x], dtype=torch.bfloat16)  # noqa: E731
    out = dpo_loss(h(0.5), h(0.25), h(0.0), h(0.0), h(0.0), beta=8.0)
    assert out.z.dtype == torch.float32 and float(out.z) == pytest.approx(-1.0)


def test_batch_weights_have_mean_one_over_the_drawn_batch():
    """ω = (0.5, 1, 1.5, 1) drawn as (0.5, 1.5, 1.5): mean 7/6 → (3/7, 9/7, 9/7); a constant batch gives ones."""
    omega = torch.tensor([0.5, 1.0, 1.5, 1.0])
    assert batch_weights(omega[[0, 2, 2]]).tolist() == pytest.approx([3 / 7, 9 / 7, 9 / 7])
    assert batch_weights(torch.full((3,), 2.5)).tolist() == [1.0, 1.0, 1.0]


def test_eps_beta_t_is_epsilon_space_diffusion_dpo():
    """§8 property 2: with β_t = β(1 − t)² on velocity errors, the loss equals Wallace et al.'s ε-space Diffusion-DPO
    (constant β) on ε̂ = x_t + (1 − t)·v, for the same t and ε per pair (ε̂ − ε = (1 − t)(v − (ε − x_0)))."""
    g = torch.Generator().manual_seed(0)
    n, shape = 6, (3, 2, 4, 4)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    eps = torch.randn(n, *shape, generator=g, dtype=torch.float64)
    tt = t.view(-1, 1, 1, 1, 1)

    def errors(x0, v):
        target, xt = eps - x0, (1 - tt) * x0 + tt * eps
        eps_hat = xt + (1 - tt) * v
        return (v - target).pow(2).flatten(1).mean(1), (eps_hat - eps).pow(2).flatten(1).mean(1)

    x0_w, x0_l = (torch.randn(n, *shape, generator=g, dtype=torch.float64) for _ in range(2))
    (v_w, v_l, r_w, r_l) = (torch.randn(n, *shape, generator=g, dtype=torch.float64) for _ in range(4))
    (ew, ew_eps), (el, el_eps) = errors(x0_w, v_w), errors(x0_l, v_l)
    (rw, rw_eps), (rl, rl_eps) = errors(x0_w, r_w), errors(x0_l, r_l)
    velocity = dpo_loss(ew, el, t, rw, rl, beta=3.0, beta_t="eps")
    epsilon = dpo_loss(ew_eps, el_eps, t, rw_eps, rl_eps, beta=3.0, beta_t="constant")
    assert torch.allclose(velocity.z, epsilon.z, rtol=1e-6) and torch.allclose(velocity.loss, epsilon.loss, rtol=1e-6)
