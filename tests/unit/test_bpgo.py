"""Tests of ALGORITHMS.md §3 (BPGO): RAS, CRT, auto-k, the `ema` prior and the two-term loss."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.advantages import group_advantages
from vidtune.math.bpgo import bpgo_advantages, bpgo_objective, crt_transform, ras_paper, ras_posterior
from vidtune.math.bpgo_prior import EmaPrior, SharpnessState, ema_prior_update, ema_prior_values, sharpness
from vidtune.math.grpo_loss import clipped_surrogate, grpo_loss, grpo_objective

F64 = torch.float64
FAST = settings(max_examples=50, deadline=None)


def _batch(p: int = 3, g: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    rewards = torch.rand(p * g, generator=gen, dtype=F64)
    prior = 0.5 + 0.1 * torch.randn(p, generator=gen, dtype=F64)
    return rewards, prior, gen


def test_ras_paper_hand_value():
    """α = 0.5, k = 2, Δ = 0.5: w = 1 + 0.5·(2·sigmoid(1) − 1) = 1 + 0.5·0.4621172 = 1.2310586."""
    w = ras_paper(torch.tensor([0.5, -0.5], dtype=F64), alpha=0.5, k=2.0)
    torch.testing.assert_close(w, torch.tensor([1.2310585786300048, 2 - 1.2310585786300048], dtype=F64))


def test_ras_posterior_hand_value():
    """R̄ = 0.6, R⁰ = 0.5, std_u = 0.2, n = 4, σ_0² = 1: s² = 0.04 + 1e-8, n/s² = 99.999975,
    v_post = 1/100.999975 = 0.00990099; (m_post − R⁰)/√v_post = √v_post·(n/s²)·Δ = 0.9950371;
    q = Φ(0.9950371) = 0.8401409; w = 0.5 + q = 1.3401409 (α_post = 1)."""
    t = lambda z: torch.tensor([z], dtype=F64)  # noqa: E731
    w = ras_posterior(t(0.6), t(0.2), t(0.5), 4)
    assert w.item() == pytest.approx(1.340140881048513, rel=1e-9)
    w_half = ras_posterior(t(0.6), t(0.2), t(0.5), 4, alpha_post=0.5)
    assert w_half.item() == pytest.approx(1 + 0.5 * 0.340140881048513, rel=1e-9)


@FAST
@given(st.floats(-5, 5), st.floats(0, 1), st.floats(0.01, 100), st.floats(0.0, 2.0), st.floats(0.1, 4.0))
def test_ras_is_one_when_group_mean_equals_prior(r0, alpha, k, std, sigma0_sq):
    """§3 property 1: R̄_p = R⁰_p ⇒ w_p = 1 exactly (paper, any α, k) and to 1e-12 (posterior)."""
    assert ras_paper(torch.zeros(1, dtype=F64), alpha=alpha, k=k).item() == 1.0
    t = torch.tensor([r0], dtype=F64)
    w = ras_posterior(t, torch.tensor([std], dtype=F64), t.clone(), 8, sigma0_sq=sigma0_sq)
    assert abs(w.item() - 1.0) <= 1e-12


def test_ras_is_one_through_bpgo_advantages_when_prior_equals_group_mean():
    """§3 property 1 end to end: with R⁰ := R̄ (raw rewards) every w_p = 1 for both RAS variants."""
    rewards, _, _ = _batch()
    prior = rewards.view(3, 4).mean(1)
    for ras in ("paper", "posterior"):
        out = bpgo_advantages(rewards, prior, 4, ras=ras, k_mode="fixed", k_fixed=7.0)
        torch.testing.assert_close(out.weights, torch.ones(3, dtype=F64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("how", ["crt_off", "varsigma_zero"])
def test_alpha_zero_without_crt_is_plain_grpo(how):
    """§3 property 2: α = 0 with crt off (or ς = 0) gives exactly the plain GRPO loss and gradients
    (ρ ≠ 1 and clipping active so that the comparison is not trivial)."""
    rewards, prior, gen = _batch(p=2, g=4, seed=1)
    theta = torch.randn(8, 3, generator=gen, dtype=F64, requires_grad=True)
    old = theta.detach() + 0.05 * torch.randn(8, 3, generator=gen, dtype=F64)
    crt, vs = ("off", 1.0) if how == "crt_off" else ("paper", 0.0)
    adv = bpgo_advantages(rewards, prior, 4, alpha=0.0, crt=crt)
    bp = bpgo_objective(theta * 1.0, old, adv, varsigma=vs, clip_range=0.02)
    plain_adv = group_advantages(rewards, 4)
    plain = grpo_objective(theta * 1.0, old, plain_adv.advantages, plain_adv.valid, clip_range=0.02)
    assert plain.stats.clip_fraction.item() > 0
    assert torch.equal(bp.loss, plain.loss)
    assert torch.equal(torch.autograd.grad(bp.loss, theta)[0], torch.autograd.grad(plain.loss, theta)[0])


def test_prior_equal_to_mean_is_not_enough_while_crt_is_on():
    """§3 property 2 remark: R̄ = R⁰ gives w = 1 but the CRT term remains, so the loss differs from GRPO's."""
    rewards, _, gen = _batch(p=2, g=4, seed=2)
    adv = bpgo_advantages(rewards, rewards.view(2, 4).mean(1), 4)
    theta = torch.randn(8, 2, generator=gen, dtype=F64)
    plain = group_advantages(rewards, 4)
    assert torch.equal(adv.advantages, plain.advantages)
    bp = bpgo_objective(theta, theta, adv).loss
    assert bp.item() != grpo_objective(theta, theta, plain.advantages, plain.valid).loss.item()


@FAST
@given(st.floats(1e-3, 10), st.floats(0.01, 1.0), st.floats(0.01, 100))
def test_ras_monotone_bounded_and_odd(d, alpha, k):
    """§3 property 3: w increasing in Δ and inside (1−α, 1+α) while k·|Δ| ≤ 20 (beyond, tanh rounds to ±1 in fp64
    and w reaches the bound: non-decreasing, closed interval), and w(Δ) + w(−Δ) = 2."""
    grid = torch.linspace(-d, d, 101, dtype=F64)
    w = ras_paper(grid, alpha=alpha, k=k)
    moderate = (k * grid.abs() <= 20)
    assert torch.all(w[1:] >= w[:-1])
    assert torch.all((w[1:] > w[:-1])[moderate[1:] & moderate[:-1]])
    assert torch.all((w > 1 - alpha) & (w < 1 + alpha) | ~moderate)
    assert torch.all((w >= 1 - alpha) & (w <= 1 + alpha))
    torch.testing.assert_close(w + ras_paper(-grid, alpha=alpha, k=k), torch.full_like(w, 2.0), rtol=0, atol=1e-15)


def test_posterior_ras_monotone_in_delta():
    """§3 property 3 for the posterior variant: non-decreasing in Δ, within [0.5, 1.5] for α_post = 1."""
    delta = torch.linspace(-0.5, 0.5, 201, dtype=F64)
    w = ras_posterior(0.5 + delta, torch.full_like(delta, 0.3), torch.full_like(delta, 0.5), 8)
    assert torch.all(w[1:] >= w[:-1]) and w[0].item() >= 0.5 and w[-1].item() <= 1.5
    assert w[100].item() == 1.0


@FAST
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(0.5, 1.5), st.floats(1e-3, 0.3), st.floats(0.01, 10))
def test_homogeneity_of_the_surrogate(a, a_tilde, rho, eps, w):
    """§3 property 4: ℓ(w·A) = w·ℓ(A) for w > 0 (value and gradient in ρ), including clipped regions."""
    r = torch.tensor([[rho]], dtype=F64, requires_grad=True)
    lhs = clipped_surrogate(torch.tensor([w * a], dtype=F64), r, clip_range=eps)
    rhs = w * clipped_surrogate(torch.tensor([a], dtype=F64), r, clip_range=eps)
    torch.testing.assert_close(lhs, rhs, rtol=1e-14, atol=1e-300)
    (gl,) = torch.autograd.grad(lhs.sum(), r)
    (gr,) = torch.autograd.grad(rhs.sum(), r)
    torch.testing.assert_close(gl, gr, rtol=1e-14, atol=1e-300)


def test_two_terms_are_not_one_term_on_the_sum():
    """§3 property 4: A = 1, Ã = −1, ρ = 1.5, ε = 0.2: ℓ(A) = max(−1.5, −1.2) = −1.2, ℓ(Ã) = max(1.5, 1.2) = 1.5,
    sum 0.3, while ℓ(A + Ã) = ℓ(0) = 0. The BPGO objective uses the two-term value 0.3."""
    rho = torch.tensor([[1.5]], dtype=F64)
    one, minus = torch.tensor([1.0], dtype=F64), torch.tensor([-1.0], dtype=F64)
    two_terms = clipped_surrogate(one, rho, clip_range=0.2) + clipped_surrogate(minus, rho, clip_range=0.2)
    assert two_terms.item() == pytest.approx(0.3) and clipped_surrogate(one + minus, rho, clip_range=0.2).item() == 0
    out = grpo_objective(rho.log(), torch.zeros_like(rho), one, torch.tensor([True]), clip_range=0.2,
                         aux_advantages=minus, aux_weight=1.0)
    assert out.loss.item() == pytest.approx(0.3, rel=1e-12)


def test_weights_ignore_crt_settings_and_varsigma():
    """§3 property 5: w_p (and the main-term advantages) do not change with λ, the CRT mode, ras_scales_crt."""
    rewards, prior, _ = _batch(p=4, g=4, seed=3)
    ref = bpgo_advantages(rewards, prior, 4, k_mode="fixed", k_fixed=5.0)
    for kw in (dict(lam=0.5), dict(lam=2.0), dict(crt="sigmoid"), dict(crt="off"), dict(ras_scales_crt=True)):
        out = bpgo_advantages(rewards, prior, 4, k_mode="fixed", k_fixed=5.0, **kw)
        assert torch.equal(out.weights, ref.weights) and torch.equal(out.advantages, ref.advantages)
    assert not torch.allclose(ref.weights, torch.ones(4, dtype=F64))


def test_crt_hand_values():
    """R⁰ = 0.5, λ = 1: r = 0.2 → (−0.3 + 0)·e^0.2 = −0.3664208; r = 0.8 → (0.3 + 1)·e^0.8 = 2.8932032.
    Sigmoid (a = 50, τ = 5): r = 0.2 → −15·sigmoid(0.04)·0.2 = −1.5299960; r = 0.8 → 16·sigmoid(0.16)·0.8 = 6.9109105.
    r = 100 uses e^30 (clamp): (99.5 + 1)·e^30."""
    r = torch.tensor([[0.2, 0.8, 100.0]], dtype=F64)
    prior = torch.tensor([0.5], dtype=F64)
    paper = crt_transform(r, prior)
    torch.testing.assert_close(paper, torch.tensor([[-0.36642082744805093, 2.8932032070402083,
                                                     100.5 * math.exp(30)]], dtype=F64))
    sig = crt_transform(r[:, :2], prior, mode="sigmoid")
    torch.testing.assert_close(sig, torch.tensor([[-1.5299960006398967, 6.910910522311241]], dtype=F64))
    assert torch.isfinite(crt_transform(torch.tensor([[1e4, -1e4]]), torch.zeros(1))).all()


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("r0", [0.0, 0.5, 2.0])
def test_paper_crt_monotonicity(lam, r0):
    """§3 property 6: paper CRT is non-decreasing on r ≥ R⁰ − 1 (including the jump at R⁰) and decreasing below
    (derivative λ·e^r·(1 + r − R⁰) < 0 for r < R⁰ − 1); grid of step 0.01 on [R⁰ − 5, R⁰ + 3]."""
    r = torch.linspace(r0 - 5, r0 + 3, 801, dtype=F64)
    y = crt_transform(r[None], torch.tensor([r0], dtype=F64), lam=lam)[0]
    diff = y[1:] - y[:-1]
    upper = r[:-1] >= r0 - 1 - 1e-9
    assert torch.all(diff[upper] >= 0)
    assert torch.all(diff[r[1:] < r0 - 1 - 1e-9] < 0)


def test_auto_k_first_batch():
    """§3 property 7: first batch with P ≥ 2: k·std_u(Δ) = 2. Δ = [0.1, 0.3] → std_u = 0.1414214, k = 14.142136.
    Second batch Δ = [0, 0.4] (std_u 0.2828427): ŝ = 0.9·0.1414214 + 0.1·0.2828427 = 0.1555635, k = 12.856487."""
    s0 = SharpnessState()
    first = sharpness(s0, torch.tensor([0.1, 0.3]))
    assert first.k * math.sqrt(0.02) == pytest.approx(2.0, rel=1e-6)
    second = sharpness(first.state, torch.tensor([0.0, 0.4]))
    assert second.state.s_hat == pytest.approx(0.9 * math.sqrt(0.02) + 0.1 * math.sqrt(0.08), rel=1e-6)
    assert second.k == pytest.approx(2 / second.state.s_hat)
    assert s0 == SharpnessState()  # inputs are never mutated


def test_auto_k_before_estimate_and_fixed_mode():
    """Before any batch with ≥ 2 usable prompts k = k_fixed and the state stays empty; NaN Δ (no prior) is ignored;
    `fixed` mode never touches the state; a degenerate Δ spread uses the 1e-6 floor (k = 2e6)."""
    one = sharpness(SharpnessState(), torch.tensor([0.3, math.nan]), k_fixed=1.5)
    assert one.k == 1.5 and one.state.s_hat is None
    fixed = sharpness(SharpnessState(0.2), torch.tensor([0.1, 0.3]), mode="fixed", k_fixed=3.0)
    assert fixed.k == 3.0 and fixed.state == SharpnessState(0.2)
    assert sharpness(SharpnessState(), torch.tensor([0.2, 0.2])).k == pytest.approx(2e6)


def test_bpgo_advantages_use_auto_k_updated_with_current_batch():
    """RAS uses the k computed from THIS batch's Δ (updated before use): w = 1 + α·tanh(k·Δ/2) with k·std_u(Δ) = 2."""
    rewards, prior, _ = _batch(p=4, g=4, seed=4)
    out = bpgo_advantages(rewards, prior, 4)
    delta = rewards.view(4, 4).mean(1) - prior
    assert out.k * delta.std().item() == pytest.approx(2.0, rel=1e-9)
    torch.testing.assert_close(out.weights, 1 + 0.5 * torch.tanh(out.k * delta / 2))
    assert out.k_state.s_hat == pytest.approx(delta.std().item())


def test_ema_prior_uses_only_past_batches():
    """§3 property 8: batch means m_0 = 0.2, m_1 = 0.6, m_2 = 1.0. Prior at step 0: none (NaN); step 1: 0.2;
    step 2: 0.9·0.2 + 0.1·0.6 = 0.24. Changing batch n does not change the prior used at step n."""
    means = [torch.tensor([0.1, 0.3]), torch.tensor([0.6, 0.6]), torch.tensor([0.5, 1.5])]

    def priors_used(batches):
        state, used = EmaPrior(), []
        for m in batches:
            used.append(ema_prior_values(state, 2, dtype=F64))
            state = ema_prior_update(state, m)
        return used

    used = priors_used(means)
    assert torch.isnan(used[0]).all()
    torch.testing.assert_close(used[1], torch.full((2,), 0.2, dtype=F64))
    torch.testing.assert_close(used[2], torch.full((2,), 0.24, dtype=F64))
    altered = priors_used(means[:2] + [torch.tensor([100.0, -7.0])])
    assert torch.equal(altered[2], used[2])
    assert ema_prior_update(EmaPrior(0.3), torch.tensor([math.nan])) == EmaPrior(0.3)


@pytest.mark.parametrize("ras", ["paper", "posterior"])
def test_no_prior_prompt_gets_unit_weight_and_no_crt_term(ras):
    """A prompt with R⁰ = NaN: w_p = 1, Ã_p = 0, counted in no_prior; its main advantages equal plain GRPO's.
    A constant group (prompt 2, A = 0 by §2.1) also reports w_p = 1 and Ã_p = 0; nothing is NaN."""
    rewards, prior, _ = _batch(p=3, g=4, seed=5)
    prior[1] = math.nan
    rewards[8:] = 0.9
    out = bpgo_advantages(rewards, prior, 4, ras=ras)
    plain = group_advantages(rewards, 4).advantages
    assert out.no_prior == 1 and out.weights[1:].tolist() == [1.0, 1.0]
    assert torch.equal(out.aux_advantages[4:], torch.zeros(8, dtype=F64))
    assert torch.equal(out.advantages[4:8], plain[4:8])
    assert torch.all(out.aux_advantages[:4] != 0) and out.weights[0].item() != 1.0
    assert torch.isfinite(out.advantages).all() and torch.isfinite(out.weights).all()


def test_main_and_aux_advantages_compose_as_specified():
    """A_main = w_p·clip(z(r)); Ã = clip(z(R̃)) with R̄ from RAW rewards; with ras_scales_crt Ã is also ·w_p."""
    rewards, prior, _ = _batch(p=2, g=4, seed=6)
    out = bpgo_advantages(rewards, prior, 4, k_mode="fixed", k_fixed=10.0)
    a = group_advantages(rewards, 4).advantages.view(2, 4)
    torch.testing.assert_close(out.advantages, (a * out.weights[:, None]).reshape(-1), rtol=0, atol=0)
    z = group_advantages(crt_transform(rewards.view(2, 4), prior), 4).advantages
    torch.testing.assert_close(out.aux_advantages, z, rtol=0, atol=0)
    scaled = bpgo_advantages(rewards, prior, 4, k_mode="fixed", k_fixed=10.0, ras_scales_crt=True)
    torch.testing.assert_close(scaled.aux_advantages, (z.view(2, 4) * out.weights[:, None]).reshape(-1))


def test_bpgo_loss_is_the_two_term_sum():
    """L = (1/B_valid)·Σ_b (1/|𝒮|)·Σ_s [ℓ(w·A) + ς·ℓ(Ã)], ς = 0.7, both terms on the same ratios."""
    rewards, prior, gen = _batch(p=2, g=4, seed=7)
    adv = bpgo_advantages(rewards, prior, 4)
    new = 0.1 * torch.randn(8, 3, generator=gen, dtype=F64)
    out = bpgo_objective(new, torch.zeros_like(new), adv, varsigma=0.7, clip_range=0.05)
    rho = new.exp()
    per = clipped_surrogate(adv.advantages, rho, clip_range=0.05) + 0.7 * clipped_surrogate(
        adv.aux_advantages, rho, clip_range=0.05)
    assert out.loss.item() == pytest.approx((per.mean(1).sum() / 8).item(), rel=1e-12)
    assert out.loss.item() == pytest.approx(grpo_loss(per, torch.ones(8, dtype=torch.bool)).item(), rel=1e-12)


def test_pitfall_counters():
    """Posterior RAS with tiny within-group variance saturates (q ∈ {0, 1}): group 0 (R̄ = 0.905, std_u 0.006,
    R⁰ = 0.5) sits at the bound w = 1.5; group 1 (R̄ = 0.5 = R⁰) has w ≈ 1. crt_below_fraction counts valid
    samples with r < R⁰ − 1 = −0.5: 2 of 8 (−0.7 and −0.6)."""
    rewards = torch.tensor([0.90, 0.91, 0.90, 0.91, -0.7, -0.6, 1.4, 1.9], dtype=F64)
    out = bpgo_advantages(rewards, torch.tensor([0.5, 0.5], dtype=F64), 4, ras="posterior")
    assert out.ras_saturated == 1
    assert out.weights[0].item() == pytest.approx(1.5) and out.weights[1].item() == pytest.approx(1.0)
    assert out.crt_below_fraction == pytest.approx(2 / 8)


def test_bad_inputs_raise():
    rewards, prior, _ = _batch()
    with pytest.raises(ValueError, match="one per prompt"):
        bpgo_advantages(rewards, prior[:2], 4)
    with pytest.raises(ValueError, match="bpgo ras"):
        bpgo_advantages(rewards, prior, 4, ras="prior")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="k_mode"):
        sharpness(SharpnessState(), prior, mode="adaptive")  # type: ignore[arg-type]


def test_prior_record_check_accepts_the_same_record_and_old_checkpoints_and_names_what_changed():
    from vidtune.config import load_recipe
    from vidtune.errors import VidtuneError
    from vidtune.stages.grpo_prior import check_prior_record, prior_record

    on = ["grpo.bpgo.enabled=true", "grpo.reward.heads=[{reward: sharpness}]"]
    rec = prior_record(load_recipe(None, on).grpo)
    check_prior_record(rec, dict(rec))
    check_prior_record(None, rec)  # a checkpoint from before records existed
    more = prior_record(load_recipe(None, on + ["grpo.bpgo.n_prior=8"]).grpo)
    with pytest.raises(VidtuneError, match=r"\(n_prior: stored 4, now 8\)"):
        check_prior_record(rec, more)
    ema = prior_record(load_recipe(None, on + ["grpo.bpgo.prior=ema"]).grpo)
    assert "n_prior" not in ema and "rollout" not in ema
