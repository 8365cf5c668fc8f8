"""ALGORITHMS.md §7.2 (structure weights) and §7.3 (flow resize, EPE loss); property tests 1 and 5 of §7."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.structure_weights import (
    epe_loss,
    normalise_scores,
    resize_flow,
    score_percentiles,
    structure_weights,
    weights_from_normalised,
)

finite_scores = st.lists(st.floats(0.0, 50.0, allow_nan=False), min_size=1, max_size=32)


def test_hand_example():
    """ψ = [0, 5, 10], q_05 = 0, q_95 = 10, γ = 1: ψ̂ = [0, 0.5, 1]; 1 + γψ̂ = [1, 1.5, 2] (inside [0.25, 4]);
    mean 1.5 ⇒ ω = [2/3, 1, 4/3]."""
    out = structure_weights(torch.tensor([0.0, 5.0, 10.0]), 0.0, 10.0, gamma=1.0)
    torch.testing.assert_close(out.psi_hat, torch.tensor([0.0, 0.5, 1.0]))
    torch.testing.assert_close(out.omega, torch.tensor([2 / 3, 1.0, 4 / 3]))
    assert out.n_missing == 0 and out.omega.dtype == torch.float32


def test_clip_before_renormalisation():
    """γ = 10, ψ̂ = [0, 1]: 1 + 10ψ̂ = [1, 11] → clip [0.25, 4] → [1, 4]; mean 2.5 ⇒ ω = [0.4, 1.6]."""
    omega = weights_from_normalised(torch.tensor([0.0, 1.0]), gamma=10.0)
    torch.testing.assert_close(omega, torch.tensor([0.4, 1.6]))


def test_scores_outside_percentiles_are_clipped():
    """q_05 = 2, q_95 = 6: ψ = [0, 4, 100] ⇒ (ψ − 2)/4 = [−0.5, 0.5, 24.5] → clip ⇒ ψ̂ = [0, 0.5, 1]."""
    psi_hat, _ = normalise_scores(torch.tensor([0.0, 4.0, 100.0]), 2.0, 6.0)
    torch.testing.assert_close(psi_hat, torch.tensor([0.0, 0.5, 1.0]))


@settings(deadline=None, max_examples=60)
@given(finite_scores, st.floats(0.0, 5.0))
def test_property1_gamma_zero_gives_unit_weights(scores, _gamma):
    """§7 property 1: γ = 0 ⇒ ω ≡ 1 whatever the scores."""
    q = score_percentiles(scores)
    out = structure_weights(torch.tensor(scores), q.q_low, q.q_high, gamma=0.0)
    torch.testing.assert_close(out.omega, torch.ones(len(scores)))


@settings(deadline=None, max_examples=60)
@given(st.floats(0.0, 50.0), st.integers(1, 20), st.floats(0.1, 5.0), st.floats(-10.0, 60.0), st.floats(0.0, 20.0))
def test_property1_equal_scores_give_unit_weights(value, n, gamma, q_low, spread):
    """§7 property 1: equal scores ⇒ ω ≡ 1 (with their own percentiles and with arbitrary dataset percentiles)."""
    scores = torch.full((n,), value)
    q = score_percentiles(scores)
    for lo, hi in [(q.q_low, q.q_high), (q_low, q_low + spread)]:
        torch.testing.assert_close(structure_weights(scores, lo, hi, gamma=gamma).omega, torch.ones(n))


@settings(deadline=None, max_examples=100)
@given(finite_scores, st.floats(0.01, 10.0), st.floats(0.0, 10.0), st.floats(0.0, 30.0))
def test_property1_mean_one_and_monotone(scores, gamma, q_low, spread):
    """§7 property 1: otherwise mean ω = 1 (1e-6) and ω is non-decreasing in ψ."""
    psi = torch.tensor(scores, dtype=torch.float64)
    omega = structure_weights(psi, q_low, q_low + spread, gamma=gamma).omega
    assert abs(float(omega.mean()) - 1.0) < 1e-6
    order = torch.argsort(psi, stable=True)
    assert bool((omega[order].diff() >= -1e-12).all())


def test_missing_and_non_finite_scores_count_and_get_zero():
    """None, NaN, +inf ⇒ ψ̂ = 0 (3 counted); ψ = 10 with q = (0, 10) ⇒ ψ̂ = 1. γ = 1: 1 + ψ̂ = [1, 1, 1, 2],
    mean 1.25 ⇒ ω = [0.8, 0.8, 0.8, 1.6]."""
    out = structure_weights([None, float("nan"), float("inf"), 10.0], 0.0, 10.0)
    assert out.n_missing == 3
    torch.testing.assert_close(out.psi_hat, torch.tensor([0.0, 0.0, 0.0, 1.0]))
    torch.testing.assert_close(out.omega, torch.tensor([0.8, 0.8, 0.8, 1.6]))


def test_percentiles_ignore_missing():
    """ψ = 0, 1, …, 100 (101 values, linear interpolation): q_05 = 5, q_95 = 95; two NaNs are counted, not used."""
    q = score_percentiles([float(i) for i in range(101)] + [float("nan"), None])
    assert (q.q_low, q.q_high, q.n_missing) == pytest.approx((5.0, 95.0, 2))
    assert math.isnan(score_percentiles([None]).q_low)


def test_degenerate_percentiles_step_limit():
    """q_05 = q_95 = 3: limit of the clip is the step 1[ψ > 3] ⇒ ψ̂ = [0, 0, 1]."""
    psi_hat, _ = normalise_scores(torch.tensor([1.0, 3.0, 7.0]), 3.0, 3.0)
    torch.testing.assert_close(psi_hat, torch.tensor([0.0, 0.0, 1.0]))


@pytest.mark.parametrize("mode", ["bilinear", "area", "nearest"])
def test_property5_resize_constant_flow_by_two(mode):
    """§7 property 5: a constant flow (u, v) = (1.5, −0.5) on 8×6 resized by 2 to 16×12 becomes (3, −1)."""
    flow = torch.tensor([1.5, -0.5]).reshape(1, 2, 1, 1).expand(3, 2, 8, 6)
    out = resize_flow(flow, (16, 12), mode=mode)
    assert out.shape == (3, 2, 16, 12)
    torch.testing.assert_close(out[:, 0], torch.full((3, 16, 12), 3.0))
    torch.testing.assert_close(out[:, 1], torch.full((3, 16, 12), -1.0))


def test_resize_scales_each_axis_by_its_own_factor():
    """H 4 → 8 (×2), W 4 → 12 (×3), leading dims [2, 3] kept: (u, v) = (1, 1) ⇒ (W_d/W_px·u, H_d/H_px·v) = (3, 2)."""
    out = resize_flow(torch.ones(2, 3, 2, 4, 4), (8, 12))
    assert out.shape == (2, 3, 2, 8, 12)
    assert torch.allclose(out[..., 0, :, :], torch.tensor(3.0)) and torch.allclose(out[..., 1, :, :], torch.tensor(2.0))


def test_epe_is_norm_not_squared():
    """4 pixels, error (3, 4) at one pixel, 0 elsewhere: EPE = (5 + 0 + 0 + 0)/4 = 1.25 (squared would be 6.25)."""
    target = torch.zeros(1, 2, 2, 2)
    pred = target.clone()
    pred[0, :, 0, 0] = torch.tensor([3.0, 4.0])
    assert float(epe_loss(pred, target)) == pytest.approx(1.25)


def test_epe_valid_mask_and_gradients():
    """Pixel (0,0) has error 5, pixel (1,1) is invalid with a NaN target: mean over 3 valid = 5/3. The gradient is
    finite everywhere, 0 at exact pixels, and the unit error direction (0.6, 0.8)/3 at (0,0)."""
    target = torch.zeros(1, 2, 2, 2)
    target[0, :, 1, 1] = float("nan")
    pred = torch.zeros(1, 2, 2, 2)
    pred[0, :, 0, 0] = torch.tensor([3.0, 4.0])
    pred.requires_grad_(True)
    valid = torch.tensor([[[True, True], [True, False]]])
    loss = epe_loss(pred, target, valid)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(5 / 3)
    assert bool(torch.isfinite(pred.grad).all())
    torch.testing.assert_close(pred.grad[0, :, 0, 0], torch.tensor([0.6, 0.8]) / 3)
    assert float(pred.grad[0, :, 0, 1].abs().sum()) == 0.0
    assert float(epe_loss(pred.detach(), target, torch.zeros(1, 2, 2, dtype=torch.bool))) == 0.0
