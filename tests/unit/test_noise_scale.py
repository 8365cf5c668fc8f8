"""Gradient noise scale (math/noise_scale.py) against hand-computed values."""

import math

import pytest
import torch

from vidtune.math.noise_scale import gradient_noise_scale, same_prompt_signal, signal_fraction


def test_noise_scale_by_hand():
    """g = 1, 2, 3 (P = 1): |G|² = mean of the products over i ≠ j = (2 + 3 + 6)/3 = 11/3; tr Σ = var(1, 2, 3) = 1.
    Leave-one-out estimates 6, 3, 2 (mean 11/3), so se = √(2/3 · (49 + 4 + 25)/9) = √(156/27)."""
    r = gradient_noise_scale(torch.tensor([[1.0], [2.0], [3.0]]))
    assert r.signal_sq == pytest.approx(11 / 3)
    assert r.trace_cov == pytest.approx(1.0)
    assert r.signal_sq_se == pytest.approx(math.sqrt(156 / 27))
    assert r.n == 3


def test_noise_scale_sums_over_coordinates():
    """Two coordinates are two independent problems: |G|² and tr Σ add up (second column 0, 0, 3: products 0, 0, 0
    → 0; variance 3)."""
    r = gradient_noise_scale(torch.tensor([[1.0, 0.0], [2.0, 0.0], [3.0, 3.0]]))
    assert r.signal_sq == pytest.approx(11 / 3)
    assert r.trace_cov == pytest.approx(1.0 + 3.0)


def test_pure_noise_has_no_signal():
    """Zero-mean gradients: |G|² is 0 within a few standard errors, and the batch-256 signal fraction is small."""
    g = torch.randn(64, 1000, generator=torch.Generator().manual_seed(0))
    r = gradient_noise_scale(g)
    assert abs(r.signal_sq) < 4 * r.signal_sq_se
    assert r.trace_cov == pytest.approx(1000, rel=0.1)
    assert signal_fraction(max(r.signal_sq, 0.0), r.trace_cov, 256) < 0.1


def test_signal_fraction_by_hand():
    """|G|² = 1, tr Σ = 4: a batch of 4 units is half signal, of 12 three quarters; no signal gives 0."""
    assert signal_fraction(1.0, 4.0, 4) == pytest.approx(0.5)
    assert signal_fraction(1.0, 4.0, 12) == pytest.approx(0.75)
    assert signal_fraction(-0.1, 4.0, 12) == 0.0
    with pytest.raises(ValueError, match="n ≥ 3"):
        gradient_noise_scale(torch.ones(2, 5))


def test_same_prompt_signal_by_hand():
    """ids 0, 1, 0, 1: prompt 0's pair gives 1·3 = 3, prompt 1's 2·(−1) = −2; mean 0.5, se = std(3, −2)/√2 = 2.5.
    ids 0, 0, 0, 1, 1 with g = 1, 2, 3, 1, 1: prompt 0 averages its three pairs (2 + 3 + 6)/3 = 11/3, prompt 1 has
    1; mean 7/3, se = (8/3)/√2/√2 = 4/3. Units of different prompts never pair; an id with one unit is unused."""
    g = torch.tensor([[1.0], [2.0], [3.0], [-1.0]])
    mean, se, n = same_prompt_signal(g, torch.tensor([0, 1, 0, 1]))
    assert (mean, n) == (0.5, 2)
    assert se == pytest.approx(2.5)
    mean, se, n = same_prompt_signal(torch.tensor([[1.0], [2.0], [3.0], [1.0], [1.0], [9.0]]),
                                     torch.tensor([0, 0, 0, 1, 1, 2]))
    assert (mean, n) == (pytest.approx(7 / 3), 2)
    assert se == pytest.approx(4 / 3)
    with pytest.raises(ValueError, match="2 ids"):
        same_prompt_signal(g, torch.tensor([0, 1, 2, 0]))
