"""Pair construction (ALGORITHMS.md §8.2): on-policy hard negatives and synthetic temporal negatives.

Both take plain callables for the judges, so the same code ranks the tiny model's clips with the ShapeWorld
critics and a Wan model's clips with VLM judges: ``quality_heads(videos, prompts) → [B, K]`` (the perceptual and
temporal heads, each in [0, 1]; NaN where a head does not apply), ``semantic(videos, prompts) → [B]`` (text
alignment) and ``embed(videos) → [B, D]`` (a video embedding for semantic agreement). The heads are normalised
over the whole candidate pool (:func:`pool_quality`) before pairs are formed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from vidtune.errors import VidtuneError
from vidtune.preference.pairs import PreferencePair
from vidtune.preference.synthetic import RejectedNegative, temporal_negative


def pool_quality(heads: torch.Tensor, min_spread: float = 0.05) -> torch.Tensor:
    """Q of ALGORITHMS.md §8.2, "the mean of the normalised perceptual and temporal heads", over a candidate pool.

    Each head (column of ``heads`` [N, K], values in [0, 1]) is min–max normalised over the pool's finite values,
    ĥ_k = (h_k − min h_k) / max(max h_k − min h_k, min_spread), so the 0.1 quality gap means a tenth of the spread
    the policy actually shows on that head, while a head that hardly varies (spread below ``min_spread``, e.g. two
    candidates differing by rounding) cannot turn noise into a gap; a head constant over the pool ranks nothing and
    is left out. Q_i is the mean of candidate i's finite ĥ_k (NaN where it has none). Raw heads saturate on a good
    policy (the ShapeWorld heads span 0.94–1.00), where no raw gap reaches 0.1."""
    h = heads.float()
    finite = torch.isfinite(h)
    lo = torch.where(finite, h, torch.inf).amin(0)
    hi = torch.where(finite, h, -torch.inf).amax(0)
    spread = hi - lo
    used = torch.isfinite(spread) & (spread > 0)
    norm = (h - lo) / torch.where(used, spread.clamp(min=min_spread), torch.ones_like(spread))
    ok = finite & used
    n = ok.sum(1)
    q = torch.where(ok, norm, torch.zeros_like(norm)).sum(1) / n.clamp(min=1)
    return torch.where(n > 0, q, torch.full_like(q, float("nan")))


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


def dynamic_sources(prompts: list[str], videos: list[torch.Tensor], dynamic: torch.Tensor
                    ) -> tuple[list[str], list[torch.Tensor], int]:
    """§8.2 source filter of synthetic negatives: only clips that are dynamic by the §10.2 dynamic-degree criterion
    (``dynamic`` [N] bool, one flag per clip) may serve as y_w, since a static clip's reversed, shuffled or frozen copy
    is ≈ y_w. Returns the kept prompts and clips and the number of static clips dropped."""
    if len(dynamic) != len(videos) or len(prompts) != len(videos):
        raise ValueError(f"dynamic_sources: {len(prompts)} prompts, {len(videos)} clips, {len(dynamic)} flags")
    keep = [i for i, d in enumerate(dynamic.tolist()) if d]
    return [prompts[i] for i in keep], [videos[i] for i in keep], len(videos) - len(keep)


def synthetic_pairs(prompts: list[str], videos: torch.Tensor, kinds: tuple[str, ...], generator: torch.Generator,
                    i2v: bool = False) -> tuple[list[PreferencePair], dict[str, int]]:
    """One negative per (good clip, kind): the clip is the winner, its temporally corrupted copy the loser.
    Negatives too close to the original (< 2/255 mean difference) are rejected and counted."""
    short = [k for k in kinds if k in ("freeze", "stall")]
    if short and len(videos) and videos.shape[1] < 5:
        raise VidtuneError(f"dpo.pairs.synthetic: {short} hold a frame for ⌈0.25·F⌉ ≥ 2 frames, which needs clips of "
                           f"at least 5 frames; these have {videos.shape[1]}: drop them from the list")
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
