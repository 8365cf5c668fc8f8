"""The reduced clip a preference gradient is computed on (mixed resolution, ALGORITHMS.md §8; the TeleBoost report
trains DPO on shorter, lower-resolution clips than it generates to fit larger batches).

Winner and loser of a pair get the same view (the same window), as they share t and ε (§8.1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def window_starts(n: int, frames: int, window: int | None, generator: torch.Generator) -> torch.Tensor:
    """Start frame of each pair's temporal window, uniform over the valid starts {0, …, F − window} → [n] long."""
    if window is None or window >= frames:
        return torch.zeros(n, dtype=torch.long)
    return torch.randint(frames - window + 1, (n,), generator=generator)


def clip_view(x: torch.Tensor, starts: torch.Tensor, window: int | None, downsample: int) -> torch.Tensor:
    """x [N, C, F, H, W] → [N, C, W_t, H/k, W/k]: frames [s_i, s_i + W_t) of row i, then k×k average pooling of each
    frame (k = ``downsample``). ``window=None`` keeps all frames, k = 1 keeps the resolution (identity)."""
    n, _, f, h, w = x.shape
    if downsample < 1 or h % downsample or w % downsample:
        raise ValueError(f"downsample {downsample} must be ≥ 1 and divide the clip size {h}x{w}")
    if window is not None and window < f:
        idx = starts.view(n, 1) + torch.arange(window).view(1, window)  # [N, W_t]
        x = torch.stack([x[i, :, idx[i]] for i in range(n)])
    if downsample > 1:
        x = F.avg_pool3d(x, kernel_size=(1, downsample, downsample))
    return x
