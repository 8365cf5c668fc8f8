"""Inference-time alignment by best-of-N: draw N candidates per request (distinct seeds) and keep the one the
reward ranks highest — the simplest method of the inference-time family, with cost N× sampling + N reward calls."""

from __future__ import annotations

from typing import NamedTuple

import torch

from vidtune.sampling.ode import generate


class BestOfN(NamedTuple):
    videos: torch.Tensor  # [R, F, 3, H, W] the chosen candidate per request
    scores: torch.Tensor  # [R] its reward
    all_scores: torch.Tensor  # [R, N] every candidate's reward (NaN ranks last)


def best_of_n(policy, prompts: list[str], seeds: list[int], n: int, reward, *, steps: int, shift: float,
              guidance: float, batch_size: int = 16) -> BestOfN:
    """Request r uses seeds ``seeds[r]·1000 + k`` for k < n, so best-of-1 is a fixed, reproducible baseline and
    best-of-N always contains it (the gain is monotone in N for a fixed reward)."""
    if n < 1:
        raise ValueError(f"best-of-N needs n >= 1, got {n}")
    flat_p = [p for p in prompts for _ in range(n)]
    flat_s = [s * 1000 + k for s in seeds for k in range(n)]
    vids = generate(policy, flat_p, flat_s, steps=steps, shift=shift, guidance=guidance, batch_size=batch_size)
    scores = reward(vids, flat_p).scores.float().view(len(prompts), n)
    best = torch.nan_to_num(scores, nan=-float("inf")).argmax(1)
    chosen = vids.view(len(prompts), n, *vids.shape[1:])[torch.arange(len(prompts)), best]
    return BestOfN(chosen, scores[torch.arange(len(prompts)), best], scores)
