"""Physics-aware SFT branch (ALGORITHMS.md §7.3): a flow head on decoder-level features of consecutive frames,
fused back through a zero-initialised 1×1 projection so the model's output is unchanged at initialisation.

Decoder features h_k ∈ R^{D×H_d×W_d} are the tokens of frame k entering the last ``decoder_blocks`` DiT blocks.
φ maps (h_k, h_{k+1}) to hidden features g_k and a flow F̂_{k→k+1} ∈ R^{2×H_d×W_d} (token-grid units);
h'_k = h_k + Z(g_k) with Z's weight and bias zero (Zhang et al. 2023's zero convolution), the last frame unchanged.
"""

from __future__ import annotations

import torch
from torch import nn


class MotionBranch(nn.Module):
    def __init__(self, hidden: int):
        super().__init__()
        self.phi = nn.Sequential(nn.Conv2d(2 * hidden, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU())
        self.to_flow = nn.Conv2d(hidden, 2, 1)
        self.zero = nn.Conv2d(hidden, hidden, 1)
        nn.init.zeros_(self.zero.weight)
        nn.init.zeros_(self.zero.bias)

    def forward(self, h: torch.Tensor, grid: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """h [B, F'·H'·W', D] → (h' same shape, flow [B, F'−1, 2, H', W'])."""
        b, _, d = h.shape
        f, hh, ww = grid
        frames = h.view(b, f, hh, ww, d).permute(0, 1, 4, 2, 3)  # [B, F', D, H', W']
        pairs = torch.cat([frames[:, :-1], frames[:, 1:]], dim=2).reshape(b * (f - 1), 2 * d, hh, ww)
        g = self.phi(pairs)
        flow = self.to_flow(g).view(b, f - 1, 2, hh, ww)
        delta = self.zero(g).view(b, f - 1, d, hh, ww)
        fused = torch.cat([frames[:, :-1] + delta, frames[:, -1:]], dim=1)
        return fused.permute(0, 1, 3, 4, 2).reshape(b, f * hh * ww, d), flow
