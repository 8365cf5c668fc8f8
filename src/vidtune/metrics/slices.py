"""Slice analysis: every per-sample metric broken down by prompt category and by seen vs held-out composition."""

from __future__ import annotations

import torch

from vidtune.math.intervals import mean_interval
from vidtune.world.grammar import Scene

CATEGORIES = ("colour", "camera", "physics", "count", "ordering")


def slice_masks(scenes: list[Scene]) -> dict[str, torch.Tensor]:
    """Bool masks [N] per slice: 'all', 'seen', 'heldout' and every prompt category."""
    masks = {"all": torch.ones(len(scenes), dtype=torch.bool),
             "seen": torch.tensor([not s.is_heldout for s in scenes]),
             "heldout": torch.tensor([s.is_heldout for s in scenes])}
    for c in CATEGORIES:
        masks[c] = torch.tensor([c in s.categories for s in scenes])
    return masks


def slice_table(metrics: dict[str, torch.Tensor], scenes: list[Scene]) -> dict[str, dict[str, dict]]:
    """{slice: {metric: {mean, low, high, n}}} for per-sample metric tensors [N] (NaN = not applicable)."""
    out: dict[str, dict[str, dict]] = {}
    for name, mask in slice_masks(scenes).items():
        out[name] = {m: mean_interval(v[mask])._asdict() for m, v in metrics.items()} if mask.any() else {}
    return out
