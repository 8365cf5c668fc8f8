"""VBench-style dimensions without large models: the pure parts (ALGORITHMS.md §10.2; Huang et al. 2024).

Frames are float in [0, 255], [F_px, C, H, W]; flows are [..., 2, H, W] in pixels (channel 0 = u, 1 = v). Flow
estimation and feature extraction happen elsewhere; these functions take their outputs (or, for motion
smoothness, a flow function). "round" is Python's round (half to even), as in VBench's reference code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtune.math.numerics import to_compute


def pair_mae(frames: Tensor) -> Tensor:
    """ALGORITHMS.md §10.2: MAE_f = mean |I_f − I_{f+1}| over pixels and channels, [F_px, ...] → [F_px − 1]."""
    x = to_compute(frames)
    return (x[1:] - x[:-1]).abs().flatten(1).mean(1)


def temporal_flickering(frames: Tensor) -> float:
    """ALGORITHMS.md §10.2, temporal flickering (exact VBench definition): score = (255 − mean_f MAE_f)/255 with
    MAE_f of :func:`pair_mae`. ``frames``: [F_px, ...] in [0, 255]. Apply only to static videos
    (:func:`is_static`). Constant clip → 1; frames alternating 0/255 → 0; F_px < 2 → NaN."""
    if torch.as_tensor(frames).shape[0] < 2:
        return math.nan
    return float((255.0 - pair_mae(frames).mean()) / 255.0)


def top_flow_magnitude(flow: Tensor, fraction: float) -> Tensor:
    """ALGORITHMS.md §10.2, per-pair motion score: mean of the top ``fraction`` of flow magnitudes √(u² + v²).
    ``flow``: [..., 2, H, W] → [...]. The count is ⌊fraction·H·W⌋ as in VBench, but at least 1 pixel.
    ``fraction`` = 0.02 for the static filter, 0.05 for dynamic degree."""
    mag = torch.linalg.vector_norm(to_compute(flow), dim=-3).flatten(-2)
    k = max(1, math.floor(fraction * mag.shape[-1]))
    return mag.topk(k, dim=-1).values.mean(-1)


def is_static(pair_scores: Tensor, wrap_scores: Tensor, height: int, width: int) -> bool:
    """ALGORITHMS.md §10.2, static filter. ``pair_scores``: [F_px − 1] top-2 % scores of consecutive pairs;
    ``wrap_scores``: [2] scores of the wrap-around pairs (first→last, last→first); (``height``, ``width``) = frame
    size. thr = 3·min(H_px, W_px)/256, n_c = round(2·F_px/16); static iff at most n_c pairs exceed thr and both
    wrap-around scores are ≤ thr·n_c·2 (n_c before any counting)."""
    n_frames = int(torch.as_tensor(pair_scores).numel()) + 1
    thr = 3.0 * min(height, width) / 256.0
    n_c = round(2 * n_frames / 16)
    n_exceed = int((to_compute(pair_scores) > thr).sum())
    return n_exceed <= n_c and bool((to_compute(wrap_scores) <= thr * n_c * 2).all())


class DynamicParams(NamedTuple):
    """Frame sampling and decision parameters of the dynamic-degree dimension."""

    interval: int  # sample every ``interval``-th frame: max(1, round(fps/8))
    n_sampled: int  # n = ⌈F_px / interval⌉ sampled frames
    threshold: float  # thr = 6·max(1, 8/fps)·min(H_px, W_px)/256
    count: int  # dynamic iff ≥ count sampled pairs exceed thr: max(1, round(4·n/16))


def dynamic_degree_params(height: int, width: int, fps: float, n_frames: int) -> DynamicParams:
    """ALGORITHMS.md §10.2, dynamic-degree parameters for a clip of ``n_frames`` frames of ``height``×``width`` at
    the original clip's ``fps``. Example 480×832, 16 fps, 81 frames: interval 2, n 41, thr 6·480/256 = 11.25,
    count round(4·41/16) = round(10.25) = 10. The count is at least 1 (our choice: a clip with no moving pair is
    never dynamic, where round(4n/16) = 0 would make every clip of ≤ 2 sampled frames dynamic)."""
    interval = max(1, round(fps / 8))
    n = math.ceil(n_frames / interval)
    threshold = 6.0 * max(1.0, 8.0 / fps) * min(height, width) / 256.0
    return DynamicParams(interval, n, threshold, max(1, round(4 * n / 16)))


def is_dynamic(pair_scores: Tensor, params: DynamicParams) -> bool:
    """ALGORITHMS.md §10.2, dynamic-degree decision: ``pair_scores`` [n − 1] top-5 % flow magnitudes of consecutive
    sampled pairs; dynamic iff at least ``params.count`` of them exceed ``params.threshold``."""
    return int((to_compute(pair_scores) > params.threshold).sum()) >= params.count


def dynamic_degree(flags: Sequence[bool]) -> float:
    """ALGORITHMS.md §10.2, the dimension: fraction of dynamic videos (NaN for no video)."""
    return sum(map(bool, flags)) / len(flags) if len(flags) else math.nan


def backward_warp(image: Tensor, flow: Tensor) -> Tensor:
    """Bilinear backward warping: out(x) = image(x + flow(x)), border replicated (align_corners grid).
    ``image``: [..., C, H, W]; ``flow``: [..., 2, H, W] in pixels (u along W, v along H) → [..., C, H, W].
    Zero flow is the identity; an integer flow shifts exactly away from the border."""
    img, fl = to_compute(image), to_compute(flow)
    c, h, w = img.shape[-3:]
    lead = torch.broadcast_shapes(img.shape[:-3], fl.shape[:-3])
    img = img.expand(*lead, c, h, w).reshape(-1, c, h, w)
    fl = fl.to(img.dtype).expand(*lead, 2, h, w).reshape(-1, 2, h, w)
    ys, xs = torch.meshgrid(torch.arange(h, dtype=img.dtype), torch.arange(w, dtype=img.dtype), indexing="ij")
    gx = 2.0 * (xs + fl[:, 0]) / max(w - 1, 1) - 1.0
    gy = 2.0 * (ys + fl[:, 1]) / max(h - 1, 1) - 1.0
    out = F.grid_sample(img, torch.stack([gx, gy], -1), mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(*lead, c, h, w)


def motion_smoothness(frames: Tensor, flow_fn: Callable[[Tensor, Tensor], Tensor]) -> float:
    """ALGORITHMS.md §10.2, weight-free motion smoothness (not comparable with published VBench numbers).

    ``frames`` I: [F_px, C, H, W] in [0, 255]; ``flow_fn(a, b)`` → [2, H, W] flow from a to b. With E_i = I_{2i},
    F_{m→0} = −¼F_{0→1} + ¼F_{1→0}, F_{m→1} = ¼F_{0→1} − ¼F_{1→0} (Jiang et al. 2018),
    Î_i = ½(warp(E_i, F_{m→0}) + warp(E_{i+1}, F_{m→1})); score = (255 − mean_i mean|Î_i − I_{2i+1}|)/255.
    Constant clip → 1; F_px < 3 (no odd frame between two even frames) → NaN.
    """
    x = to_compute(frames)
    errors = []
    for i in range((x.shape[0] - 1) // 2):
        e0, e1 = x[2 * i], x[2 * i + 2]
        f01, f10 = to_compute(flow_fn(e0, e1)), to_compute(flow_fn(e1, e0))
        mid = 0.5 * (backward_warp(e0, 0.25 * (f10 - f01)) + backward_warp(e1, 0.25 * (f01 - f10)))
        errors.append((mid - x[2 * i + 1]).abs().mean())
    return float((255.0 - torch.stack(errors).mean()) / 255.0) if errors else math.nan


def consistency_frame_scores(features: Tensor) -> Tensor:
    """ALGORITHMS.md §10.2, subject/background consistency per frame: φ_f L2-normalised, for f ≥ 1
    s_f = ½(max(0, cos(φ_{f−1}, φ_f)) + max(0, cos(φ_0, φ_f))). ``features``: [F_px, D] → [F_px − 1].
    Identical frames → s ≡ 1; a zero feature vector has cosine 0 with everything."""
    phi = F.normalize(to_compute(features), dim=-1)
    prev = (phi[:-1] * phi[1:]).sum(-1).clamp(min=0)
    first = (phi[:1] * phi[1:]).sum(-1).clamp(min=0)
    return 0.5 * (prev + first)


def frame_weighted_dimension(frame_scores: Sequence[Tensor]) -> float:
    """ALGORITHMS.md §10.2, frame-weighted dimension: Σ_videos Σ_f s_f / Σ_videos (F_px − 1).
    ``frame_scores[v]``: [F_v − 1] from :func:`consistency_frame_scores`. No frame pair at all → NaN."""
    total = sum(float(to_compute(s).sum()) for s in frame_scores)
    count = sum(int(torch.as_tensor(s).numel()) for s in frame_scores)
    return total / count if count else math.nan


# (Min_d, Max_d, weight_d) of the quality dimensions (VBench's normalisation table)
NORMALISATION: dict[str, tuple[float, float, float]] = {
    "subject_consistency": (0.1462, 1.0, 1.0),
    "background_consistency": (0.2615, 1.0, 1.0),
    "temporal_flickering": (0.6293, 1.0, 1.0),
    "motion_smoothness": (0.706, 0.9975, 1.0),
    "dynamic_degree": (0.0, 1.0, 0.5),
    "aesthetic_quality": (0.0, 1.0, 1.0),
    "imaging_quality": (0.0, 1.0, 1.0),
}


def total_score(quality: float, semantic: float) -> float:
    """ALGORITHMS.md §10.2, Total = (4·Quality + Semantic)/5. Check: (4·83.15 + 65.31)/5 = 397.91/5 = 79.582."""
    return (4.0 * quality + semantic) / 5.0


class VBenchAggregate(NamedTuple):
    """Aggregates of §10.2 and the dimensions that entered each."""

    quality: float  # Σ norm_d / Σ weight_d over the given quality dimensions (NaN if none)
    semantic: float  # mean of the given semantic dimensions (NaN if none)
    total: float  # (4·Quality + Semantic)/5 (NaN if either is NaN)
    quality_dimensions: tuple[str, ...]
    semantic_dimensions: tuple[str, ...]


def vbench_aggregate(quality_scores: Mapping[str, float], semantic_scores: Mapping[str, float]) -> VBenchAggregate:
    """ALGORITHMS.md §10.2, aggregation: norm_d = (score_d − Min_d)/(Max_d − Min_d)·weight_d with
    :data:`NORMALISATION`; Quality = Σ norm_d / Σ weight_d over the quality dimensions given; Semantic = mean of the
    semantic scores given (the embedded world supplies its own). Scores are fractions in [0, 1] (Quality and
    Semantic come out on the same scale). Unknown quality dimension names are an error."""
    unknown = sorted(set(quality_scores) - set(NORMALISATION))
    if unknown:
        raise ValueError(f"unknown quality dimension(s) {unknown}; known: {sorted(NORMALISATION)}")
    q_dims = tuple(d for d in NORMALISATION if d in quality_scores)
    num = sum((quality_scores[d] - lo) / (hi - lo) * w for d, (lo, hi, w) in NORMALISATION.items() if d in q_dims)
    den = sum(NORMALISATION[d][2] for d in q_dims)
    quality = num / den if den else math.nan
    s_dims = tuple(semantic_scores)
    semantic = sum(semantic_scores.values()) / len(s_dims) if s_dims else math.nan
    return VBenchAggregate(quality, semantic, total_score(quality, semantic), q_dims, s_dims)
