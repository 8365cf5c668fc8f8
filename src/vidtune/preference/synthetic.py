"""Synthetic temporal negatives for Diffusion-DPO pairs (ALGORITHMS.md §8.2; Cheng et al. 2025, arXiv 2504.08542).

A good clip y_w (pixel video [F_px, 3, H, W], values in [0, 1]) is turned into a temporally corrupted y_l by a
frame re-indexing y_l[f] = y_w[src[f]]: ``reverse``, ``shuffle`` (within windows of L frames), ``freeze`` or
``stall``. Every draw uses the caller's ``torch.Generator``, so a negative is reproducible from its seed. For I2V
the conditioning frame 0 stays in place (``reverse`` is refused). A negative whose mean absolute difference to y_w
is below 2/255 (e.g. from a static clip) is rejected by raising :class:`RejectedNegative`; callers catch it and
count the rejection.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.errors import VidtuneError

NegativeKind = Literal["reverse", "shuffle", "freeze", "stall"]


class RejectedNegative(VidtuneError):
    """The negative is too close to the clip (mean |y_l − y_w| < threshold), typically because y_w is static."""

    def __init__(self, kind: str, mean_abs_diff: float, threshold: float) -> None:
        super().__init__(
            f"synthetic '{kind}' negative rejected: mean |y_l - y_w| = {mean_abs_diff:.5f} < {threshold:.5f} "
            "(static or near-static clip; use a clip that passes the dynamic-degree criterion)"
        )
        self.kind, self.mean_abs_diff, self.threshold = kind, mean_abs_diff, threshold


class TemporalNegative(NamedTuple):
    """A synthetic negative and how it was made."""

    video: Tensor  # [F_px, 3, H, W] y_l, same dtype/shape as y_w
    source_index: Tensor  # [F_px] int64, y_l[f] = y_w[source_index[f]]
    mean_abs_diff: float  # mean |y_l − y_w| over all elements


def _shuffle_index(n_frames: int, start: int, window: int, prob: float, generator: torch.Generator) -> Tensor:
    """§8.2 ``shuffle``: frames [start, F) split into consecutive windows of ``window`` frames (a trailing window
    of ≥ 2 frames counts, a trailing single frame is left alone); each window is chosen with probability ``prob``
    (at least one: if none is chosen one is drawn uniformly) and permuted by a uniformly drawn non-identity
    permutation (rejection sampling from randperm)."""
    bounds = [(a, min(a + window, n_frames)) for a in range(start, n_frames, window)]
    bounds = [(a, b) for a, b in bounds if b - a >= 2]
    if not bounds:
        raise ValueError(f"shuffle needs at least 2 permutable frames after frame {start}; clip has {n_frames}")
    chosen = (torch.rand(len(bounds), generator=generator) < prob).tolist()
    if not any(chosen):
        chosen[int(torch.randint(len(bounds), (1,), generator=generator))] = True
    src = torch.arange(n_frames)
    for (a, b), on in zip(bounds, chosen, strict=True):
        if on:
            perm = torch.randperm(b - a, generator=generator)
            while bool((perm == torch.arange(b - a)).all()):
                perm = torch.randperm(b - a, generator=generator)
            src[a:b] = a + perm
    return src


def temporal_negative_index(
    n_frames: int,
    kind: NegativeKind,
    generator: torch.Generator,
    *,
    i2v: bool = False,
    window: int = 4,
    shuffle_prob: float = 0.5,
    hold_fraction: float = 0.25,
) -> Tensor:
    """ALGORITHMS.md §8.2, synthetic temporal negatives as a frame index map src: [F_px] int64.

    ``reverse``: src[f] = F_px − 1 − f (T2V only). ``shuffle``: see :func:`_shuffle_index`, window L = ``window``,
    acting on frames ≥ 1 for I2V. ``freeze``: n_fr = ⌈``hold_fraction``·F_px⌉, f_0 ~ U{1, …, F_px − n_fr}; positions
    f_0 … f_0+n_fr−1 show frame f_0, then the clip continues at f_0+n_fr (src[f] = f). ``stall``: same hold, then
    continues from f_0+1 (src[f] = f − n_fr + 1), the tail truncated to F_px frames. "Hold for n_fr frames" counts
    the held frame itself, so the hold fits exactly when f_0 = F_px − n_fr. f_0 ≥ 1, so freeze/stall never touch
    frame 0 (I2V-safe). Limits: freeze/stall need n_fr ≥ 2 (F_px ≥ 5) to duplicate a frame.
    """
    match kind:
        case "reverse":
            if i2v:
                raise ValueError("the 'reverse' negative is T2V-only: it would move the I2V conditioning frame 0")
            return torch.arange(n_frames - 1, -1, -1)
        case "shuffle":
            return _shuffle_index(n_frames, 1 if i2v else 0, window, shuffle_prob, generator)
        case "freeze" | "stall":
            n_fr = math.ceil(hold_fraction * n_frames)
            if n_fr < 2 or n_frames - n_fr < 1:
                raise ValueError(f"'{kind}' needs a hold of >= 2 frames; {n_frames} frames give n_fr = {n_fr}")
            f0 = 1 + int(torch.randint(n_frames - n_fr, (1,), generator=generator))
            f = torch.arange(n_frames)
            after = f if kind == "freeze" else f - n_fr + 1
            return torch.where(f < f0, f, torch.where(f < f0 + n_fr, torch.full_like(f, f0), after))
    raise ValueError(f"unknown synthetic negative {kind!r}; expected reverse, shuffle, freeze or stall")


def temporal_negative(
    video: Tensor,
    kind: NegativeKind,
    generator: torch.Generator,
    *,
    i2v: bool = False,
    min_diff: float = 2.0 / 255.0,
    window: int = 4,
    shuffle_prob: float = 0.5,
    hold_fraction: float = 0.25,
) -> TemporalNegative:
    """ALGORITHMS.md §8.2, synthetic temporal negative y_l of a good clip y_w, in pixel space.

    ``video`` y_w: [F_px, 3, H, W] float in [0, 1]; returns y_l of the same shape and dtype with
    y_l[f] = y_w[src[f]] (:func:`temporal_negative_index`). Raises :class:`RejectedNegative` when
    mean |y_l − y_w| < ``min_diff`` (default 2/255), ValueError for a kind the clip or mode cannot support.
    reverse∘reverse is the identity; every kind preserves the shape; with ``i2v`` frame 0 is unchanged.
    """
    if video.ndim != 4:
        raise ValueError(f"video must be [F, 3, H, W], got shape {tuple(video.shape)}")
    src = temporal_negative_index(
        video.shape[0], kind, generator, i2v=i2v, window=window, shuffle_prob=shuffle_prob,
        hold_fraction=hold_fraction,
    )
    neg = video[src]
    diff = float((neg.double() - video.double()).abs().mean()) if video.numel() else 0.0
    if diff < min_diff:
        raise RejectedNegative(kind, diff, min_diff)
    return TemporalNegative(neg, src, diff)
