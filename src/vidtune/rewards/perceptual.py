"""Perceptual critics usable as gates (DESIGN.md §3, judge 4; gates ALGORITHMS.md §6.4): sharpness, noise, saturation.

Each measures one statistic q of a clip (mean over frames) and maps it to a score in [0, 1], higher = better, that
is exactly 0.5 at the configured threshold, so the pass predicate is ``score ≥ 0.5`` (``RewardOutput.gate_failed`` =
not passed; a non-finite score fails). Statistics on clean rendered ShapeWorld clips (400 clips, 32 px) and what each
threshold catches:

- sharpness: Laplacian variance of the 8-bit grey frame (Pech-Pacheco et al. 2000); clean min 5.0, 1 % 10.7, median
  85. score = q / (q + q_min), q_min = 2.0. It catches blank and washed-out frames; because it depends on content
  (a small object on a smooth background has little edge energy) it cannot tell mild blur (σ = 1: median 10.6) from
  sparse content.
- noise: σ̂ per channel, Immerkær's estimator (1996) made robust: σ̂ = median|I ∗ N| / (6·0.6745) with
  N = [[1, −2, 1], [−2, 4, −2], [1, −2, 1]] (for white Gaussian noise I ∗ N ~ N(0, 36σ²), so σ̂ → σ; edges touch few
  pixels and barely move the median). Clean ≈ 0 (8-bit rounding: 0.001); score = 1 / (1 + q/q_max), q_max = 0.03.
- saturation: share of values within 1/255 of 0 or 1 (clipping); clean 0; score = 1 / (1 + q/q_max), q_max = 0.05.
"""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch

from vidtune.errors import VidtuneError
from vidtune.rewards.base import register
from vidtune.rewards.temporal import score_batch
from vidtune.types import RewardOutput

Kind = Literal["sharpness", "noise", "saturation"]
IMMERKAER = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def laplacian_variance(frames: np.ndarray) -> float:
    """Mean over frames of Var(∇²I), I the 8-bit-scaled grey frame; ``frames`` [F, H, W, 3] in [0, 1]."""
    grey = [cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2GRAY) * 255.0 for f in frames]
    return float(np.mean([cv2.Laplacian(g, cv2.CV_32F).var() for g in grey]))


def noise_sigma(frames: np.ndarray) -> float:
    """Robust Immerkær noise σ̂ (module doc) averaged over frames and channels, in [0, 1] pixel units; interior
    pixels only (frames ≥ 3×3)."""
    sig = [np.median(np.abs(cv2.filter2D(f[..., c].astype(np.float32), -1, IMMERKAER)[1:-1, 1:-1])) / (6 * 0.6745)
           for f in frames for c in range(f.shape[-1])]
    return float(np.mean(sig))


def clipped_fraction(frames: np.ndarray, eps: float = 1.0 / 255.0) -> float:
    """Share of pixel values ≤ eps or ≥ 1 − eps."""
    return float(((frames <= eps) | (frames >= 1.0 - eps)).mean())


class PerceptualGate:
    """One perceptual critic (``kind``) with its threshold; see the module doc for the score maps."""

    range = (0.0, 1.0)
    is_gate = True

    def __init__(self, kind: Kind, threshold: float):
        if not (math.isfinite(threshold) and threshold > 0):
            raise VidtuneError(f"{kind}: threshold must be a positive number, got {threshold!r}")
        self.name, self.kind, self.threshold = kind, kind, threshold

    def clip(self, x: np.ndarray, prompt: str):
        match self.kind:
            case "sharpness":
                q = laplacian_variance(x)
                s = q / (q + self.threshold)
            case "noise":
                q = noise_sigma(x)
                s = 1.0 / (1.0 + q / self.threshold)
            case "saturation":
                q = clipped_fraction(x)
                s = 1.0 / (1.0 + q / self.threshold)
            case _:
                raise VidtuneError(f"unknown perceptual critic {self.kind!r}; expected sharpness, noise or saturation")
        return s, {self.kind: q}, {}

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        out = score_batch(self.name, videos, prompts, self.clip)
        out.gate_failed = ~(out.scores >= 0.5)
        return out


@register("sharpness")
def sharpness(min_variance: float = 2.0) -> PerceptualGate:
    """Sharpness gate: passes iff the mean Laplacian variance (8-bit grey) ≥ ``min_variance``."""
    return PerceptualGate("sharpness", min_variance)


@register("noise")
def noise(max_sigma: float = 0.03) -> PerceptualGate:
    """Noise gate: passes iff the robust Immerkær σ̂ ≤ ``max_sigma`` (pixel units in [0, 1])."""
    return PerceptualGate("noise", max_sigma)


@register("saturation")
def saturation(max_fraction: float = 0.05) -> PerceptualGate:
    """Saturation gate: passes iff the share of clipped values (within 1/255 of 0 or 1) ≤ ``max_fraction``."""
    return PerceptualGate("saturation", max_fraction)
