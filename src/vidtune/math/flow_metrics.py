"""Optical-flow evaluation metrics: EPE, >1px, >3px and KITTI F1-all (ALGORITHMS.md §10.3).

Flows are [..., 2, H, W] (channel 0 = u, 1 = v, pixel units); validity masks are [..., H, W] bool. Metrics are
pooled over all valid pixels of all frame pairs; a per-video mean is reported alongside. Rates are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from vidtune.math.numerics import to_compute


def endpoint_error(pred: Tensor, target: Tensor) -> Tensor:
    """ALGORITHMS.md §10.3, per-pixel error E(x) = ‖F̂(x) − F*(x)‖₂ (Euclidean norm over the channel dim −3).

    ``pred`` F̂, ``target`` F*: [..., 2, H, W] → E: [..., H, W]. Identical flows give E ≡ 0; the gradient of the
    norm at a zero error is 0 (torch's convention), never NaN.
    """
    return torch.linalg.vector_norm(pred - target, dim=-3)


class FlowMetrics(NamedTuple):
    """§10.3 metrics over a set of valid pixels (NaN when there is none)."""

    epe: float  # mean_x E(x), pixels
    over_1px: float  # % of pixels with E > 1
    over_3px: float  # % of pixels with E > 3
    f1_all: float  # % outliers: E > 3 AND E > 0.05·‖F*‖₂ (KITTI 2015); always ≤ over_3px
    n_pixels: int  # number of valid pixels


def _sums(pred: Tensor | np.ndarray, target: Tensor | np.ndarray, valid: Tensor | np.ndarray | None) -> np.ndarray:
    """[Σ E, #(E>1), #(E>3), #outliers, n] over the valid pixels (fp64 accumulation)."""
    p, t = to_compute(pred), to_compute(target)
    if p.shape != t.shape or p.ndim < 3 or p.shape[-3] != 2:
        raise ValueError(f"pred and target must both be [..., 2, H, W]; got {tuple(p.shape)} and {tuple(t.shape)}")
    t = t.to(p.dtype)
    err = endpoint_error(p, t).double()
    mag = torch.linalg.vector_norm(t, dim=-3).double()
    mask = torch.ones_like(err, dtype=torch.bool) if valid is None else torch.as_tensor(valid).bool().expand_as(err)
    err, mag = err[mask], mag[mask]
    outlier = (err > 3.0) & (err > 0.05 * mag)
    return np.array(
        [float(err.sum()), float((err > 1.0).sum()), float((err > 3.0).sum()), float(outlier.sum()), err.numel()],
        dtype=np.float64,
    )


def _from_sums(s: np.ndarray) -> FlowMetrics:
    """Metrics from the sums of :func:`_sums` (rates in percent; NaN without valid pixels)."""
    n = int(s[4])
    if n == 0:
        return FlowMetrics(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    return FlowMetrics(float(s[0] / n), *(float(100.0 * s[i] / n) for i in (1, 2, 3)), n)


def flow_metrics(
    pred: Tensor | np.ndarray, target: Tensor | np.ndarray, valid: Tensor | np.ndarray | None = None
) -> FlowMetrics:
    """ALGORITHMS.md §10.3, EPE / >1px / >3px / F1-all pooled over every valid pixel of ``pred`` vs ``target``.

    ``pred`` F̂, ``target`` F*: [..., 2, H, W] (torch or numpy); ``valid``: [..., H, W] bool broadcastable to the
    error map (None = all valid). Rates in percent. Limits: F̂ = F* gives all zeros; no valid pixel gives NaN
    with n_pixels = 0. Example: F* ≡ (3, 4), F̂ − F* ≡ (2, 0) → EPE 2, >1px 100, >3px 0, F1-all 0.
    """
    return _from_sums(_sums(pred, target, valid))


class FlowMetricsReport(NamedTuple):
    """Pooled §10.3 metrics of a test set, with the per-video mean reported alongside."""

    pooled: FlowMetrics  # over all valid pixels of all videos
    per_video_mean: FlowMetrics  # unweighted mean over videos with ≥ 1 valid pixel; n_pixels = total
    per_video: tuple[FlowMetrics, ...]  # one entry per video, input order


def flow_metrics_videos(
    preds: Sequence[Tensor | np.ndarray],
    targets: Sequence[Tensor | np.ndarray],
    valids: Sequence[Tensor | np.ndarray | None] | None = None,
) -> FlowMetricsReport:
    """ALGORITHMS.md §10.3, pooled and per-video flow metrics of a test set.

    ``preds[i]``, ``targets[i]``: [F_i − 1, 2, H, W] flows of video i; ``valids[i]``: [F_i − 1, H, W] bool or None.
    Pooled metrics weight every valid pixel equally (videos with more valid pixels weigh more); the per-video mean
    weighs every video equally and skips videos without a valid pixel (all-NaN when no video has one).
    """
    if len(preds) != len(targets) or (valids is not None and len(valids) != len(preds)):
        raise ValueError(f"got {len(preds)} predictions, {len(targets)} targets and "
                         f"{'no' if valids is None else len(valids)} masks; counts must match")
    masks = [None] * len(preds) if valids is None else list(valids)
    sums = [_sums(p, t, v) for p, t, v in zip(preds, targets, masks, strict=True)]
    total = np.sum(sums, axis=0) if sums else np.zeros(5)
    per_video = tuple(_from_sums(s) for s in sums)
    kept = [m for m in per_video if m.n_pixels > 0]
    if kept:
        mean = FlowMetrics(*(float(np.mean([m[i] for m in kept])) for i in range(4)), int(total[4]))
    else:
        mean = FlowMetrics(float("nan"), float("nan"), float("nan"), float("nan"), 0)
    return FlowMetricsReport(_from_sums(total), mean, per_video)
