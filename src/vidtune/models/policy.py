"""The ``VideoPolicy`` protocol: the seam that lets one stage file drive the tiny model and diffusers' Wan.

A policy works in its latent space x ∈ R^{C×F×H×W} (pixel-space models: C = 3, strides 1). Conditioning is an
opaque dict of batch-first tensors produced by ``encode_prompts`` (cacheable), so sampling code can concatenate,
index and repeat it without knowing the model (see :func:`cond_cat`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import torch

Cond = dict[str, torch.Tensor]


@runtime_checkable
class VideoPolicy(Protocol):
    """What every generator implements (DESIGN.md §2)."""

    def encode_prompts(self, prompts: list[str], images: torch.Tensor | None = None) -> Cond:
        """Text conditioning for a batch of prompts ('' is the unconditional prompt); for I2V also the
        conditioning first frames ``images`` [B, 3, H_px, W_px] in [0, 1]."""

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Pixel video [B, F_px, 3, H_px, W_px] in [0, 1] → latents [B, C, F, H, W]."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents [B, C, F, H, W] → pixel video [B, F_px, 3, H_px, W_px] in [0, 1]."""

    def velocity(self, latents: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v_θ(x_t, t, c) [B, C, F, H, W]; t ∈ [0, 1] of shape [B] (or a scalar)."""

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(C, F, H, W) of the latents of a pixel video of the given size."""

    def trainable_parameters(self) -> Iterable[torch.nn.Parameter]:
        """Parameters an optimiser should update (all, or only adapters / decoder-level ones)."""

    @property
    def device(self) -> torch.device:
        """Where the weights live (``run.device``); samplers create noise and latents there."""


def cond_cat(conds: list[Cond]) -> Cond:
    """Concatenate conditionings along the batch (e.g. [cond, uncond] for classifier-free guidance)."""
    return {k: torch.cat([c[k] for c in conds], 0) for k in conds[0]}

