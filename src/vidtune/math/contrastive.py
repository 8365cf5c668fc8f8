"""The learned scorer's training loss (DESIGN.md §3, judge 2): CLIP's symmetric InfoNCE (Radford et al. 2021) with
extra negatives on both sides and false negatives masked out."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def symmetric_infonce(video: Tensor, text: Tensor, extra_video: Tensor, scale: Tensor | float,
                      false_negative: Tensor) -> tuple[Tensor, Tensor]:
    """(L_v2t, L_t2v) for B matched pairs (video_i, text_i), i < B, with L2-normalised embeddings:

        L_v2t = −(1/B) Σ_i log softmax_k(s·v_i·t_k)[i]   over all T ≥ B texts (text rows B… are extra negatives)
        L_t2v = −(1/B) Σ_i log softmax_j(s·t_i·v_j)[i]   over the B videos and the E ``extra_video`` rows

    ``video`` [B, D], ``text`` [T, D], ``extra_video`` [E, D], s = ``scale``. ``false_negative`` [B, T] bool marks
    texts also true for video i (never on the diagonal): they leave video i's softmax, and for k < B video i leaves
    text k's softmax. The total loss is ½(L_v2t + L_t2v)."""
    b = video.shape[0]
    target = torch.arange(b, device=video.device)
    logits_v2t = (scale * video @ text.T).masked_fill(false_negative, float("-inf"))
    videos = torch.cat([video, extra_video])
    mask_t2v = F.pad(false_negative[:, :b].T, (0, extra_video.shape[0]))
    logits_t2v = (scale * text[:b] @ videos.T).masked_fill(mask_t2v, float("-inf"))
    return F.cross_entropy(logits_v2t, target), F.cross_entropy(logits_t2v, target)
