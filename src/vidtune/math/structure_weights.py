"""Stage I structure-aware sample weights and the physics-branch flow helpers (ALGORITHMS.md §7.2, §7.3).

ψ (``scores``) is a structural-instability score ≥ 0, larger = less stable (more demanding). It is normalised by
dataset (or rolling-window) percentiles q_05, q_95 to ψ̂ ∈ [0, 1], turned into a weight
ω = clip(1 + γ·ψ̂, ω_min, ω_max) and renormalised to batch mean exactly 1. The flow helpers resize target flows to
the decoder grid H_d×W_d and compute the EPE loss of the flow head.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtune.math.flow_metrics import endpoint_error
from vidtune.math.numerics import to_compute


def _as_scores(scores: Tensor | list[float | None]) -> Tensor:
    """Scores as a float tensor; ``None`` entries (missing scores) become NaN."""
    if isinstance(scores, Tensor):
        return to_compute(scores)
    return torch.tensor([float("nan") if s is None else float(s) for s in scores], dtype=torch.float32)


class ScorePercentiles(NamedTuple):
    """Percentiles of the finite scores of a pool (dataset or rolling window)."""

    q_low: float  # q_05 (NaN when the pool has no finite score)
    q_high: float  # q_95
    n_missing: int  # non-finite / missing scores ignored


def score_percentiles(scores: Tensor | list[float | None], low: float = 0.05, high: float = 0.95) -> ScorePercentiles:
    """ALGORITHMS.md §7.2, percentiles q_05, q_95 of the score pool (linear interpolation, like numpy's default).

    ``scores`` ψ: [M] (None/NaN/±inf = missing, skipped and counted). An empty finite pool gives NaN percentiles,
    which :func:`normalise_scores` maps to ψ̂ = 0 (no re-weighting).
    """
    psi = _as_scores(scores).reshape(-1)
    ok = torch.isfinite(psi)
    if not bool(ok.any()):
        return ScorePercentiles(float("nan"), float("nan"), int((~ok).sum()))
    q = torch.quantile(psi[ok].double(), torch.tensor([low, high], dtype=torch.float64))
    return ScorePercentiles(float(q[0]), float(q[1]), int((~ok).sum()))


class StructureWeights(NamedTuple):
    """Per-sample weights of §7.2 and the counter logged each step."""

    omega: Tensor  # [B] ω, batch mean exactly 1
    psi_hat: Tensor  # [B] ψ̂ ∈ [0, 1]
    n_missing: int  # samples whose score was missing / non-finite (ψ̂ = 0)


def normalise_scores(scores: Tensor | list[float | None], q_low: float, q_high: float) -> tuple[Tensor, int]:
    """ALGORITHMS.md §7.2, normalisation ψ̂_b = clip((ψ_b − q_05)/(q_95 − q_05), 0, 1).

    ``scores`` ψ: [B]; ``q_low``/``q_high`` = q_05/q_95. Returns (ψ̂ [B], number of missing scores).
    Limits: a missing or non-finite ψ_b gives ψ̂_b = 0 (counted). When q_95 ≤ q_05 (no spread) the clip is taken
    in its limit q_95 ↓ q_05, i.e. the step ψ̂ = 1[ψ > q_05]. NaN percentiles (empty pool) give ψ̂ ≡ 0.
    """
    psi = _as_scores(scores)
    ok = torch.isfinite(psi)
    n_missing = int((~ok).sum())
    if not (q_low == q_low and q_high == q_high):  # NaN percentiles
        return torch.zeros_like(psi), n_missing
    if q_high > q_low:  # in fp64 so that a tiny spread cannot underflow to 0/0
        psi_hat = ((psi.double() - q_low) / (q_high - q_low)).clamp(0.0, 1.0).to(psi.dtype)
    else:
        psi_hat = (psi > q_low).to(psi.dtype)
    return torch.where(ok, psi_hat, torch.zeros_like(psi_hat)), n_missing


def weights_from_normalised(
    psi_hat: Tensor, gamma: float = 1.0, omega_min: float = 0.25, omega_max: float = 4.0
) -> Tensor:
    """ALGORITHMS.md §7.2, ω_b = clip(1 + γ·ψ̂_b, ω_min, ω_max); ω_b ← ω_b / mean_batch(ω).

    ``psi_hat`` ψ̂: [B]; ``gamma`` γ ≥ 0. Returns ω: [B] with mean exactly 1 (to rounding), non-decreasing in ψ̂.
    Limits: γ = 0 or equal ψ̂ give ω ≡ 1; the renormalisation may move a weight outside [ω_min, ω_max]
    (the spec's order: clip, then renormalise). B = 0 returns an empty tensor.
    """
    if gamma < 0 or not 0 < omega_min <= omega_max:
        raise ValueError(f"need gamma >= 0 and 0 < omega_min <= omega_max, got {gamma}, {omega_min}, {omega_max}")
    omega = (1.0 + gamma * to_compute(psi_hat)).clamp(omega_min, omega_max)
    return omega if omega.numel() == 0 else omega / omega.mean()


def structure_weights(
    scores: Tensor | list[float | None],
    q_low: float,
    q_high: float,
    gamma: float = 1.0,
    omega_min: float = 0.25,
    omega_max: float = 4.0,
) -> StructureWeights:
    """ALGORITHMS.md §7.2, structure-aware reweighting: ψ → ψ̂ → ω (see :func:`normalise_scores` and
    :func:`weights_from_normalised` for the equations and limits). ``scores``: [B]; returns [B] tensors."""
    psi_hat, n_missing = normalise_scores(scores, q_low, q_high)
    return StructureWeights(weights_from_normalised(psi_hat, gamma, omega_min, omega_max), psi_hat, n_missing)


def resize_flow(
    flow: Tensor, size: tuple[int, int], mode: Literal["bilinear", "area", "nearest"] = "bilinear"
) -> Tensor:
    """ALGORITHMS.md §7.3, target flow resize: F [..., 2, H_px, W_px] → [..., 2, H_d, W_d], vectors scaled.

    Channel 0 is u (x displacement, pixels), channel 1 is v (y). The field is resampled with ``mode``
    (bilinear uses align_corners=False) and the vectors are rescaled to the new grid's pixel units:
    u ← u·W_d/W_px, v ← v·H_d/H_px. ``size`` = (H_d, W_d). A constant flow (u, v) upsampled by 2 becomes (2u, 2v);
    size equal to the input is the identity.
    """
    if flow.ndim < 3 or flow.shape[-3] != 2:
        raise ValueError(f"flow must have shape [..., 2, H, W], got {tuple(flow.shape)}")
    h_px, w_px = flow.shape[-2:]
    h_d, w_d = size
    x = to_compute(flow).reshape(-1, 2, h_px, w_px)
    match mode:
        case "bilinear":
            out = F.interpolate(x, size=(h_d, w_d), mode="bilinear", align_corners=False)
        case "area" | "nearest":
            out = F.interpolate(x, size=(h_d, w_d), mode=mode)
        case _:
            raise ValueError(f"unknown resize mode {mode!r}")
    scale = torch.tensor([w_d / w_px, h_d / h_px], dtype=out.dtype).reshape(1, 2, 1, 1)
    return (out * scale).reshape(*flow.shape[:-3], 2, h_d, w_d)


def epe_loss(pred: Tensor, target: Tensor, valid: Tensor | None = None) -> Tensor:
    """ALGORITHMS.md §7.3, flow loss EPE = mean over valid pixels and pairs of ‖F̂ − F*‖₂ (norm, not squared).

    ``pred`` F̂, ``target`` F*: [..., 2, H_d, W_d] (e.g. [B, F−1, 2, H_d, W_d]); ``valid``: [..., H_d, W_d] bool
    (None = all valid). Returns a scalar (fp32, fp64 for fp64 input), differentiable in ``pred``; the gradient at
    a zero error is 0. No valid pixel gives 0 (still connected to ``pred``'s graph) rather than NaN.
    """
    p = to_compute(pred)
    t = target.to(p.dtype)
    if valid is None:
        return endpoint_error(p, t).mean()
    mask = valid.to(torch.bool).unsqueeze(-3)  # [..., 1, H, W]; invalid pixels zeroed before the norm so that
    p, t = torch.where(mask, p, 0.0), torch.where(mask, t, 0.0)  # NaN targets there cannot reach the gradient
    n = mask.expand(p.shape[:-3] + (1,) + p.shape[-2:]).sum()
    return endpoint_error(p, t).sum() / n.clamp(min=1)
