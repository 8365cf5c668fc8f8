"""A transformers VLM as a yes-probability judge (DESIGN.md §4): Qwen2-VL / Qwen2.5-VL style video chat models.

For each clip the judge asks one question about its prompt (default: "Does this video show: {prompt}? Answer yes
or no.") and reads the next-token logits after the assistant tag. With ℓ_yes = logsumexp of the logits of the
"yes" tokens and ℓ_no likewise for "no", the probability renormalised over the two answers is

    p_yes = exp ℓ_yes / (exp ℓ_yes + exp ℓ_no) = sigmoid(d),   d = ℓ_yes − ℓ_no   (log-odds)

and the score is the affinely calibrated (Platt) value ``sigmoid(scale·d + bias)`` ∈ (0, 1); scale = 1, bias = 0
gives p_yes. Components: ``p_yes`` and ``log_odds``. The video goes in as Qwen2-VL patches built in pure torch
(:func:`video_to_qwen_patches`, ENVIRONMENT.md §3d): transformers' video processors need torchvision, which this
project does not install. Clips are batched with left padding; batching gives the same scores as one by one.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from vidtune.errors import VidtuneError
from vidtune.rewards.base import check_inputs, register
from vidtune.types import RewardOutput

QWEN_MEAN = (0.48145466, 0.4578275, 0.40821073)  # OpenAI CLIP statistics used by Qwen2-VL's processors
QWEN_STD = (0.26862954, 0.26130258, 0.27577711)
DEFAULT_QUESTION = "Does this video show: {prompt}? Answer yes or no."
SYSTEM = "You are a helpful assistant."


def smart_size(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen2-VL ``smart_resize``: the nearest size with both sides multiples of ``factor`` (patch·merge) and
    min_pixels ≤ H·W ≤ max_pixels, keeping the aspect ratio."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def video_to_qwen_patches(video: torch.Tensor, patch: int = 14, merge: int = 2, temporal_patch: int = 2,
                          mean=QWEN_MEAN, std=QWEN_STD, min_pixels: int = 56 * 56,
                          max_pixels: int = 448 * 448) -> tuple[torch.Tensor, torch.Tensor]:
    """One clip [T, 3, H, W] in [0, 1] → (``pixel_values_videos`` [t·h·w, 3·tp·p·p], ``video_grid_thw`` [1, 3]).

    Bicubic resize to :func:`smart_size`, CLIP normalisation, the last frame repeated up to a multiple of the
    temporal patch, then the patch layout of ``Qwen2VLImageProcessor`` (merge-window major order)."""
    h, w = smart_size(video.shape[2], video.shape[3], patch * merge, min_pixels, max_pixels)
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    v = F.interpolate(video.float(), size=(h, w), mode="bicubic", align_corners=False).clamp(0, 1)
    v = ((v - m) / s)[None]
    if pad := -v.shape[1] % temporal_patch:
        v = torch.cat([v, v[:, -1:].expand(-1, pad, -1, -1, -1)], 1)
    b, t, c, hh, ww = v.shape
    gt, gh, gw = t // temporal_patch, hh // patch, ww // patch
    p = v.view(b, gt, temporal_patch, c, gh // merge, merge, patch, gw // merge, merge, patch)
    p = p.permute(0, 1, 4, 7, 5, 8, 3, 2, 6, 9)
    return p.reshape(gt * gh * gw, c * temporal_patch * patch * patch), torch.tensor([[gt, gh, gw]])


def _single_token(tokenizer, word: str) -> int:
    ids = tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise VidtuneError(f"vlm_judge: answer word {word!r} is {len(ids)} tokens for this tokenizer; each yes/no "
                           "word must be a single token")
    return int(ids[0])


@register("vlm_judge")
class VLMJudge:
    """P("yes") of a Qwen2-VL-style model asked whether the clip shows its prompt (``model``: a local folder or a
    hub id such as ``Qwen/Qwen2.5-VL-7B-Instruct``, or an already-built model with ``tokenizer``)."""

    name = "vlm_judge"
    range = (0.0, 1.0)

    def __init__(self, model: Any = "Qwen/Qwen2-VL-7B-Instruct", tokenizer: Any = None,
                 question: str = DEFAULT_QUESTION, yes: tuple[str, ...] = ("Yes", "yes"),
                 no: tuple[str, ...] = ("No", "no"), scale: float = 1.0, bias: float = 0.0, batch_size: int = 4,
                 max_frames: int = 16, min_pixels: int = 56 * 56, max_pixels: int = 448 * 448,
                 system: str | None = SYSTEM, device: str = "cpu", dtype: str = "float32"):
        if batch_size < 1 or max_frames < 1:
            raise VidtuneError(f"vlm_judge: batch_size and max_frames must be ≥ 1, got {batch_size}, {max_frames}")
        if "{prompt}" not in question:
            raise VidtuneError(f"vlm_judge: question must contain '{{prompt}}', got {question!r}")
        self.mean, self.std = QWEN_MEAN, QWEN_STD
        if isinstance(model, (str, Path)):
            model, tokenizer = self._load(str(model), dtype)
        if tokenizer is None:
            raise VidtuneError("vlm_judge: a model object needs its tokenizer (tokenizer=…)")
        cfg = model.config
        for key in ("video_token_id", "vision_start_token_id", "vision_end_token_id"):
            if getattr(cfg, key, None) is None:
                raise VidtuneError(f"vlm_judge: model config has no {key}; expected a Qwen2-VL-style video VLM")
        self.model = model.to(device).eval().requires_grad_(False)
        self.tokenizer, self.device = tokenizer, torch.device(device)
        self.question, self.system = question, system
        self.yes_ids = sorted({_single_token(tokenizer, w) for w in yes})
        self.no_ids = sorted({_single_token(tokenizer, w) for w in no})
        if set(self.yes_ids) & set(self.no_ids):
            raise VidtuneError(f"vlm_judge: yes words {yes} and no words {no} share a token")
        self.scale, self.bias, self.batch_size, self.max_frames = float(scale), float(bias), batch_size, max_frames
        self.min_pixels, self.max_pixels = min_pixels, max_pixels
        vc = cfg.vision_config
        self.patch, self.merge, self.tps = vc.patch_size, vc.spatial_merge_size, vc.temporal_patch_size
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else 0)

    @classmethod
    def from_pretrained(cls, path_or_id: str, **kwargs: Any) -> "VLMJudge":
        """Load model and tokenizer with transformers (local folder or hub id); ``kwargs`` as in ``__init__``."""
        return cls(model=path_or_id, **kwargs)

    def _load(self, spec: str, dtype: str):
        from transformers import AutoModelForImageTextToText, AutoTokenizer

        try:
            model = AutoModelForImageTextToText.from_pretrained(spec, dtype=getattr(torch, dtype))
            tokenizer = AutoTokenizer.from_pretrained(spec)
        except (OSError, ValueError) as e:
            raise VidtuneError(f"vlm_judge: cannot load '{spec}': {str(e).splitlines()[0]}") from None
        pre = Path(spec) / "preprocessor_config.json"
        if pre.is_file():
            d = json.loads(pre.read_text())
            self.mean, self.std = tuple(d.get("image_mean", QWEN_MEAN)), tuple(d.get("image_std", QWEN_STD))
        return model, tokenizer

    def _frames(self, video: torch.Tensor) -> torch.Tensor:
        """At most ``max_frames`` frames, uniformly spaced (first and last kept)."""
        n = video.shape[0]
        if n <= self.max_frames:
            return video
        return video[torch.linspace(0, n - 1, self.max_frames).round().long()]

    def _ids(self, prompt: str, n_video_tokens: int) -> list[int]:
        """The Qwen2-VL chat layout: system turn, user turn with the video then the question, assistant tag."""
        cfg, enc = self.model.config, (lambda s: self.tokenizer.encode(s, add_special_tokens=False))
        head = (f"<|im_start|>system\n{self.system}<|im_end|>\n" if self.system else "") + "<|im_start|>user\n"
        tail = self.question.format(prompt=prompt) + "<|im_end|>\n<|im_start|>assistant\n"
        return (enc(head) + [cfg.vision_start_token_id] + [cfg.video_token_id] * n_video_tokens
                + [cfg.vision_end_token_id] + enc(tail))

    @torch.no_grad()
    def log_odds(self, videos: torch.Tensor, prompts: list[str]) -> torch.Tensor:
        """d = ℓ_yes − ℓ_no [B] for clips [B, F, 3, H, W] in [0, 1] (one forward per ``batch_size`` clips)."""
        out = []
        for lo in range(0, len(prompts), self.batch_size):
            pv, thw, seqs = [], [], []
            for v, p in zip(videos[lo: lo + self.batch_size], prompts[lo: lo + self.batch_size]):
                x, g = video_to_qwen_patches(self._frames(v), self.patch, self.merge, self.tps, self.mean,
                                             self.std, self.min_pixels, self.max_pixels)
                pv.append(x)
                thw.append(g)
                seqs.append(self._ids(p, int(g.prod()) // self.merge ** 2))
            width = max(len(s) for s in seqs)
            ids = torch.tensor([[self.pad_id] * (width - len(s)) + s for s in seqs])
            mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs])
            types = (ids == self.model.config.video_token_id).long() * 2
            logits = self.model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                                mm_token_type_ids=types.to(self.device),
                                pixel_values_videos=torch.cat(pv).to(self.device, self.model.dtype),
                                video_grid_thw=torch.cat(thw).to(self.device), logits_to_keep=1).logits[:, -1]
            logits = logits.float()
            out.append(logits[:, self.yes_ids].logsumexp(-1) - logits[:, self.no_ids].logsumexp(-1))
        return torch.cat(out).cpu() if out else torch.zeros(0)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        d = torch.full((len(prompts),), float("nan"))
        rows = finite.nonzero().flatten().tolist()
        if rows:
            d[rows] = self.log_odds(videos[rows], [prompts[i] for i in rows])
        details = [{"p_yes": float(torch.sigmoid(x))} if ok else {"invalid": "non-finite pixels"}
                   for x, ok in zip(d, finite)]
        return RewardOutput(scores=torch.sigmoid(self.scale * d + self.bias),
                            components={"p_yes": torch.sigmoid(d), "log_odds": d}, details=details)
