"""VBench-style batch evaluation (metrics/vbench_eval.py, ALGORITHMS.md §10.2): limits of each dimension, the
static-only flickering, the aggregation with its list of dimensions, labels, feature plug-in, named errors."""

import json
import math
import os

import cv2
import numpy as np
import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.metrics.vbench_eval import PIXEL_LABEL, evaluate_videos, pixel_features
from vidtune.world.dataset import to_tensor
from vidtune.world.grammar import parse
from vidtune.world.render import render

cv2.setNumThreads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))


def translating(speed: float, frames: int = 8, size: int = 32) -> torch.Tensor:
    """A smooth periodic texture moving right by ``speed`` px/frame: [F, 3, H, W] in [0.2, 0.8]."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    out = [0.5 + 0.15 * np.sin(2 * np.pi * (xx - speed * t) / 16) + 0.15 * np.cos(2 * np.pi * yy / 11)
           for t in range(frames)]
    return torch.from_numpy(np.stack(out)).float()[:, None].expand(-1, 3, -1, -1).contiguous()


def test_static_clip_dimensions_and_aggregate_hand_computed():
    """Identical textured frames: flickering 1, smoothness 1, consistency 1, not dynamic. Quality =
    [1 + 1 + 1 + (1 − 0.706)/(0.9975 − 0.706) + 0·0.5] / (4 + 0.5) = (3 + 1.008576)/4.5 = 0.890795;
    with Semantic 0.5, Total = (4·0.890795 + 0.5)/5 = 0.812636."""
    rep = evaluate_videos(translating(0.0)[None], semantic={"verifier": 0.5})
    d = rep.dimensions
    assert d["temporal_flickering"] == 1.0 and d["dynamic_degree"] == 0.0
    assert d["motion_smoothness"] == pytest.approx(1.0, abs=1e-6)
    assert d["subject_consistency"] == pytest.approx(1.0) and d["background_consistency"] == pytest.approx(1.0)
    assert rep.aggregate.quality == pytest.approx(0.890795, abs=1e-5)
    assert rep.aggregate.total == pytest.approx(0.812636, abs=1e-5)
    assert set(rep.aggregate.quality_dimensions) == set(d) and rep.aggregate.semantic_dimensions == ("verifier",)
    assert rep.counts == {"videos": 1, "static": 1, "dynamic": 0}


def test_flickering_only_on_static_videos_and_alternating_frames_score_zero():
    """Batch (static texture, texture at 2 px/frame, flat frames alternating 0/1): the moving video is dynamic and
    gets no flickering score; the flat alternating clip has zero flow (static) and MAE 255 → flickering 0, so the
    dimension is the mean over the two static videos, (1 + 0)/2. Dynamic degree = 1/3."""
    alt = torch.stack([torch.full((3, 32, 32), float(t % 2)) for t in range(8)])
    rep = evaluate_videos(torch.stack([translating(0.0), translating(2.0), alt]))
    flick = rep.per_video["temporal_flickering"]
    assert flick[0] == 1.0 and math.isnan(flick[1]) and flick[2] == 0.0
    assert rep.dimensions["temporal_flickering"] == 0.5
    assert rep.per_video["dynamic_degree"].tolist() == [0.0, 1.0, 0.0] and rep.dimensions["dynamic_degree"] == 1 / 3
    assert rep.counts == {"videos": 3, "static": 2, "dynamic": 1}


def test_no_static_video_leaves_flickering_out_of_quality():
    video = to_tensor(render(parse("one large red square moves right, camera pans left"), 0).video)
    rep = evaluate_videos(video[None])
    assert math.isnan(rep.dimensions["temporal_flickering"]) and rep.counts["static"] == 0
    assert "temporal_flickering" not in rep.aggregate.quality_dimensions and rep.dimensions["dynamic_degree"] == 1.0
    assert math.isnan(rep.aggregate.semantic) and math.isnan(rep.aggregate.total)  # no semantic scores given
    assert rep.labels["subject_consistency"] == PIXEL_LABEL and "not comparable" in rep.labels["motion_smoothness"]
    json.dumps(rep.to_dict())


def test_feature_function_plugs_in_and_is_labelled():
    """Features alternating e1, e2, e1, e2: s_1 = ½(0 + 0), s_2 = ½(0 + 1), s_3 = ½(0 + 0) → mean 1/6 per video
    (frame-weighted over two 4-frame videos: (0.5 + 0.5)/6 = 1/6)."""
    feats = lambda frames: torch.eye(2)[torch.arange(frames.shape[0]) % 2]  # noqa: E731
    rep = evaluate_videos(torch.stack([translating(0.0, 4)] * 2), subject_features=feats,
                          feature_labels={"subject": "toy one-hot"})
    assert rep.dimensions["subject_consistency"] == pytest.approx(1 / 6)
    assert rep.labels["subject_consistency"] == "toy one-hot" and rep.labels["background_consistency"] == PIXEL_LABEL
    assert rep.dimensions["background_consistency"] == pytest.approx(1.0)


def test_pixel_features_are_centred_downsampled_frames():
    """A 16×16 frame of 2×2 blocks averages exactly onto 8×8; centring makes every channel's features sum to 0."""
    frame = torch.rand(1, 3, 8, 8).repeat_interleave(2, -1).repeat_interleave(2, -2)
    f = pixel_features(frame)
    assert f.shape == (1, 192) and f.view(3, 64).sum(1).abs().max() < 1e-9


def test_bad_inputs_are_named():
    v = translating(0.0)[None]
    with pytest.raises(VidtuneError, match="float tensor \\[B, F, 3, H, W\\], got \\(8, 3, 32, 32\\)"):
        evaluate_videos(v[0])
    with pytest.raises(VidtuneError, match="float tensor"):
        evaluate_videos((v * 255).to(torch.uint8))
    with pytest.raises(VidtuneError, match="≥ 3 frames"):
        evaluate_videos(v[:, :2])
    with pytest.raises(VidtuneError, match="\\[0, 1\\]"):
        evaluate_videos(v * 255)
    nan = v.clone()
    nan[0, 0, 0, 0, 0] = float("nan")
    with pytest.raises(VidtuneError, match="finite"):
        evaluate_videos(nan)
