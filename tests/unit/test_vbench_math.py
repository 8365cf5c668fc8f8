"""ALGORITHMS.md §10.2 VBench-style dimensions (pure parts): test vectors and property tests of §10."""

from __future__ import annotations

import math

import pytest
import torch

from vidtune.math.vbench import (
    NORMALISATION,
    backward_warp,
    consistency_frame_scores,
    dynamic_degree,
    dynamic_degree_params,
    frame_weighted_dimension,
    is_dynamic,
    is_static,
    motion_smoothness,
    temporal_flickering,
    top_flow_magnitude,
    total_score,
    vbench_aggregate,
)


def test_temporal_flickering_limits_and_hand_value():
    """Constant clip ⇒ MAE 0 ⇒ 1; frames alternating 0/255 ⇒ MAE 255 ⇒ 0; frames 0, 51, 0 ⇒ MAE 51 ⇒ 204/255 = 0.8."""
    assert temporal_flickering(torch.full((6, 3, 4, 4), 77.0)) == pytest.approx(1.0)
    alt = torch.stack([torch.full((3, 4, 4), 255.0 * (f % 2)) for f in range(6)])
    assert temporal_flickering(alt) == pytest.approx(0.0)
    three = torch.stack([torch.full((3, 2, 2), v) for v in (0.0, 51.0, 0.0)])
    assert temporal_flickering(three) == pytest.approx(0.8)
    assert math.isnan(temporal_flickering(torch.zeros(1, 3, 2, 2)))


def test_top_flow_magnitude_hand():
    """10×10 flow, (3, 4) (magnitude 5) on 5 pixels, 0 elsewhere: top 5 % = ⌊5⌋ = 5 pixels ⇒ 5; top 2 % = 2 pixels
    ⇒ 5; top 10 % = 10 pixels ⇒ (5·5 + 5·0)/10 = 2.5."""
    flow = torch.zeros(2, 10, 10)
    flow[0, 0, :5], flow[1, 0, :5] = 3.0, 4.0
    assert [float(top_flow_magnitude(flow, f)) for f in (0.05, 0.02, 0.1)] == pytest.approx([5.0, 5.0, 2.5])


def test_dynamic_degree_thresholds_test_vector():
    """(H, W, fps) = (480, 832, 16), 81 frames: interval round(16/8) = 2, n = 41 sampled frames,
    thr = 6·max(1, 8/16)·480/256 = 11.25, count round(4·41/16) = round(10.25) = 10."""
    p = dynamic_degree_params(480, 832, 16, 81)
    assert (p.interval, p.n_sampled, p.count) == (2, 41, 10) and p.threshold == pytest.approx(11.25)


def test_dynamic_degree_low_fps():
    """fps 4: interval max(1, round(0.5)) = 1, thr = 6·(8/4)·480/256 = 22.5; 16 frames ⇒ count round(4) = 4."""
    p = dynamic_degree_params(480, 832, 4, 16)
    assert (p.interval, p.n_sampled, p.count) == (1, 16, 4) and p.threshold == pytest.approx(22.5)


def test_dynamic_decision_counts_exceeding_pairs():
    """thr 11.25, count 10: 10 of 40 pair scores = 12 > thr ⇒ dynamic; 9 ⇒ static; scores equal to thr do not count.
    Dimension over [True, False, False, True] = 0.5."""
    p = dynamic_degree_params(480, 832, 16, 81)
    ten = torch.tensor([12.0] * 10 + [1.0] * 30)
    nine = torch.tensor([12.0] * 9 + [11.25] * 31)
    assert is_dynamic(ten, p) and not is_dynamic(nine, p)
    assert dynamic_degree([True, False, False, True]) == 0.5


def test_static_filter():
    """256×256 ⇒ thr = 3·256/256 = 3; F_px = 16 (15 pairs) ⇒ n_c = round(2·16/16) = 2; wrap bound thr·n_c·2 = 12.
    2 pairs above 3 ⇒ static; 3 ⇒ not; a wrap-around pair of 12.5 > 12 ⇒ not static."""
    two = torch.tensor([5.0, 5.0] + [0.5] * 13)
    three = torch.tensor([5.0, 5.0, 5.0] + [0.5] * 12)
    assert is_static(two, torch.tensor([12.0, 1.0]), 256, 256)
    assert not is_static(three, torch.tensor([1.0, 1.0]), 256, 256)
    assert not is_static(two, torch.tensor([1.0, 12.5]), 256, 256)


def test_consistency_identical_frames_is_one():
    """Identical per-frame features ⇒ every cosine is 1 ⇒ s_f = 1 for all f ≥ 1."""
    feats = torch.randn(1, 16).expand(5, 16)
    torch.testing.assert_close(consistency_frame_scores(feats), torch.ones(4))


def test_consistency_hand_example():
    """φ = (1,0), (0,1), (1,0), (−1,0): s_1 = ½(0 + 0) = 0; s_2 = ½(cos(φ1,φ2) = 0 + cos(φ0,φ2) = 1) = 0.5;
    s_3 = ½(max(0, −1) + max(0, −1)) = 0 (negative cosines clipped). Features need not be normalised."""
    feats = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0], [-4.0, 0.0]])
    torch.testing.assert_close(consistency_frame_scores(feats), torch.tensor([0.0, 0.5, 0.0]))


def test_frame_weighted_dimension():
    """Video A: s = [1, 1, 1] (F = 4), video B: s = [0] (F = 2) ⇒ (3 + 0)/(3 + 1) = 0.75 (per-video mean: 0.5)."""
    assert frame_weighted_dimension([torch.ones(3), torch.zeros(1)]) == pytest.approx(0.75)
    assert math.isnan(frame_weighted_dimension([]))


def test_backward_warp():
    """out(x) = img(x + flow): zero flow is the identity; a ramp img(x) = 10x shifted by u = −1 gives 10(x − 1) away
    from the left border (border replicated: column 0 stays 0); u = 0.5 gives 10x + 5 (bilinear) inside."""
    img = (10.0 * torch.arange(6.0)).expand(1, 4, 6).clone()
    zero = torch.zeros(2, 4, 6)
    torch.testing.assert_close(backward_warp(img, zero), img)
    left = backward_warp(img, torch.stack([torch.full((4, 6), -1.0), torch.zeros(4, 6)]))
    torch.testing.assert_close(left[0, :, 1:], img[0, :, :-1])
    assert float(left[0, 0, 0]) == 0.0
    half = backward_warp(img, torch.stack([torch.full((4, 6), 0.5), torch.zeros(4, 6)]))
    torch.testing.assert_close(half[0, :, :5], img[0, :, :5] + 5.0)


def _blob_clip(n_frames: int = 7, speed: float = 1.0) -> torch.Tensor:
    """A Gaussian blob (σ = 2) moving right by ``speed`` px/frame on a flat background, far from the borders."""
    ys, xs = torch.meshgrid(torch.arange(16.0), torch.arange(40.0), indexing="ij")
    frames = [50 + 150 * torch.exp(-((xs - 10 - speed * f) ** 2 + (ys - 8) ** 2) / 8) for f in range(n_frames)]
    return torch.stack(frames).unsqueeze(1).expand(n_frames, 3, 16, 40).double()


def test_motion_smoothness_constant_clip_is_one():
    """Constant clip with zero flows: Î = the frame itself ⇒ error 0 ⇒ score 1; fewer than 3 frames ⇒ NaN."""
    clip = torch.full((5, 3, 8, 8), 120.0)
    assert motion_smoothness(clip, lambda a, b: torch.zeros(2, 8, 8)) == pytest.approx(1.0)
    assert math.isnan(motion_smoothness(clip[:2], lambda a, b: torch.zeros(2, 8, 8)))


def _centroid_flow(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """A flow estimator exact for one translating blob: the displacement of the intensity centroid from a to b."""
    xs = torch.arange(a.shape[-1], dtype=a.dtype)
    cx = lambda img: float(((img[0] - 50) * xs).sum() / (img[0] - 50).sum())  # noqa: E731
    return torch.tensor([cx(b) - cx(a), 0.0], dtype=a.dtype).reshape(2, 1, 1).expand(2, *a.shape[-2:])


def test_motion_smoothness_linear_motion_with_true_flow():
    """Blob moving 1 px/frame: even frames 2 px apart, F_{0→1} = (2, 0), F_{1→0} = (−2, 0) ⇒ F_{m→0} = −¼·2 + ¼·(−2) =
    (−1, 0), F_{m→1} = (1, 0); warp(E_i, (−1, 0))(x) = E_i(x − 1) = I_{2i+1}(x) exactly (integer shift) ⇒ score 1.
    With zero flows Î is the average of the two even frames (ghosting) ⇒ score below 1 (≈ 0.9974, the blob is
    small); with the mid-frame flows' signs flipped the two warped blobs land 2 px off on either side ⇒ worse still."""
    clip = _blob_clip()
    assert _centroid_flow(clip[0], clip[2])[0, 0, 0] == pytest.approx(2.0, abs=1e-4)
    perfect = motion_smoothness(clip, _centroid_flow)
    ghost = motion_smoothness(clip, lambda a, b: torch.zeros(2, 16, 40))
    flipped = motion_smoothness(clip, lambda a, b: -_centroid_flow(a, b))
    assert perfect == pytest.approx(1.0, abs=1e-5)
    assert ghost < 0.999 and flipped < ghost


def test_total_test_vector():
    """Quality 83.15, Semantic 65.31 ⇒ Total = (4·83.15 + 65.31)/5 = (332.6 + 65.31)/5 = 397.91/5 = 79.582 → 79.58."""
    assert round(total_score(83.15, 65.31), 2) == 79.58


def test_vbench_aggregate_hand():
    """subject 1.0 ⇒ (1 − 0.1462)/(1 − 0.1462)·1 = 1; dynamic 0.5 ⇒ 0.5·0.5 = 0.25; motion 0.9975 ⇒ 1.
    Quality = (1 + 0.25 + 1)/(1 + 0.5 + 1) = 0.9; Semantic = (0.6 + 0.8)/2 = 0.7; Total = (3.6 + 0.7)/5 = 0.86."""
    agg = vbench_aggregate(
        {"subject_consistency": 1.0, "dynamic_degree": 0.5, "motion_smoothness": 0.9975},
        {"object_class": 0.6, "spatial_relationship": 0.8},
    )
    assert (agg.quality, agg.semantic, agg.total) == pytest.approx((0.9, 0.7, 0.86))
    assert agg.quality_dimensions == ("subject_consistency", "motion_smoothness", "dynamic_degree")
    assert agg.semantic_dimensions == ("object_class", "spatial_relationship")


def test_vbench_aggregate_normalisation_and_errors():
    """Every quality dimension at its Min gives Quality 0; at its Max gives 1. Unknown names are rejected; no
    semantic dimension ⇒ Semantic and Total NaN."""
    at_min = {d: lo for d, (lo, _, _) in NORMALISATION.items()}
    at_max = {d: hi for d, (_, hi, _) in NORMALISATION.items()}
    assert vbench_aggregate(at_min, {"s": 0.0}).quality == pytest.approx(0.0)
    assert vbench_aggregate(at_max, {"s": 1.0}).total == pytest.approx(1.0)
    assert math.isnan(vbench_aggregate(at_max, {}).total)
    with pytest.raises(ValueError, match="aesthetics"):
        vbench_aggregate({"aesthetics": 0.5}, {})
