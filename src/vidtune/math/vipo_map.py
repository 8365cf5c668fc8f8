"""ViPO per-frame structuring map (ALGORITHMS.md §4, map construction steps 1–8).

Pure torch; computes in fp32, or fp64 when given fp64. The temporal alignment, fallback and dense advantage are in
`vidtune.math.vipo`.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtune.math.numerics import compute_dtype

CONST_RANGE = 1e-6  # a frame map whose range is ≤ this after the resize is "constant" (same bound as the fallback)


def orient_components(z: Tensor, v: Tensor, h: int, w: int) -> Tensor:
    """Fix the SVD sign of each component (ALGORITHMS.md §4 step 4, orientation `border_low`).

    z: [K, N] projections z_j = X·v_j with N = h·w (row-major patch order); v: [K, D] right singular vectors v_j.
    o_j = sign(mean_centre(z_j) − mean_border(z_j)), centre = rows ⌊h/4⌋…⌈3h/4⌉−1 × cols ⌊w/4⌋…⌈3w/4⌉−1,
    border = outer ring. When |difference| ≤ 1e-6·(max z_j − min z_j), or h < 3 or w < 3, o_j is the sign of the
    largest-magnitude entry of v_j (first index on ties). Returns o_j·z_j, [K, N]; flipping (z_j, v_j) → (−z_j, −v_j)
    leaves the result unchanged.
    """
    k = z.shape[0]
    grid = z.reshape(k, h, w)
    diff = torch.zeros(k, dtype=z.dtype, device=z.device)
    if h >= 3 and w >= 3:
        r0, r1 = h // 4, math.ceil(3 * h / 4)
        c0, c1 = w // 4, math.ceil(3 * w / 4)
        centre = grid[:, r0:r1, c0:c1].mean(dim=(1, 2))
        ring = torch.ones(h, w, dtype=torch.bool, device=z.device)
        ring[1:-1, 1:-1] = False
        diff = centre - grid[:, ring].mean(dim=1)
    spread = z.amax(dim=1) - z.amin(dim=1)
    use_v = diff.abs() <= 1e-6 * spread
    if h < 3 or w < 3:
        use_v = torch.ones_like(use_v)
    largest = v.gather(1, v.abs().argmax(dim=1, keepdim=True)).squeeze(1)  # argmax returns the first index on ties
    sign = torch.where(use_v, torch.sign(largest), torch.sign(diff))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return z * sign[:, None]


def structure_scores(features: Tensor, k: int = 3) -> Tensor:
    """Patch-grid structuring map S_τ before smoothing (ALGORITHMS.md §4 steps 1–6).

    features: F_τ, [h, w, D]. X = centred rows [N, D]; SVD X = U·diag(s)·Vᵀ; K' = min(k, rank X) with the numerical
    rank (s_i > max(N, D)·eps·s_1); z_j = X·v_j; λ_j = s_j² / Σ_{i≤K'} s_i²; z_j oriented by `orient_components`;
    z'_j = minmax(z_j), 0 when range ≤ 1e-12·(1 + max|z_j|); S = Σ_j λ_j·z'_j ∈ [0, 1]. Returns [h, w].
    Limits: rank 0 (all patches equal) gives S ≡ 0; the result is invariant to adding a constant vector to every
    patch, to positive scaling and to permuting the D feature dimensions.
    """
    h, w, d = features.shape
    x = features.to(compute_dtype(features)).reshape(h * w, d)
    x = x - x.mean(dim=0, keepdim=True)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    tol = max(h * w, d) * torch.finfo(x.dtype).eps * (s[0] if s.numel() else 0.0)
    k_eff = min(k, int((s > tol).sum()))
    if k_eff == 0:
        return torch.zeros(h, w, dtype=x.dtype, device=x.device)
    v = vh[:k_eff]  # [K', D]
    lam = s[:k_eff] ** 2 / (s[:k_eff] ** 2).sum()
    z = orient_components((x @ v.T).T, v, h, w)  # [K', N]
    lo, hi = z.amin(dim=1, keepdim=True), z.amax(dim=1, keepdim=True)
    rng = hi - lo
    ok = rng > 1e-12 * (1 + z.abs().amax(dim=1, keepdim=True))
    zn = torch.where(ok, (z - lo) / torch.where(ok, rng, torch.ones_like(rng)), torch.zeros_like(z))
    return (lam[:, None] * zn).sum(dim=0).reshape(h, w)


def gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype) -> Tensor:
    """Normalised 1-D Gaussian taps exp(−i²/2σ²), i = −radius…radius, [2·radius + 1]."""
    i = torch.arange(-radius, radius + 1, dtype=dtype)
    k = torch.exp(-(i**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(s: Tensor, sigma: float = 1.0) -> Tensor:
    """Separable Gaussian smoothing with a reflecting boundary (ALGORITHMS.md §4 step 7, σ_blur in patches).

    s: [h, w]. Kernel truncated at radius ⌈3σ⌉, per axis at most n − 1 (torch `reflect` padding, which mirrors
    about the edge sample: d c b | a b c d), and renormalised. σ = 0 or a 1-patch axis leaves that axis unchanged;
    a constant map stays constant. Returns [h, w].
    """
    if sigma <= 0:
        return s
    x = s[None, None]
    radius = math.ceil(3 * sigma)
    for axis in (3, 2):  # columns, then rows
        r = min(radius, x.shape[axis] - 1)
        if r == 0:
            continue
        kern = gaussian_kernel(sigma, r, x.dtype).to(x.device)
        shape = (1, 1, 1, 2 * r + 1) if axis == 3 else (1, 1, 2 * r + 1, 1)
        pad = (r, r, 0, 0) if axis == 3 else (0, 0, r, r)
        x = F.conv2d(F.pad(x, pad, mode="reflect"), kern.reshape(shape))
    return x[0, 0]


def resize_bilinear(s: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize [h, w] → [H, W] (align_corners=False), antialiased when either axis shrinks (§4 step 8)."""
    shrink = size[0] < s.shape[0] or size[1] < s.shape[1]
    out = F.interpolate(s[None, None], size=size, mode="bilinear", align_corners=False, antialias=shrink)
    return out[0, 0]


class FrameMap(NamedTuple):
    map: Tensor  # [H, W] in [0, 1] with min 0 and max 1, or all ones when constant
    constant: bool  # True when the frame map was constant (counted `vipo/const_frame`)


def frame_map(features: Tensor, size: tuple[int, int], k: int = 3, sigma: float = 1.0) -> FrameMap:
    """Structuring map S_τ of one feature-time index on the latent grid (ALGORITHMS.md §4, steps 1–8).

    features: F_τ, [h, w, D]; size: latent grid (H, W). S_τ = minmax(resize(blur(structure_scores(F_τ)))); a map
    whose range after the resize is ≤ 1e-6 becomes all ones (`constant=True`). Returns FrameMap(map [H, W], constant).
    """
    s = resize_bilinear(gaussian_blur(structure_scores(features, k), sigma), size)
    lo, hi = s.min(), s.max()
    if not bool(hi - lo > CONST_RANGE):
        return FrameMap(torch.ones_like(s), True)
    return FrameMap((s - lo) / (hi - lo), False)
