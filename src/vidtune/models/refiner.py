"""Pixel-space refiner of the tiny DiT's output (a convolutional output head, DESIGN.md §3 "tiny generator").

A linear patch decoder writes every p×p patch of the prediction from its own token, so neighbouring patches of one
object disagree at their borders (the "8×8 seams" of a patch-8 model) and a shape that straddles a border falls
apart into blobs. The refiner sees the patch decoder's prediction x̂ together with the model input x (noisy
latents and the I2V condition) at full resolution and adds a per-frame convolutional correction

    x̂' = x̂ + R([x̂, x], c),   R = conv₃ ∘ SiLU ∘ conv₂(dilation 2) ∘ SiLU ∘ FiLM(c) ∘ conv₁,

with c the DiT's timestep + text conditioning vector (FiLM: z·(1 + γ(c)) + β(c)). Its receptive field (9 px)
crosses patch borders. conv₃ and the FiLM projection start at zero, so attaching a refiner to a trained model
leaves its output unchanged (the same zero-initialisation rule as the physics branch) and training grows it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PixelRefiner(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels + out_channels, channels, 3, padding=1)
        self.film = nn.Linear(cond_dim, 2 * channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=2, dilation=2)
        self.conv3 = nn.Conv2d(channels, out_channels, 3, padding=1)
        for m in (self.film, self.conv3):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, pred: torch.Tensor, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """pred [B, C_out, F, H, W], x [B, C_in, F, H, W], c [B, D] → refined pred (same shape)."""
        b, c_out, f, h, w = pred.shape
        z = torch.cat([pred, x], dim=1).transpose(1, 2).reshape(b * f, -1, h, w)
        z = F.silu(self.conv1(z))
        gamma, beta = self.film(F.silu(c)).repeat_interleave(f, dim=0)[..., None, None].chunk(2, dim=1)
        z = F.silu(self.conv2(z * (1 + gamma) + beta))
        delta = self.conv3(z).view(b, f, c_out, h, w).transpose(1, 2)
        return pred + delta
