"""GRPO ratio, clipped surrogate, KL to the reference and the per-batch loss (ALGORITHMS.md §2.2–2.4).

Shapes: scalar mode log-probs/ratios are [B, S]; dense mode (ViPO, §4) [B, S, F, H, W]; S indexes the trained
transitions handed in (all of 𝒮_b, or a chunk of them for per-transition backward). Everything is computed in fp32,
or in fp64 when the input is fp64.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.math.numerics import to_compute

KLForm = Literal["exact", "no_dt"]


class LikelihoodRatio(NamedTuple):
    ratio: Tensor  # ρ = exp(clamp(L_θ − L_old, ±log_clamp)), same shape as the log-probs
    log_ratio: Tensor  # the clamped log ρ
    clamped: Tensor  # 0-d int64: number of elements where the clamp was active (counter, §2.2)


def likelihood_ratio(logp_new: Tensor, logp_old: Tensor, *, log_clamp: float = 20.0) -> LikelihoodRatio:
    """ALGORITHMS.md §2.2, ρ_{b,s} = exp(clamp(L_θ,b,s − L_old,b,s, −20, 20)).

    ``logp_new`` = L_θ (carries the gradient), ``logp_old`` = L_old (treated as a constant): [B, S] or
    [B, S, F, H, W]. The clamp only guards exp against overflow; when θ = θ_old the ratio is exactly 1.
    """
    log_ratio = to_compute(logp_new) - to_compute(logp_old).detach()
    clamped = (log_ratio.detach().abs() > log_clamp).sum()
    log_ratio = log_ratio.clamp(-log_clamp, log_clamp)
    return LikelihoodRatio(ratio=log_ratio.exp(), log_ratio=log_ratio, clamped=clamped)


def _broadcast_advantage(advantages: Tensor, ratio: Tensor) -> Tensor:
    """[B] → [B, 1, …]; a dense map [B, F, H, W] (ViPO) → [B, 1, F, H, W]; a full-shape tensor is kept."""
    a = to_compute(advantages).detach()
    if a.ndim == 1:
        return a.reshape(a.shape + (1,) * (ratio.ndim - 1))
    if a.ndim == ratio.ndim - 1 and ratio.ndim == 5:
        return a.unsqueeze(1)
    if a.ndim == ratio.ndim:
        return a
    raise ValueError(f"advantages of shape {tuple(a.shape)} do not broadcast to ratios {tuple(ratio.shape)}")


def clipped_surrogate(advantages: Tensor, ratio: Tensor, *, clip_range: float = 1e-4) -> Tensor:
    """ALGORITHMS.md §2.2, ℓ = max(−A·ρ, −A·clip(ρ, 1−ε_clip, 1+ε_clip)) per element.

    ``advantages`` = A: [B] (broadcast over transitions and positions), a dense map [B, F, H, W], or the full
    ratio shape; ``ratio`` = ρ: [B, S] or [B, S, F, H, W]; ``clip_range`` = ε_clip. Returns ℓ with the ratio's
    shape. Limits: at ρ = 1 this is −A (gradient −A∇ρ, REINFORCE with a group baseline); the gradient vanishes for
    A > 0, ρ > 1+ε and for A < 0, ρ < 1−ε. Positively homogeneous: ℓ(w·A) = w·ℓ(A) for w > 0.
    """
    a = _broadcast_advantage(advantages, ratio)
    return torch.maximum(-a * ratio, -a * ratio.clamp(1.0 - clip_range, 1.0 + clip_range))


def kl_to_reference(
    v_theta: Tensor, v_ref: Tensor, sigma: Tensor | float, t: Tensor | float, dt: Tensor | float,
    *, form: KLForm = "exact",
) -> Tensor:
    """ALGORITHMS.md §2.3, KL(π_θ ‖ π_ref) of one transition from the velocity difference, mean-reduced to [B].

    ``v_theta`` = v_θ, ``v_ref`` = v_ref: [B, C, F, H, W] (v_ref is detached); ``sigma`` = σ_s, ``t`` = t_s,
    ``dt`` = Δt_s < 0: floats or [B]. Both Gaussians share std_s = σ_s·√|Δt_s|, so

        exact : k = |Δt|·(1 + σ²(1−t)/(2t))² · mean_e (v_θ − v_ref)² / (2σ²)   (= mean_e (μ_θ − μ_ref)²/(2 std²))
        no_dt : k = |Δt|·k_exact                                           (Flow-GRPO; divides by 2σ² only)

    Zero at v_θ = v_ref. Needs σ_s > 0 and t_s > 0 (trainable transitions only; σ = 0 gives inf/NaN).
    """
    diff = to_compute(v_theta) - to_compute(v_ref).detach()
    msq = diff.square().flatten(1).mean(dim=1)
    sigma, t, dt = (torch.as_tensor(z, dtype=msq.dtype, device=msq.device) for z in (sigma, t, dt))
    gain = 1.0 + sigma.square() * (1.0 - t) / (2.0 * t)
    k_exact = dt.abs() * gain.square() * msq / (2.0 * sigma.square())
    match form:
        case "exact":
            return k_exact
        case "no_dt":
            return dt.abs() * k_exact
        case _:
            raise ValueError(f"kl_form must be 'exact' or 'no_dt', got {form!r}")


def grpo_loss(
    surrogate: Tensor, valid: Tensor, *, n_steps: Tensor | int | None = None, step_mask: Tensor | None = None,
    kl: Tensor | None = None, beta_kl: float = 0.0, n_valid: Tensor | int | None = None,
    position_mask: Tensor | None = None,
) -> Tensor:
    """ALGORITHMS.md §2.4, L = (1/B_valid)·Σ_{b valid} (1/|𝒮_b|)·Σ_{s∈𝒮_b} [mean_ν ℓ_{b,s,ν} + β_KL·k_{b,s}].

    ``surrogate`` = ℓ: [B, S] (scalar) or [B, S, F, H, W] (dense; mean_ν over positions); ``valid``: [B] bool;
    ``step_mask``: [B, S] bool of real transitions when 𝒮_b is padded; ``n_steps`` = |𝒮_b| (int or [B]; default:
    step_mask.sum(1), else S); ``kl`` = k: [B, S]; ``beta_kl`` = β_KL; ``n_valid`` = B_valid (default valid.sum());
    ``position_mask``: [B or 1, F, H, W] of kept positions (I2V-clamped frames = 0). Returns a 0-d tensor.

    Per-(micro-batch, transition) backward: pass the slices of ℓ/k/valid/step_mask together with each sample's
    total |𝒮_b| as ``n_steps`` (not the chunk's count) and the whole batch's B_valid as ``n_valid``; the chunk
    losses then sum to L and their gradients accumulate to ∇L. No valid sample gives 0 (still on the graph).
    """
    per = surrogate
    if per.ndim == 5:
        if position_mask is None:
            per = per.flatten(2).mean(dim=2)
        else:
            m = position_mask.to(per.dtype).unsqueeze(1).expand_as(per)
            per = (per * m).flatten(2).sum(dim=2) / m.flatten(2).sum(dim=2).clamp_min(1.0)
    elif per.ndim != 2:
        raise ValueError(f"surrogate must be [B, S] or [B, S, F, H, W], got {tuple(per.shape)}")
    if kl is not None and beta_kl != 0.0:
        per = per + beta_kl * to_compute(kl)
    valid = valid.to(torch.bool).reshape(-1, 1)
    keep = valid if step_mask is None else valid & step_mask.to(torch.bool)
    if n_steps is None:
        n_steps = per.shape[1] if step_mask is None else step_mask.to(torch.bool).sum(dim=1)
    n_steps = torch.as_tensor(n_steps, dtype=per.dtype, device=per.device).clamp_min(1.0)
    n_steps = n_steps.reshape(-1, 1) if n_steps.ndim else n_steps
    if n_valid is None:
        n_valid = valid.sum()
    n_valid = torch.as_tensor(n_valid, dtype=per.dtype, device=per.device).clamp_min(1.0)
    return torch.where(keep, per / n_steps, 0.0).sum() / n_valid


class RatioStats(NamedTuple):
    """Logging statistics of §2.4 (detached 0-d tensors; call .item() when logging)."""

    clip_fraction: Tensor  # mean 1[|ρ − 1| > ε_clip]
    approx_kl: Tensor  # mean((ρ − 1) − log ρ), approximate KL(old ‖ new)
    ratio_min: Tensor
    ratio_mean: Tensor
    ratio_max: Tensor
    log_ratio_clamped: Tensor  # count of log-ratio clamp activations


def ratio_stats(lr: LikelihoodRatio, *, clip_range: float = 1e-4, mask: Tensor | None = None) -> RatioStats:
    """ALGORITHMS.md §2.4 "Logged each step": clip fraction, approximate KL(old‖new), ratio min/mean/max.

    ``lr`` from :func:`likelihood_ratio`; ``mask`` (optional, broadcastable to ρ, e.g. valid[:, None] & step_mask)
    selects the elements that enter the statistics. At θ = θ_old: clip fraction 0, approx KL 0, all ratios 1.
    """
    with torch.no_grad():
        rho, log_rho = lr.ratio, lr.log_ratio
        if mask is not None:
            sel = mask.to(torch.bool).expand_as(rho)
            rho, log_rho = rho[sel], log_rho[sel]
        if rho.numel() == 0:
            zero = torch.zeros((), dtype=lr.ratio.dtype, device=lr.ratio.device)
            return RatioStats(zero, zero, zero, zero, zero, lr.clamped)
        return RatioStats(
            clip_fraction=((rho - 1.0).abs() > clip_range).to(rho.dtype).mean(),
            approx_kl=((rho - 1.0) - log_rho).mean(),
            ratio_min=rho.min(),
            ratio_mean=rho.mean(),
            ratio_max=rho.max(),
            log_ratio_clamped=lr.clamped,
        )


class GrpoObjective(NamedTuple):
    loss: Tensor  # 0-d, L of §2.4
    stats: RatioStats  # detached logging statistics over valid samples and real transitions
    kl_mean: Tensor  # detached mean k over the same elements (0 when no KL is given)


def grpo_objective(
    logp_new: Tensor, logp_old: Tensor, advantages: Tensor, valid: Tensor, *, clip_range: float = 1e-4,
    n_steps: Tensor | int | None = None, step_mask: Tensor | None = None, kl: Tensor | None = None,
    beta_kl: float = 0.0, n_valid: Tensor | int | None = None, position_mask: Tensor | None = None,
    aux_advantages: Tensor | None = None, aux_weight: float = 1.0, heads: bool = False,
) -> GrpoObjective:
    """ALGORITHMS.md §2.2–2.4 end to end: ρ → ℓ(A) [+ ς·ℓ(Ã)] → L (+β_KL·k), with the logged ratio statistics.

    Shapes and arguments as in :func:`likelihood_ratio`, :func:`clipped_surrogate` and :func:`grpo_loss`.
    ``aux_advantages`` = Ã, ``aux_weight`` = ς add a second, separately clipped surrogate on the same ratios
    (BPGO, §3: ℓ(A) + ℓ(Ã) ≠ ℓ(A + Ã) once clipping acts); with None or ς = 0 the term is absent (plain GRPO).
    ``heads=True``: ``advantages`` is [B, N], one pre-weighted column c_i·A_i per reward head, and
    ℓ = Σ_i ℓ(c_i·A_i) on the shared ratios (joint reward, §6.1 ``combine: loss``).
    At θ = θ_old (ρ ≡ 1) the loss is −Σ_{b valid} A_b / B_valid, i.e. REINFORCE with a group baseline.
    """
    lr = likelihood_ratio(logp_new, logp_old)
    if heads:
        if advantages.ndim != 2 or advantages.shape[0] != lr.ratio.shape[0]:
            raise ValueError(f"per-head advantages must be [B, N], got {tuple(advantages.shape)}")
        per = sum(clipped_surrogate(advantages[:, i], lr.ratio, clip_range=clip_range)
                  for i in range(advantages.shape[1]))
    else:
        per = clipped_surrogate(advantages, lr.ratio, clip_range=clip_range)
    if aux_advantages is not None and aux_weight != 0.0:
        per = per + aux_weight * clipped_surrogate(aux_advantages, lr.ratio, clip_range=clip_range)
    loss = grpo_loss(per, valid, n_steps=n_steps, step_mask=step_mask, kl=kl, beta_kl=beta_kl, n_valid=n_valid,
                     position_mask=position_mask)
    m = valid.to(torch.bool).reshape(-1, 1)
    m = m if step_mask is None else m & step_mask.to(torch.bool)  # [B, S or 1]: valid samples × real transitions
    stats = ratio_stats(lr, clip_range=clip_range, mask=m.reshape(m.shape + (1,) * (lr.ratio.ndim - 2)))
    kl_mean = lr.ratio.new_zeros(())
    if kl is not None and bool(m.expand_as(kl).any()):
        kl_mean = to_compute(kl).detach()[m.expand_as(kl)].mean()
    return GrpoObjective(loss, stats, kl_mean)
