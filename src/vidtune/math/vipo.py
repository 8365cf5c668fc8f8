"""ViPO dense advantage maps: temporal alignment, fallback, renorm, A^ν = M·A (ALGORITHMS.md §4).

The per-frame structuring map S_τ lives in `vidtune.math.vipo_map`. Pure torch; fp32, or fp64 when given fp64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, get_args

import torch
from torch import Tensor

from vidtune.math.numerics import compute_dtype
from vidtune.math.vipo_map import frame_map

VaeTime = Literal["causal", "noncausal", "pixel"]
FallbackReason = Literal["extractor", "shape", "non_finite", "range"]
FALLBACK_REASONS: tuple[str, ...] = get_args(FallbackReason)
FALLBACK_RANGE = 1e-6  # final volume range at or below this → M ≡ 1


def latent_frame_sets(num_latent: int, stride: int = 4, vae: VaeTime = "causal") -> list[range]:
    """Pixel frames 𝒯_k covered by each latent frame k (ALGORITHMS.md §4, temporal alignment).

    num_latent = F, stride = s_T. causal: 𝒯_0 = {0}, 𝒯_k = {s_T(k−1)+1, …, s_T·k} (Wan: 81 frames → 21 latents);
    noncausal: {s_T·k, …, s_T·k + s_T − 1}; pixel (pixel-space model, strides 1): {k}, stride ignored.
    Returns F ranges.
    """
    match vae:
        case "causal":
            return [range(0, 1)] + [range(stride * (k - 1) + 1, stride * k + 1) for k in range(1, num_latent)]
        case "noncausal":
            return [range(stride * k, stride * k + stride) for k in range(num_latent)]
        case "pixel":
            return [range(k, k + 1) for k in range(num_latent)]
        case _:
            raise ValueError(f"vae time layout must be 'causal', 'noncausal' or 'pixel', got {vae!r}")


def alignment_weights(feature_frames: Sequence[Sequence[int]], latent_frames: Sequence[Sequence[int]]) -> Tensor:
    """Intersection counts W[k, τ] = |𝒯_k ∩ pixel frames of τ| (ALGORITHMS.md §4, temporal alignment); [F, F_f] fp64."""
    feats = [set(f) for f in feature_frames]
    return torch.tensor([[float(len(set(t) & f)) for f in feats] for t in latent_frames], dtype=torch.float64)


def align_temporal(maps: Tensor, weights: Tensor) -> Tensor:
    """M[k] = Σ_τ W[k,τ]·S_τ / Σ_τ W[k,τ] (ALGORITHMS.md §4, temporal `average`), before the final minmax.

    maps: S_τ on the latent grid, [F_f, H, W]; weights: W from `alignment_weights`, [F, F_f]. Returns [F, H, W].
    Limits: a latent frame whose row of W is all zero gets NaN (the caller treats it as a shape mismatch); with
    causal stride 4 and one feature frame per pixel frame, M[0] = S_0 and M[k] = mean(S_{4k−3…4k}).
    """
    w = weights.to(maps.dtype).to(maps.device)
    return torch.einsum("kt,thw->khw", w / w.sum(dim=1, keepdim=True), maps)


class VipoMap(NamedTuple):
    map: Tensor  # M, [F, H, W]: in [0, 1] with min 0 and max 1, or exactly all ones after a fallback
    fallback: str | None  # None, or the reason counted as `vipo/fallback/<reason>` (see FallbackReason)
    const_frames: int  # feature-time maps that were constant and became ones (`vipo/const_frame`)


def vipo_map(
    features: Tensor | None, feature_frames: Sequence[Sequence[int]], latent_shape: tuple[int, int, int],
    *, vae: VaeTime = "causal", stride: int = 4, k: int = 3, sigma: float = 1.0, renorm: bool = False,
) -> VipoMap:
    """Structuring map M_b of one sample (ALGORITHMS.md §4, map construction + temporal alignment + fallback).

    features: patch features [F_f, h, w, D] (no class token), or None when the extractor failed;
    feature_frames: for each τ the pixel frames it covers (len F_f); latent_shape = (F, H, W); vae/stride: layout of
    𝒯_k (`latent_frame_sets`); k = K (top components); sigma = σ_blur in patches; renorm = `vipo.renorm`.
    M = minmax over the volume of `align_temporal(frame_map(F_τ))`. Fallback M ≡ 1 with reason "extractor" (None),
    "shape" (not [F_f, h, w, D] matching feature_frames, or a latent frame no feature frame covers), "non_finite"
    (features or map), "range" (final range ≤ 1e-6, e.g. constant features). renorm divides by mean_𝒫(M).
    Returns VipoMap(map [F, H, W], fallback, const_frames); fp32, or fp64 for fp64 features.
    """
    nf, nh, nw = latent_shape
    dtype = torch.float32 if features is None else compute_dtype(features)
    device = None if features is None else features.device

    def fallback(reason: str, const: int = 0) -> VipoMap:
        return VipoMap(torch.ones(nf, nh, nw, dtype=dtype, device=device), reason, const)

    if features is None:
        return fallback("extractor")
    if features.ndim != 4 or features.shape[0] != len(feature_frames) or min(features.shape) < 1:
        return fallback("shape")
    weights = alignment_weights(feature_frames, latent_frame_sets(nf, stride, vae))
    if bool((weights.sum(dim=1) == 0).any()):
        return fallback("shape")
    if not bool(torch.isfinite(features).all()):
        return fallback("non_finite")
    frames = [frame_map(f, (nh, nw), k, sigma) for f in features]
    const = sum(fm.constant for fm in frames)
    m = align_temporal(torch.stack([fm.map for fm in frames]), weights)
    if not bool(torch.isfinite(m).all()):
        return fallback("non_finite", const)
    lo, hi = m.min(), m.max()
    if not bool(hi - lo > FALLBACK_RANGE):
        return fallback("range", const)
    m = (m - lo) / (hi - lo)
    return VipoMap(renorm_map(m) if renorm else m, None, const)


class VipoBatch(NamedTuple):
    map: Tensor  # M, [B, F, H, W]
    fallback: tuple[str | None, ...]  # per-sample fallback reason (None = map used)
    const_frames: tuple[int, ...]  # per-sample count of constant frame maps


def vipo_map_batch(
    features: Sequence[Tensor | None] | Tensor, feature_frames: Sequence[Sequence[int]],
    latent_shape: tuple[int, int, int], *, vae: VaeTime = "causal", stride: int = 4, k: int = 3,
    sigma: float = 1.0, renorm: bool = False,
) -> VipoBatch:
    """`vipo_map` per sample (ALGORITHMS.md §4): features [B, F_f, h, w, D] or a length-B sequence (None = extractor
    failed for that sample). Returns VipoBatch(map [B, F, H, W], fallback reasons, const-frame counts)."""
    outs = [vipo_map(f, feature_frames, latent_shape, vae=vae, stride=stride, k=k, sigma=sigma, renorm=renorm)
            for f in features]
    dtype = torch.float64 if any(o.map.dtype == torch.float64 for o in outs) else torch.float32
    return VipoBatch(torch.stack([o.map.to(dtype) for o in outs]), tuple(o.fallback for o in outs),
                     tuple(o.const_frames for o in outs))


def renorm_map(m: Tensor) -> Tensor:
    """`vipo.renorm` (ALGORITHMS.md §4): M ← M / mean_𝒫(M) per sample, so mean_𝒫(M) = 1.

    m: [F, H, W] or [B, F, H, W] (the last three dims are 𝒫). Restores the average advantage scale of scalar GRPO;
    M ≡ 1 is unchanged. Needs mean_𝒫(M) > 0 (true for any `vipo_map` output, whose max is 1).
    """
    return m / m.mean(dim=(-3, -2, -1), keepdim=True)


def dense_advantage(m: Tensor, advantages: Tensor) -> Tensor:
    """Dense advantage A_b^ν = M_b(ν)·A_b (ALGORITHMS.md §4, dense objective).

    m: M, [B, F, H, W]; advantages: A_b after clipping and any BPGO scale (RAS weight w), [B] — or Ã_b for the CRT
    term. Returns [B, F, H, W] in fp32 (fp64 if either input is fp64). With M ≡ 1 this is A broadcast exactly.
    """
    dtype = torch.promote_types(compute_dtype(m), compute_dtype(advantages))
    return m.to(dtype) * advantages.to(dtype).reshape(-1, 1, 1, 1)
