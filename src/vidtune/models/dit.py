"""A small pixel-space video DiT (adaLN-Zero, self-attention over space-time tokens, cross-attention to text).

Peebles & Xie 2023 (DiT, adaLN-Zero); the text encoder is a small transformer over word tokens. The network maps
(x_t [B, C_in, F, H, W], t [B], tokens) to a velocity [B, C_out, F, H, W]; it knows nothing about ShapeWorld.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of t·1000 → [B, dim] (the usual diffusion convention)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = (t.float() * 1000.0)[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, kv_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(kv_dim or dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor | None = None, mask: torch.Tensor | None = None):
        b, n, d = x.shape
        ctx = x if ctx is None else ctx
        q = self.q(x).view(b, n, self.heads, -1).transpose(1, 2)
        k, v = self.kv(ctx).view(b, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)
        attn_mask = None if mask is None else mask[:, None, None, :]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out(y.transpose(1, 2).reshape(b, n, d))


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm_x = nn.LayerNorm(dim, eps=1e-6)
        self.cross = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x, c, ctx, ctx_mask):
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)
        x = x + g1[:, None] * self.attn(modulate(self.norm1(x), s1, sc1))
        x = x + self.cross(self.norm_x(x), ctx, ctx_mask)
        return x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, sc2))


class TextEncoder(nn.Module):
    def __init__(self, vocab_size: int, dim: int, layers: int, heads: int, max_len: int):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.zeros(1, max_len, dim))
        nn.init.normal_(self.pos, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False) if layers else None
        self.norm = nn.LayerNorm(dim)
        self.pos_boost: nn.Parameter | None = None
        self.pos_gain = 0.0

    def attach_position_boost(self, gain: float) -> None:
        """Grow a second position table ``gain · P`` with P zero-initialised (outputs unchanged).

        Word embeddings are initialised N(0, 1) (norm ≈ √dim) and ``pos`` N(0, 0.02²), so the positions carry ≈ 2 %
        of each input vector and the encoder is nearly a bag of words ("moves left, then moves right" and its
        reverse differ by 1 % after pooling). Adam moves P by ≈ lr per step, so the gain sets how fast order
        information can grow to the scale of the words."""
        self.pos_boost = nn.Parameter(torch.zeros_like(self.pos))
        self.pos_gain = gain

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.embed(tokens) + self.pos[:, : tokens.shape[1]]
        if self.pos_boost is not None:
            h = h + self.pos_gain * self.pos_boost[:, : tokens.shape[1]]
        if self.encoder is not None:
            h = self.encoder(h, src_key_padding_mask=~mask)
        h = self.norm(h)
        m = mask.unsqueeze(-1).to(h.dtype)
        pooled = (h * m).sum(1) / m.sum(1).clamp_min(1)
        return h, pooled


class VideoDiT(nn.Module):
    def __init__(self, *, in_channels: int, out_channels: int, frames: int, size: int, patch: tuple[int, int, int],
                 hidden: int, depth: int, heads: int, mlp_ratio: float, vocab_size: int, text_len: int,
                 text_layers: int):
        super().__init__()
        pt, ph, pw = patch
        if frames % pt or size % ph or size % pw:
            raise ValueError(f"patch {patch} does not divide the video {frames}x{size}x{size}")
        self.patch, self.out_channels = patch, out_channels
        self.grid = (frames // pt, size // ph, size // pw)
        self.embed = nn.Conv3d(in_channels, hidden, kernel_size=patch, stride=patch)
        self.pos_t = nn.Parameter(torch.zeros(1, self.grid[0], 1, hidden))
        self.pos_s = nn.Parameter(torch.zeros(1, 1, self.grid[1] * self.grid[2], hidden))
        nn.init.normal_(self.pos_t, std=0.02)
        nn.init.normal_(self.pos_s, std=0.02)
        self.t_mlp = nn.Sequential(nn.Linear(256, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.text = TextEncoder(vocab_size, hidden, text_layers, heads, text_len)
        self.text_proj = nn.Linear(hidden, hidden)
        self.blocks = nn.ModuleList(DiTBlock(hidden, heads, mlp_ratio) for _ in range(depth))
        self.final_norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.final_ada = nn.Sequential(nn.SiLU(), nn.Linear(hidden, 2 * hidden))
        self.final = nn.Linear(hidden, out_channels * pt * ph * pw)
        for m in (self.final_ada[1], self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def positions(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """Position embeddings for a token grid (F', H', W') → [1, F', H'·W', D]. The training grid uses the learned
        tables as they are; a shorter clip uses the first F' temporal rows and a smaller or larger frame resizes the
        spatial table bilinearly (the usual ViT resolution transfer), so clips of other sizes can be scored."""
        f, hh, ww = grid
        if f > self.grid[0]:
            raise ValueError(f"clip has {f} temporal tokens; this model has position embeddings for {self.grid[0]}")
        pos_s = self.pos_s
        if (hh, ww) != self.grid[1:]:
            table = pos_s.view(1, *self.grid[1:], -1).permute(0, 3, 1, 2)
            pos_s = F.interpolate(table, size=(hh, ww), mode="bilinear", align_corners=False)
            pos_s = pos_s.permute(0, 2, 3, 1).reshape(1, 1, hh * ww, -1)
        return self.pos_t[:, :f] + pos_s

    def tokens_in(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        """Patchify x → (tokens [B, F'·H'·W', D] with positions, token grid (F', H', W'))."""
        h = self.embed(x)  # [B, D, F', H', W']
        b, d, f, hh, ww = h.shape
        h = h.permute(0, 2, 3, 4, 1).reshape(b, f, hh * ww, d) + self.positions((f, hh, ww))
        return h.reshape(b, f * hh * ww, d), (f, hh, ww)

    def unpatchify(self, h: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b = h.shape[0]
        f, hh, ww = grid
        pt, ph, pw = self.patch
        h = h.view(b, f, hh, ww, self.out_channels, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return h.reshape(b, self.out_channels, f * pt, hh * ph, ww * pw)

    def attach_branch(self, branch: nn.Module, decoder_blocks: int) -> None:
        """Insert a motion branch before the last ``decoder_blocks`` blocks (models/motion_branch.py)."""
        if not 1 <= decoder_blocks <= len(self.blocks):
            raise ValueError(f"decoder_blocks must be in [1, {len(self.blocks)}], got {decoder_blocks}")
        self.branch, self.decoder_blocks = branch, decoder_blocks

    def attach_refiner(self, refiner: nn.Module) -> None:
        """Add a pixel-space refiner after the patch decoder (models/refiner.py)."""
        self.refiner = refiner

    def decoder_modules(self) -> list[nn.Module]:
        """The output stage (ALGORITHMS.md §7.3 "decoder"): last blocks, final norm/modulation/projection, refiner,
        branch."""
        n = getattr(self, "decoder_blocks", 1)
        mods = list(self.blocks[len(self.blocks) - n :]) + [self.final_ada, self.final]
        extra = [getattr(self, name, None) for name in ("refiner", "branch")]
        return mods + [m for m in extra if m is not None]

    def forward(self, x: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                return_flow: bool = False):
        ctx, pooled = self.text(tokens, mask)
        c = self.t_mlp(timestep_embedding(t, 256).to(x.dtype)) + self.text_proj(pooled)
        h, grid = self.tokens_in(x)
        branch = getattr(self, "branch", None)
        split = len(self.blocks) - getattr(self, "decoder_blocks", 0)
        flow = None
        for i, block in enumerate(self.blocks):
            if branch is not None and i == split:
                h, flow = branch(h, grid)
            h = block(h, c, ctx, mask)
        shift, scale = self.final_ada(c).chunk(2, dim=-1)
        out = self.unpatchify(self.final(modulate(self.final_norm(h), shift, scale)), grid)
        if getattr(self, "refiner", None) is not None:
            out = self.refiner(out, x, c)
        return (out, flow) if return_flow else out
