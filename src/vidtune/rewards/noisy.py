"""A deliberately unreliable reward, for the reward-noise experiment of the GRPO stack (BPGO's motivating case,
ALGORITHMS.md §3): on a slice of prompts the base reward's score is corrupted with Gaussian noise, elsewhere it is
passed through unchanged.

The slice is the prompts containing any of ``words`` (e.g. ``["pans"]`` for camera moves) or, with ``fraction``, a
stable pseudo-random share of all prompts (CRC32 of the prompt text, so the same prompt is always in or out). The
noise is drawn from the reward's own generator (seeded), so a run is reproducible; scores are clamped back to the
base reward's range.
"""

from __future__ import annotations

import zlib
from typing import Any

import torch

from vidtune.errors import VidtuneError
from vidtune.rewards.base import build_reward, register
from vidtune.types import RewardOutput


def in_noisy_slice(prompt: str, words: tuple[str, ...], fraction: float) -> bool:
    """Whether ``prompt`` is in the corrupted slice: it contains one of ``words`` (whole words), or its CRC32 falls
    in the first ``fraction`` of the 32-bit range."""
    if words:
        return bool(set(prompt.split()) & set(words))
    return zlib.crc32(prompt.encode()) < fraction * 2**32


@register("noisy")
class NoisyReward:
    """``base`` reward (registered name and ``base_kwargs``) with N(0, std²) added on the noisy slice."""

    def __init__(self, base: str = "verifier", base_kwargs: dict | None = None, std: float = 0.3,
                 words: list[str] | None = None, fraction: float = 0.5, seed: int = 0):
        if std < 0:
            raise VidtuneError(f"noisy: std must be ≥ 0, got {std}")
        if not 0 <= fraction <= 1:
            raise VidtuneError(f"noisy: fraction must be in [0, 1], got {fraction}")
        self.base = build_reward(base, **(base_kwargs or {}))
        self.name, self.range = f"noisy_{self.base.name}", self.base.range
        self.std, self.words, self.fraction = std, tuple(words or ()), fraction
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput:
        out = self.base(videos, prompts, **context)
        hit = torch.tensor([in_noisy_slice(p, self.words, self.fraction) for p in prompts])
        noise = torch.randn(len(prompts), generator=self.generator, dtype=torch.float64).to(out.scores.dtype)
        lo, hi = self.range
        scores = torch.where(hit, (out.scores + self.std * noise).clamp(lo, hi), out.scores)
        details = [{**(out.details[i] if i < len(out.details) else {}), "noisy": bool(hit[i])}
                   for i in range(len(prompts))]
        return RewardOutput(scores=scores, components=out.components, maps=out.maps, gate_failed=out.gate_failed,
                            details=details)
