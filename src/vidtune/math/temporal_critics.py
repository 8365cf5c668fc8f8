"""The frame-difference temporal critics (ALGORITHMS.md §10.2, DESIGN.md §3 judge 3) as pure functions of pixels:
freeze/stall and motion-compensated flickering. Flow estimation and the dynamic flag stay in rewards/temporal.py."""

from __future__ import annotations

import torch
from torch import Tensor

from vidtune.math.vbench import pair_mae


def freeze_score(frames: Tensor, ratio: float, moving: bool) -> tuple[float, int]:
    """Freeze/stall critic: e_f = mean |I_f − I_{f+1}| (:func:`pair_mae`, frames in [0, 255]) / 255, ref = ρ·Q_0.75(e)
    (ρ = ``ratio``, floored at 1e-12), s_f = min(1, e_f/ref); score = mean_f s_f if the clip moves, else 1. Also
    returns the count of frozen pairs, e_f < ref/2 (0 for a still clip)."""
    e = pair_mae(frames).double() / 255
    if not moving:
        return 1.0, 0
    ref = ratio * max(float(torch.quantile(e, 0.75)), 1e-12)
    return float(torch.clamp(e / ref, max=1.0).mean()), int((e < ref / 2).sum())


def warped_flickering(frames: Tensor, warped: Tensor) -> float:
    """Motion-compensated temporal flickering: (255 − mean_f mean |I_{f+1} − W_f|)/255 with W_f = warp(I_f, F_{f+1→f})
    ([F − 1, ...], frames [F, ...] in [0, 255]). With W_f = I_f it is VBench's temporal flickering."""
    return float((255.0 - (frames[1:] - warped).abs().mean()) / 255.0)
