"""Pair construction (ALGORITHMS.md §8.2): on-policy hard negatives and synthetic temporal negatives.

Both take plain callables for the judges, so the same code ranks the tiny model's clips with the ShapeWorld
critics and a Wan model's clips with VLM judges: ``quality(videos, prompts) → [B]`` (mean of the normalised
perceptual and temporal heads, in [0, 1]), ``semantic(videos, prompts) → [B]`` (text alignment) and
``embed(videos) → [B, D]`` (a video embedding for semantic agreement).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtune.preference.pairs import PreferencePair
from vidtune.preference.synthetic import RejectedNegative, temporal_negative


def hard_negative_pairs(prompt: str, videos: torch.Tensor, quality: torch.Tensor, semantic: torch.Tensor,
                        emb: torch.Tensor, gate_ok: torch.Tensor, *, sem_tol: float = 0.05, cos_min: float = 0.9,
                        q_gap: float = 0.1, max_pairs: int = 2) -> list[PreferencePair]:
    """Disjoint pairs (a, b) of one prompt's candidates with |Sem_a − Sem_b| ≤ sem_tol, cos(e_a, e_b) ≥ cos_min
    (high semantic agreement) and Q_a − Q_b ≥ q_gap (large quality gap), both passing the gates; greedily by
    decreasing gap, at most ``max_pairs``."""
    e = F.normalize(emb.float(), dim=-1)
    cands = []
    n = len(videos)
    for a in range(n):
        for b in range(n):
            gap = float(quality[a] - quality[b])
            if (a != b and gate_ok[a] and gate_ok[b] and gap >= q_gap
                    and abs(float(semantic[a] - semantic[b])) <= sem_tol and float(e[a] @ e[b]) >= cos_min):
                cands.append((gap, a, b))
    used, pairs = set(), []
    for gap, a, b in sorted(cands, reverse=True):
        if a in used or b in used:
            continue
        used |= {a, b}
        pairs.append(PreferencePair(prompt, videos[a], videos[b], 1.0, "on_policy", gap))
        if len(pairs) == max_pairs:
            break
    return pairs


def synthetic_pairs(prompts: list[str], videos: torch.Tensor, kinds: tuple[str, ...], generator: torch.Generator,
                    i2v: bool = False) -> tuple[list[PreferencePair], dict[str, int]]:
    """One negative per (good clip, kind): the clip is the winner, its temporally corrupted copy the loser.
    Negatives too close to the original (< 2/255 mean difference) are rejected and counted."""
    pairs, rejected = [], {k: 0 for k in kinds}
    for prompt, video in zip(prompts, videos):
        for kind in kinds:
            if kind == "reverse" and i2v:
                continue
            try:
                neg = temporal_negative(video, kind, generator, i2v=i2v)
            except RejectedNegative:
                rejected[kind] += 1
                continue
            pairs.append(PreferencePair(prompt, video, neg.video, 1.0, f"synthetic/{kind}"))
    return pairs, rejected
