"""The learned video–text scorer as a reward (DESIGN.md §3, judge 2) and as the frozen feature extractor of ViPO maps
and consistency metrics (ALGORITHMS.md §4, feature extractor contract).

Score mapping: with v, t the L2-normalised video and text embeddings and cos = v·t ∈ [−1, 1],

    score = (1 + cos) / 2      ∈ [0, 1]

an affine, monotone map, so candidates rank exactly as under the InfoNCE logit s·cos the scorer was trained with;
it never saturates (a sigmoid of s·cos with s ≈ 30–100 would), and 0.5 means orthogonal (no evidence). The raw
cosine is reported as component ``cosine``. A clip with non-finite pixels gets a NaN score and
``details[b]["invalid"]`` (rewards/base.py). Training added noised clips as negatives of every caption, so unclean
frames lower the score.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from vidtune.errors import VidtuneError
from vidtune.rewards.base import check_inputs, register
from vidtune.rewards.scorer_model import VideoTextScorer, load_scorer
from vidtune.types import RewardOutput


class ScorerFeatures(NamedTuple):
    features: torch.Tensor  # [B, F_f, h, w, D] patch features, no class token (F_f = F: one per pixel frame)
    frame_cover: list[list[int]]  # frame_cover[τ] = the pixel frames feature time τ covers ([τ] here)


@register("scorer")
class LearnedScorer:
    """Reward ``(1 + cos)/2`` of a frozen :class:`VideoTextScorer` (``model``: a folder or ``builtin:scorer``)."""

    name = "scorer"
    range = (0.0, 1.0)

    def __init__(self, model: str | VideoTextScorer = "builtin:scorer", batch_size: int = 64, device: str = "cpu"):
        if batch_size < 1:
            raise VidtuneError(f"scorer: batch_size must be ≥ 1, got {batch_size}")
        net = model if isinstance(model, VideoTextScorer) else load_scorer(model)
        self.model = net.to(device).eval().requires_grad_(False)
        self.batch_size = batch_size
        self.device = torch.device(device)

    def _check(self, videos: torch.Tensor, what: str) -> None:
        if not isinstance(videos, torch.Tensor) or not videos.is_floating_point():
            got = videos.dtype if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise VidtuneError(f"{self.name}.{what}: videos must be a float tensor in [0, 1], got {got}")
        self.model.check_videos(videos)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        self._check(videos, "__call__")
        self.model.tokenizer(list(prompts))  # unknown words / too long prompts: an error naming the prompt
        cos = torch.full((len(prompts),), float("nan"))
        rows = finite.nonzero().flatten().tolist()
        with torch.no_grad():
            for lo in range(0, len(rows), self.batch_size):
                r = rows[lo: lo + self.batch_size]
                cos[r] = self.model.similarity(videos[r].to(self.device), [prompts[i] for i in r]).float().cpu()
        details = [{"cosine": float(c)} if ok else {"invalid": "non-finite pixels"} for c, ok in zip(cos, finite)]
        return RewardOutput(scores=(1 + cos) / 2, components={"cosine": cos}, details=details)

    @torch.no_grad()
    def features(self, videos: torch.Tensor) -> ScorerFeatures:
        """Frozen patch features [B, F, h, w, D] of videos [B, F, 3, H, W] in [0, 1] and each feature time's pixel
        frames. Non-finite pixels give non-finite features (the ViPO map then falls back to M ≡ 1)."""
        self._check(videos, "features")
        feats = [self.model.encode_video(videos[lo: lo + self.batch_size].to(self.device)).features.float().cpu()
                 for lo in range(0, videos.shape[0], self.batch_size)]
        return ScorerFeatures(torch.cat(feats), [[t] for t in range(videos.shape[1])])

    def frame_embeddings(self, videos: torch.Tensor) -> torch.Tensor:
        """Per-frame embeddings [B, F, D]: the frame's patch features averaged over space, L2-normalised (for
        subject/background consistency: cosine of frame pairs)."""
        return F.normalize(self.features(videos).features.mean(dim=(2, 3)), dim=-1)
