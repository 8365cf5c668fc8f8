"""VBench-style evaluation of a batch of videos without large models (ALGORITHMS.md §10.2; Huang et al. 2024).

Uses the pure formulas of ``math/vbench.py``; this file only extracts flows and features and records what was used:

- temporal flickering: exact VBench MAE on static videos only (static filter from top-2 % flow magnitudes); the
  dimension is the mean over static videos (NaN, and left out of Quality, when none is static);
- dynamic degree: per-video flag from top-5 % flow magnitudes, dimension = fraction of dynamic videos;
- motion smoothness: the weight-free flow interpolation stand-in (not comparable with published numbers);
- subject / background consistency: from per-frame features ``feature_fn(frames [F, 3, H, W] in [0, 1]) → [F, D]``
  (a learned scorer's frame embeddings plug in here); by default the weight-free stand-in :func:`pixel_features`,
  labelled as such — then both dimensions use the same features and are equal;
- Quality / Semantic / Total with the list of dimensions that entered each (``semantic``: the caller's own
  semantic scores in [0, 1], e.g. the ShapeWorld verifier's mean).

Flow: OpenCV (``estimator``) on frames upsampled to ``flow_size`` px (``rewards.temporal.flows``); the label is
recorded with every flow-based number. All scores are fractions in [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidtune.errors import VidtuneError
from vidtune.math import vbench
from vidtune.rewards.temporal import consecutive, flows
from vidtune.video.flow import Estimator

FeatureFn = Callable[[Tensor], Tensor]
PIXEL_LABEL = "weight-free stand-in: mean-centred 8x8 downsampled frames (not DINO/CLIP features)"


def pixel_features(frames: Tensor, size: int = 8) -> Tensor:
    """Weight-free per-frame features: area-downsample [F, 3, H, W] to size×size, subtract each frame's per-channel
    mean, flatten → [F, 3·size²]. The cosine of two such vectors is the Pearson correlation of the small frames."""
    x = F.adaptive_avg_pool2d(frames.double(), size)
    return (x - x.mean(dim=(-2, -1), keepdim=True)).flatten(1)


class VBenchReport(NamedTuple):
    dimensions: dict[str, float]  # dimension → score in [0, 1] (NaN: no video qualified)
    per_video: dict[str, Tensor]  # dimension → [B] (flickering NaN for non-static videos)
    aggregate: vbench.VBenchAggregate  # Quality / Semantic / Total and the dimensions that entered each
    labels: dict[str, str]  # dimension → estimator or feature extractor used
    counts: dict[str, int]  # videos, static, dynamic

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (floats and lists)."""
        a = self.aggregate
        return {"dimensions": self.dimensions, "per_video": {k: v.tolist() for k, v in self.per_video.items()},
                "quality": a.quality, "semantic": a.semantic, "total": a.total,
                "quality_dimensions": list(a.quality_dimensions), "semantic_dimensions": list(a.semantic_dimensions),
                "labels": self.labels, "counts": self.counts}


def _video_scores(x: np.ndarray, fps: float, estimator: Estimator, flow_size: int) -> tuple[float, bool, float]:
    """(flickering or NaN if not static, dynamic flag, motion smoothness) of one clip [F, H, W, 3] in [0, 1]."""
    n, h, w = x.shape[:3]
    frames = torch.from_numpy(x).permute(0, 3, 1, 2).double() * 255.0
    top2 = vbench.top_flow_magnitude(torch.from_numpy(flows(x, consecutive(n) + [(0, n - 1), (n - 1, 0)],
                                                            estimator, flow_size)), 0.02)
    static = vbench.is_static(top2[: n - 1], top2[n - 1:], h, w)
    p = vbench.dynamic_degree_params(h, w, fps, n)
    top5 = vbench.top_flow_magnitude(torch.from_numpy(flows(x, consecutive(n, p.interval), estimator, flow_size)), 0.05)

    def flow_fn(a: Tensor, b: Tensor) -> Tensor:
        pair = (torch.stack([a, b]).permute(0, 2, 3, 1) / 255.0).float().numpy()
        return torch.from_numpy(flows(pair, [(0, 1)], estimator, flow_size)[0])

    flicker = vbench.temporal_flickering(frames) if static else math.nan
    return flicker, vbench.is_dynamic(top5, p), vbench.motion_smoothness(frames, flow_fn)


def evaluate_videos(videos: Tensor, *, fps: float = 8.0, estimator: Estimator = "dis", flow_size: int = 64,
                    subject_features: FeatureFn | None = None, background_features: FeatureFn | None = None,
                    feature_labels: Mapping[str, str] | None = None,
                    semantic: Mapping[str, float] | None = None) -> VBenchReport:
    """ALGORITHMS.md §10.2 on ``videos`` [B, F, 3, H, W] in [0, 1] (``fps`` of the clips). ``*_features``: per-frame
    feature functions (default :func:`pixel_features`), named in ``feature_labels`` {"subject"/"background": text}.
    Non-finite or out-of-range videos, or fewer than 3 frames, are an error naming the problem."""
    if not isinstance(videos, Tensor) or videos.ndim != 5 or videos.shape[2] != 3 or not videos.is_floating_point():
        raise VidtuneError(f"vbench: videos must be a float tensor [B, F, 3, H, W], got "
                           f"{tuple(videos.shape) if isinstance(videos, Tensor) else type(videos).__name__}")
    if videos.shape[0] == 0 or videos.shape[1] < 3:
        raise VidtuneError(f"vbench: need ≥ 1 video of ≥ 3 frames, got shape {tuple(videos.shape)}")
    if not torch.isfinite(videos).all() or videos.min() < -1e-3 or videos.max() > 1 + 1e-3:
        raise VidtuneError("vbench: videos must be finite with values in [0, 1] (decode latents / divide uint8 by 255)")
    labels = dict(feature_labels or {})
    feats = {"subject_consistency": subject_features or pixel_features,
             "background_consistency": background_features or pixel_features}
    rows = [_video_scores(v.detach().float().permute(0, 2, 3, 1).cpu().numpy(), fps, estimator, flow_size)
            for v in videos]
    per_video = {"temporal_flickering": torch.tensor([r[0] for r in rows], dtype=torch.float64),
                 "dynamic_degree": torch.tensor([float(r[1]) for r in rows], dtype=torch.float64),
                 "motion_smoothness": torch.tensor([r[2] for r in rows], dtype=torch.float64)}
    static = ~torch.isnan(per_video["temporal_flickering"])
    dims = {"temporal_flickering": float(per_video["temporal_flickering"][static].mean()) if static.any() else math.nan,
            "dynamic_degree": vbench.dynamic_degree([r[1] for r in rows]),
            "motion_smoothness": float(per_video["motion_smoothness"].mean())}
    for dim, fn in feats.items():
        frame_scores = [vbench.consistency_frame_scores(fn(v.detach().cpu())) for v in videos]
        per_video[dim] = torch.stack([s.double().mean() for s in frame_scores])
        dims[dim] = vbench.frame_weighted_dimension(frame_scores)
    flow_label = f"opencv-{estimator} flow at >= {flow_size} px"
    names = {"subject_consistency": "subject", "background_consistency": "background"}
    out_labels = {"temporal_flickering": f"static filter: {flow_label}", "dynamic_degree": flow_label,
                  "motion_smoothness": f"{flow_label}; weight-free interpolation stand-in (not comparable with "
                                       "published VBench numbers)"}
    out_labels |= {d: labels.get(names[d], PIXEL_LABEL if feats[d] is pixel_features else "caller-supplied features")
                   for d in feats}
    quality = {d: s for d, s in dims.items() if math.isfinite(s)}
    agg = vbench.vbench_aggregate(quality, dict(semantic or {}))
    counts = {"videos": int(videos.shape[0]), "static": int(static.sum()),
              "dynamic": int(per_video["dynamic_degree"].sum())}
    return VBenchReport(dims, per_video, agg, out_labels, counts)
