"""A CLIP-style video–text scorer (transformers ``CLIPModel``; SigLIP-like models with the same two
``get_*_features`` methods work too).

Video embedding v = normalise(mean_f normalise(E_img(frame_f))) over at most ``max_frames`` uniformly spaced
frames; text embedding t = normalise(E_txt(prompt)); cos = v·t ∈ [−1, 1] and, as for the learned scorer
(rewards/scorer.py), score = (1 + cos)/2 ∈ [0, 1] (monotone in cos, so rankings are CLIP's). Frames are resized so
the short side is the model's image size (bicubic, antialiased), centre-cropped and normalised with CLIP's
statistics — ``CLIPImageProcessor``'s steps, in torch, so no PIL round trip and GPU-friendly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vidtune.errors import VidtuneError
from vidtune.rewards.base import check_inputs, register
from vidtune.types import RewardOutput

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_preprocess(frames: torch.Tensor, size: int, mean=CLIP_MEAN, std=CLIP_STD) -> torch.Tensor:
    """Frames [N, 3, H, W] in [0, 1] → short side ``size`` (bicubic), centre crop size×size, normalise."""
    h, w = frames.shape[-2:]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    x = frames.float()
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=nh < h).clamp(0, 1)
    top, left = (nh - size) // 2, (nw - size) // 2
    x = x[..., top: top + size, left: left + size]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    sd = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / sd


def _features(out: Any) -> torch.Tensor:
    """``get_*_features`` returns a tensor (transformers 4) or an output whose ``pooler_output`` is projected (5)."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


@register("clip_scorer")
class ClipVideoScorer:
    """(1 + cos)/2 of frame-averaged CLIP image embeddings and the prompt's text embedding (``model``: folder, hub
    id such as ``openai/clip-vit-large-patch14``, or a built model with ``tokenizer``)."""

    name = "clip_scorer"
    range = (0.0, 1.0)

    def __init__(self, model: Any = "openai/clip-vit-large-patch14", tokenizer: Any = None, max_frames: int = 8,
                 batch_size: int = 16, device: str = "cpu", dtype: str = "float32"):
        if batch_size < 1 or max_frames < 1:
            raise VidtuneError(f"clip_scorer: batch_size and max_frames must be ≥ 1, got {batch_size}, {max_frames}")
        self.mean, self.std = CLIP_MEAN, CLIP_STD
        if isinstance(model, (str, Path)):
            model, tokenizer = self._load(str(model), dtype)
        if tokenizer is None:
            raise VidtuneError("clip_scorer: a model object needs its tokenizer (tokenizer=…)")
        for m in ("get_image_features", "get_text_features"):
            if not hasattr(model, m):
                raise VidtuneError(f"clip_scorer: {type(model).__name__} has no {m}; expected a CLIP-style model")
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.device = tokenizer, torch.device(device)
        self.max_frames, self.batch_size = max_frames, batch_size
        self.image_size = int(model.config.vision_config.image_size)
        self.max_len = int(getattr(model.config.text_config, "max_position_embeddings", 77))

    @classmethod
    def from_pretrained(cls, path_or_id: str, **kwargs: Any) -> "ClipVideoScorer":
        return cls(model=path_or_id, **kwargs)

    def _load(self, spec: str, dtype: str):
        from transformers import AutoModel, AutoTokenizer

        try:
            model = AutoModel.from_pretrained(spec, dtype=getattr(torch, dtype))
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError) as e:
            raise VidtuneError(f"clip_scorer: cannot load '{spec}': {str(e).splitlines()[0]}") from None
        pre = Path(spec) / "preprocessor_config.json"
        if pre.is_file():
            d = json.loads(pre.read_text())
            self.mean, self.std = tuple(d.get("image_mean", CLIP_MEAN)), tuple(d.get("image_std", CLIP_STD))
        return model, tokenizer

    def _frames(self, videos: torch.Tensor) -> torch.Tensor:
        n = videos.shape[1]
        if n <= self.max_frames:
            return videos
        return videos[:, torch.linspace(0, n - 1, self.max_frames).round().long()]

    @torch.no_grad()
    def video_embeddings(self, videos: torch.Tensor) -> torch.Tensor:
        """[B, D] normalised mean of normalised per-frame image embeddings of clips [B, F, 3, H, W] in [0, 1]."""
        v = self._frames(videos)
        b, f = v.shape[:2]
        frames = v.reshape(b * f, *v.shape[2:])
        embs = []
        for lo in range(0, b * f, self.batch_size * f):
            x = clip_preprocess(frames[lo: lo + self.batch_size * f].to(self.device), self.image_size, self.mean,
                                self.std)
            embs.append(F.normalize(_features(self.model.get_image_features(pixel_values=x.to(self.model.dtype)))
                                    .float(), dim=-1).cpu())
        return F.normalize(torch.cat(embs).view(b, f, -1).mean(1), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """[B, D] normalised text embeddings (padded and truncated to the model's context)."""
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            tok = self.tokenizer(list(prompts[lo: lo + self.batch_size]), padding=True, truncation=True,
                                 max_length=self.max_len, return_tensors="pt")
            tok = {k: v.to(self.device) for k, v in tok.items() if k in ("input_ids", "attention_mask")}
            out.append(F.normalize(_features(self.model.get_text_features(**tok)).float(), dim=-1).cpu())
        return torch.cat(out)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        cos = torch.full((len(prompts),), float("nan"))
        rows = finite.nonzero().flatten().tolist()
        if rows:
            cos[rows] = (self.video_embeddings(videos[rows]) * self.text_embeddings([prompts[i] for i in rows])).sum(-1)
        details = [{"cosine": float(c)} if ok else {"invalid": "non-finite pixels"} for c, ok in zip(cos, finite)]
        return RewardOutput(scores=(1 + cos) / 2, components={"cosine": cos}, details=details)
