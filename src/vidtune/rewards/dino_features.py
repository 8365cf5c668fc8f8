"""DINOv2 (transformers ``Dinov2Model``) as the frozen feature extractor of ViPO maps and consistency metrics.

``features(videos)`` follows the extractor contract of ALGORITHMS.md §4 — the same as
``LearnedScorer.features`` (rewards/scorer.py): per-frame patch tokens without the class (and register) tokens,
[B, F, h, w, D], plus ``frame_cover[τ] = [τ]`` (one feature time per pixel frame). Frames are resized at their
native aspect ratio (no centre crop) so the short side is ``short_side`` and both sides are multiples of the
patch size; DINOv2 interpolates its position embeddings to that grid. ``frame_embeddings`` are the L2-normalised
class tokens [B, F, D]. As a reward (``dino_consistency``) the score is VBench's subject consistency
(Huang et al. 2024): mean over frames i ≥ 1 of ½·(cos(e_0, e_i) + cos(e_{i−1}, e_i)) ∈ [−1, 1].
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

from vidtune.errors import VidtuneError
from vidtune.rewards.base import check_inputs, register
from vidtune.types import RewardOutput

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DinoOutput(NamedTuple):
    features: torch.Tensor  # [B, F, h, w, D] patch features, no class/register tokens
    frame_cover: list[list[int]]  # frame_cover[τ] = pixel frames of feature time τ ([τ])


def patch_grid_size(height: int, width: int, short_side: int, patch: int) -> tuple[int, int]:
    """Native-aspect size with the short side ≈ ``short_side`` and both sides rounded to multiples of ``patch``."""
    s = short_side / min(height, width)
    return max(patch, round(height * s / patch) * patch), max(patch, round(width * s / patch) * patch)


def prepare_frames(frames: torch.Tensor, size: tuple[int, int], mean, std) -> torch.Tensor:
    """Frames [N, 3, H, W] in [0, 1] → bicubic resize (antialiased when shrinking) and mean/std normalisation."""
    x = frames.float()
    if tuple(x.shape[-2:]) != tuple(size):
        shrink = size[0] < x.shape[-2] or size[1] < x.shape[-1]
        x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=shrink).clamp(0, 1)
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


@register("dino_consistency")
class DinoFeatures:
    """Frozen DINOv2 features (``model``: folder, hub id such as ``facebook/dinov2-base``, or a built model)."""

    name = "dino_consistency"
    range = (-1.0, 1.0)

    def __init__(self, model: Any = "facebook/dinov2-base", short_side: int = 224, batch_size: int = 64,
                 device: str = "cpu", dtype: str = "float32"):
        if batch_size < 1 or short_side < 1:
            raise VidtuneError(f"dino: batch_size and short_side must be ≥ 1, got {batch_size}, {short_side}")
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        if isinstance(model, (str, Path)):
            model = self._load(str(model), dtype)
        if not hasattr(model.config, "patch_size"):
            raise VidtuneError(f"dino: {type(model).__name__} has no patch_size; expected a DINOv2 (ViT) model")
        self.model = model.to(device).eval().requires_grad_(False)
        self.device, self.short_side, self.batch_size = torch.device(device), short_side, batch_size
        self.patch = int(model.config.patch_size)
        self.n_prefix = 1 + int(getattr(model.config, "num_register_tokens", 0) or 0)

    @classmethod
    def from_pretrained(cls, path_or_id: str, **kwargs: Any) -> "DinoFeatures":
        return cls(model=path_or_id, **kwargs)

    def _load(self, spec: str, dtype: str):
        from transformers import AutoModel

        try:
            model = AutoModel.from_pretrained(spec, dtype=getattr(torch, dtype))
        except (OSError, ValueError) as e:
            raise VidtuneError(f"dino: cannot load '{spec}': {str(e).splitlines()[0]}") from None
        if "dinov2" not in model.config.model_type:
            raise VidtuneError(f"dino: '{spec}' is a {model.config.model_type} model, not DINOv2")
        pre = Path(spec) / "preprocessor_config.json"
        if pre.is_file():
            d = json.loads(pre.read_text())
            self.mean, self.std = tuple(d.get("image_mean", IMAGENET_MEAN)), tuple(d.get("image_std", IMAGENET_STD))
        return model

    def _check(self, videos: torch.Tensor, what: str) -> None:
        if not isinstance(videos, torch.Tensor) or not videos.is_floating_point() or videos.ndim != 5 \
                or videos.shape[2] != 3:
            got = tuple(videos.shape) if isinstance(videos, torch.Tensor) else type(videos).__name__
            raise VidtuneError(f"dino.{what}: videos must be a float tensor [B, F, 3, H, W] in [0, 1], got {got}")

    @torch.no_grad()
    def _tokens(self, videos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """(class tokens [B, F, D], patch tokens [B, F, h, w, D], (h, w)) in fp32 on the CPU."""
        b, f = videos.shape[:2]
        size = patch_grid_size(videos.shape[3], videos.shape[4], self.short_side, self.patch)
        h, w = size[0] // self.patch, size[1] // self.patch
        frames = videos.reshape(b * f, *videos.shape[2:])
        cls_out, patch_out = [], []
        for lo in range(0, b * f, self.batch_size):
            x = prepare_frames(frames[lo: lo + self.batch_size].to(self.device), size, self.mean, self.std)
            hs = self.model(pixel_values=x.to(self.model.dtype)).last_hidden_state.float().cpu()
            cls_out.append(hs[:, 0])
            patch_out.append(hs[:, self.n_prefix:])
        cls_t, patches = torch.cat(cls_out), torch.cat(patch_out)
        if patches.shape[1] != h * w:
            raise VidtuneError(f"dino: expected {h}×{w} patch tokens, got {patches.shape[1]}")
        return cls_t.view(b, f, -1), patches.view(b, f, h, w, -1), (h, w)

    def features(self, videos: torch.Tensor) -> DinoOutput:
        """Patch features [B, F, h, w, D] of clips [B, F, 3, H, W] in [0, 1] and each feature time's pixel frames
        (the ViPO extractor contract; non-finite pixels give non-finite features, so ViPO falls back to M ≡ 1)."""
        self._check(videos, "features")
        return DinoOutput(self._tokens(videos)[1], [[t] for t in range(videos.shape[1])])

    def frame_embeddings(self, videos: torch.Tensor) -> torch.Tensor:
        """L2-normalised class tokens [B, F, D] (subject/background consistency: cosines of frame pairs)."""
        self._check(videos, "frame_embeddings")
        return F.normalize(self._tokens(videos)[0], dim=-1)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        if videos.shape[1] < 2:
            raise VidtuneError(f"{self.name}: consistency needs ≥ 2 frames, got {videos.shape[1]}")
        e = self.frame_embeddings(torch.nan_to_num(videos))
        first = (e[:, :1] * e[:, 1:]).sum(-1)
        prev = (e[:, :-1] * e[:, 1:]).sum(-1)
        score = (0.5 * (first + prev)).mean(1)
        score[~finite] = float("nan")
        details = [{} if ok else {"invalid": "non-finite pixels"} for ok in finite]
        return RewardOutput(scores=score, components={"first_frame": first.mean(1), "adjacent": prev.mean(1)},
                            details=details)
