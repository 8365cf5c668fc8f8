"""Dense optical flow with OpenCV (no downloaded weights): DIS or Farnebäck, on [T, 3, H, W] videos in [0, 1].

The estimator name is recorded with every number computed from it (ALGORITHMS.md §10.2, "Flow estimator").
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
import torch

Estimator = Literal["dis", "farneback"]


def _gray(frame: np.ndarray) -> np.ndarray:
    """[H, W, 3] float in [0, 1] → uint8 grayscale."""
    return cv2.cvtColor((np.clip(frame, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2GRAY)


def _dis(size: int):
    d = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    if size <= 64:  # small frames need small patches (ENVIRONMENT.md §6)
        d.setPatchSize(4)
        d.setPatchStride(2)
    return d


def flow_pair(a: np.ndarray, b: np.ndarray, estimator: Estimator = "dis", _dis_obj=None) -> np.ndarray:
    """Forward flow from frame a to b → [2, H, W] float32 (dx, dy): a(p) ≈ b(p + F(p))."""
    ga, gb = _gray(a), _gray(b)
    match estimator:
        case "dis":
            f = (_dis_obj or _dis(min(ga.shape))).calc(ga, gb, None)
        case "farneback":
            f = cv2.calcOpticalFlowFarneback(ga, gb, None, 0.5, 3, 9, 3, 5, 1.1, 0)
        case _:
            raise ValueError(f"unknown flow estimator {estimator!r}")
    return np.ascontiguousarray(f.transpose(2, 0, 1).astype(np.float32))


def video_flow(video: torch.Tensor | np.ndarray, estimator: Estimator = "dis") -> np.ndarray:
    """Flows between consecutive frames of one video → [T−1, 2, H, W]. ``video``: [T, 3, H, W] tensor in [0, 1]
    or [T, H, W, 3] array."""
    frames = video.detach().float().permute(0, 2, 3, 1).cpu().numpy() if isinstance(video, torch.Tensor) else video
    dis = _dis(min(frames.shape[1:3])) if estimator == "dis" else None
    return np.stack([flow_pair(frames[i], frames[i + 1], estimator, dis) for i in range(len(frames) - 1)])
