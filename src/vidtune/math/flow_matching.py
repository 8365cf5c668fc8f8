"""Flow-matching interpolation, velocity targets, per-sample errors and timestep samplers.

ALGORITHMS.md Notation and §7.1. Flow time t ∈ [0, 1]: t = 1 is pure noise, t = 0 data;
x_t = (1 − t)·x_0 + t·ε and the velocity target is v = ε − x_0 (rectified flow, Liu et al. 2022).
"""

from __future__ import annotations

from typing import Literal

import torch


def _bcast(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return t.reshape(t.shape + (1,) * (like.ndim - t.ndim))


def interpolate(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """ALGORITHMS.md Notation: x_t = (1 − t)·x_0 + t·ε.  x0, eps: [B, ...]; t: [B]. t = 0 gives x_0, t = 1 gives ε."""
    tb = _bcast(t.to(x0.dtype), x0)
    return (1 - tb) * x0 + tb * eps


def velocity_target(x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """ALGORITHMS.md Notation: v = ε − x_0 (constant along the straight path)."""
    return eps - x0


def velocity_from_x0(xt: torch.Tensor, x0_hat: torch.Tensor, t: torch.Tensor, t_min: float = 0.05) -> torch.Tensor:
    """Velocity implied by a clean-sample prediction: v = (x_t − x̂_0) / max(t, t_min) (inverse of x̂_0 = x_t − t·v).

    Exact for x̂_0 = x_0 and t ≥ t_min (then v = ε − x_0); the clamp bounds the gain near t = 0 (Li & He 2025)."""
    return (xt - x0_hat) / _bcast(t.to(xt.dtype).clamp_min(t_min), xt)


def x0_from_velocity(xt: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean sample a velocity implies: x̂_0 = x_t − t·v (the inverse of :func:`velocity_from_x0` for t ≥ t_min)."""
    return xt - _bcast(t.to(xt.dtype), xt) * v


def per_sample_mse(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """ALGORITHMS.md §7.1: e_b = (1/D)·Σ_e m_e·(pred − target)²_e, mean over all non-batch dims → [B]; m ≡ 1 unless
    element ``weights`` (broadcastable to ``pred``, e.g. :func:`motion_emphasis`) are given."""
    sq = (pred.float() - target.float()).pow(2)
    return (sq if weights is None else sq * weights.float()).flatten(1).mean(1)


def motion_emphasis(x0: torch.Tensor, lam: float) -> torch.Tensor:
    """Element weights m [B, 1, F, H, W] of the motion-emphasis SFT loss (a project addition to §7.1,
    ``sft.motion_emphasis``) from clean latents x0 [B, C, F, H, W]:

    d_f = max(|x0_f − x0_{f−1}|, |x0_{f+1} − x0_f|) averaged over channels (a missing neighbour counts 0), so both
    where a moving thing was and where it goes count; m = 1 + λ·d/max(d) per sample; then m ← m / mean(m), so every
    clip keeps its total weight and only its spatial-temporal allocation changes. A static clip, or λ = 0, gives
    m ≡ 1. Example (C = 1, F = 3, one row of 2 pixels; frames [0, 0], [1, 0], [1, 0]; λ = 2): d = [1, 0], [1, 0],
    [0, 0]; 1 + 2d sums to 10 over 6 elements → m = [1.8, 0.6], [1.8, 0.6], [0.6, 0.6]."""
    x = x0.detach().float()
    diff = (x[:, :, 1:] - x[:, :, :-1]).abs().mean(1, keepdim=True)
    edge = torch.zeros_like(diff[:, :, :1])
    d = torch.maximum(torch.cat([edge, diff], 2), torch.cat([diff, edge], 2))
    peak = d.flatten(1).amax(1).clamp_min(1e-12)
    m = 1 + lam * d / _bcast(peak, d)
    return m / _bcast(m.flatten(1).mean(1), m)


def contrastive_errors(errors: torch.Tensor, neg_errors: torch.Tensor, lam: float,
                       has_negative: torch.Tensor) -> torch.Tensor:
    """Per-sample errors of the counterfactual contrastive flow-matching loss (ALGORITHMS.md §7.1, a project use of
    ΔFM, Stoica et al. 2025, arXiv 2506.05350): e_b − λ·n_b·e⁻_b, where e⁻_b is the error against the negative's
    target ε − x⁻_0 (same ε and t) and n_b ∈ {0, 1} marks the samples that have a negative. For 0 ≤ λ < 1 the
    per-element minimiser is v* = (v⁺ − λ·v⁻)/(1 − λ), i.e. x̂_0 = x_0 + λ/(1 − λ)·(x_0 − x⁻_0): the target pushed
    away from the negative where they differ, unchanged where they agree. Example: e = [1, 1], e⁻ = [4, 4],
    λ = 0.25, n = [1, 0] → [0, 1]."""
    if not 0.0 <= lam < 1.0:
        raise ValueError(f"contrastive λ must be in [0, 1) (the loss is unbounded below at λ ≥ 1), got {lam}")
    return errors - lam * has_negative.to(errors.dtype) * neg_errors


def weighted_fm_loss(errors: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """ALGORITHMS.md §7.1: L_FM = (1/B)·Σ_b ω_b·e_b (ω ≡ 1 when ``weights`` is None)."""
    return errors.mean() if weights is None else (weights.to(errors.dtype) * errors).mean()


def sample_t(
    n: int,
    generator: torch.Generator,
    kind: Literal["logit_normal", "shifted_uniform", "uniform"] = "logit_normal",
    *,
    loc: float = 0.0,
    scale: float = 1.0,
    shift: float = 3.0,
) -> torch.Tensor:
    """ALGORITHMS.md §7.1, timestep samplers → [n] in (0, 1).

    ``logit_normal``: t = sigmoid(loc + scale·n), n ~ N(0, 1) (Esser et al. 2024); median sigmoid(loc).
    ``shifted_uniform``: u ~ U(0, 1), t = k·u / (1 + (k − 1)·u), k = ``shift``; median k/(k+1); k = 1 is uniform.
    """
    match kind:
        case "logit_normal":
            return torch.sigmoid(loc + scale * torch.randn(n, generator=generator))
        case "shifted_uniform":
            return shift_time(torch.rand(n, generator=generator), shift)
        case "uniform":
            return torch.rand(n, generator=generator)
    raise ValueError(f"unknown timestep sampler {kind!r}")


def shift_time(t: torch.Tensor, shift: float) -> torch.Tensor:
    """ALGORITHMS.md §1 Defaults, time shift: t ← k·t / (1 + (k − 1)·t). k = 1 is the identity; fixes 0 and 1."""
    return shift * t / (1 + (shift - 1) * t)


def time_grid(steps: int, shift: float = 1.0, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """ALGORITHMS.md §1: grid 1 = t_0 > t_1 > … > t_S = 0 of ``steps`` uniform transitions, then shifted → [S+1]."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=dtype), shift)


def cfg_combine(v_cond: torch.Tensor, v_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022): v = v_u + w·(v_c − v_u). w = 1 gives v_c, w = 0 gives v_u."""
    return v_uncond + scale * (v_cond - v_uncond)
