"""ALGORITHMS.md §10.3 optical-flow metrics: the test vectors and property tests of §10."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vidtune.math.flow_metrics import endpoint_error, flow_metrics, flow_metrics_videos


def _const(u: float, v: float, shape=(3, 4, 6)) -> torch.Tensor:
    """A constant flow (u, v) of shape [pairs, 2, H, W]."""
    n, h, w = shape
    return torch.tensor([u, v]).reshape(1, 2, 1, 1).expand(n, 2, h, w).clone()


def test_vector_uniform_error():
    """F* ≡ (3, 4) (‖F*‖ = 5), error (2, 0) everywhere: E = 2 ⇒ EPE 2, >1px 100 %, >3px 0 %, F1-all 0 %."""
    m = flow_metrics(_const(5.0, 4.0), _const(3.0, 4.0))
    assert (m.epe, m.over_1px, m.over_3px, m.f1_all) == pytest.approx((2.0, 100.0, 0.0, 0.0))
    assert m.n_pixels == 3 * 4 * 6


def test_vector_half_pixels_large_error():
    """F* ≡ (3, 4), error (4, 0) on half the pixels and 0 elsewhere: EPE (4 + 0)/2 = 2, >1px 50 %, >3px 50 %, and
    F1-all 50 % (E = 4 > 3 and > 0.05·5 = 0.25 on those pixels)."""
    target = _const(3.0, 4.0)
    pred = target.clone()
    pred[..., 0, :, :3] += 4.0  # columns 0-2 of 6
    m = flow_metrics(pred, target)
    assert (m.epe, m.over_1px, m.over_3px, m.f1_all) == pytest.approx((2.0, 50.0, 50.0, 50.0))


def test_identical_flows_give_zero():
    """F̂ = F* ⇒ E ≡ 0 ⇒ EPE 0 and every rate 0 (numpy input accepted)."""
    f = np.random.default_rng(0).normal(size=(2, 2, 5, 7)).astype(np.float32)
    assert flow_metrics(f, f.copy())[:4] == (0.0, 0.0, 0.0, 0.0)


def test_f1_all_relative_criterion():
    """F* ≡ (100, 0), error (4, 0): E = 4 > 3 px but 4 < 0.05·100 = 5 ⇒ not an outlier: >3px 100 %, F1-all 0 %."""
    m = flow_metrics(_const(104.0, 0.0), _const(100.0, 0.0))
    assert (m.over_3px, m.f1_all) == pytest.approx((100.0, 0.0))


@pytest.mark.parametrize("seed", range(20))
def test_f1_all_never_exceeds_3px_on_random_flows(seed):
    """By definition outliers ⊆ {E > 3} ⇒ F1-all ≤ >3px ≤ >1px."""
    g = torch.Generator().manual_seed(seed)
    target = 4 * torch.randn(2, 2, 9, 9, generator=g)
    pred = target + 3 * torch.randn(2, 2, 9, 9, generator=g)
    m = flow_metrics(pred, target)
    assert m.f1_all <= m.over_3px <= m.over_1px and m.over_3px > 0


def test_valid_mask_and_empty():
    """Invalid pixels are ignored: a huge error (1000) on the masked half leaves EPE of the valid half = 0.
    No valid pixel ⇒ NaN metrics and n_pixels 0."""
    target = _const(1.0, 1.0, (1, 2, 2))
    pred = target.clone()
    pred[0, 0, 1, :] += 1000.0
    valid = torch.tensor([[[True, True], [False, False]]])
    m = flow_metrics(pred, target, valid)
    assert (m.epe, m.over_1px, m.n_pixels) == (0.0, 0.0, 2)
    empty = flow_metrics(pred, target, torch.zeros_like(valid))
    assert math.isnan(empty.epe) and empty.n_pixels == 0


def test_pooled_versus_per_video():
    """Video A: 1 pair of 2×2 pixels, E = 2 everywhere (4 px); video B: 4 pairs of 2×2, E = 0 (16 px).
    Pooled EPE = (4·2 + 16·0)/20 = 0.4; per-video mean = (2 + 0)/2 = 1; >1px pooled 4/20 = 20 %, per-video 50 %."""
    a_t, b_t = _const(0.0, 0.0, (1, 2, 2)), _const(0.0, 0.0, (4, 2, 2))
    rep = flow_metrics_videos([a_t + torch.tensor([2.0, 0.0]).reshape(2, 1, 1), b_t.clone()], [a_t, b_t])
    assert (rep.pooled.epe, rep.pooled.over_1px, rep.pooled.n_pixels) == pytest.approx((0.4, 20.0, 20))
    assert (rep.per_video_mean.epe, rep.per_video_mean.over_1px) == pytest.approx((1.0, 50.0))
    assert [m.epe for m in rep.per_video] == pytest.approx([2.0, 0.0])


def test_endpoint_error_is_euclidean_norm():
    """E = ‖(3, 4)‖₂ = 5 (not 25, not 7)."""
    e = endpoint_error(_const(3.0, 4.0, (1, 1, 1)), torch.zeros(1, 2, 1, 1))
    assert e.shape == (1, 1, 1) and float(e) == 5.0


def test_mismatched_shapes_are_errors():
    """pred and target must have the same [..., 2, H, W] shape."""
    with pytest.raises(ValueError, match="2, H, W"):
        flow_metrics(torch.zeros(1, 2, 3, 3), torch.zeros(1, 2, 3, 4))
