"""BPGO — Bayesian prior-guided optimisation (ALGORITHMS.md §3; Liu et al. 2025, arXiv 2511.18919).

RAS scales each group's clipped advantages by a reliability weight w_p from Δ_p = R̄_p − R⁰_p (inter-group);
CRT re-shapes rewards around the prior R⁰_p and adds a second, separately clipped surrogate term (intra-group).
Shapes: rewards [B] = [P, G] prompt-major; prior R⁰ [P] with NaN = no usable prior.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.math.advantages import AdvantageMode, GroupAdvantages, group_advantages
from vidtune.math.bpgo_prior import KMode, SharpnessState, sharpness
from vidtune.math.grpo_loss import GrpoObjective, grpo_objective
from vidtune.math.numerics import to_compute

RasMode = Literal["paper", "posterior"]
CrtMode = Literal["paper", "sigmoid", "off"]


def ras_paper(delta: Tensor, *, alpha: float = 0.5, k: float = 1.0) -> Tensor:
    """ALGORITHMS.md §3, RAS (paper form): w_p = 1 + α·(2·sigmoid(k·Δ_p) − 1), evaluated as 1 + α·tanh(k·Δ_p/2).

    ``delta`` = Δ_p: [P]; ``alpha`` = α; ``k`` = k. Returns w: [P] in (1−α, 1+α) (the bounds are reached only when
    tanh rounds to ±1). Exactly 1 at Δ = 0 or α = 0 (α = 0 is the "CRT only" ablation); odd: w(Δ) + w(−Δ) = 2.
    """
    return 1.0 + alpha * torch.tanh(0.5 * k * delta)


def ras_posterior(
    group_mean: Tensor, group_std: Tensor, prior: Tensor, n: Tensor | int, *, sigma0_sq: float = 1.0,
    alpha_post: float = 1.0,
) -> Tensor:
    """ALGORITHMS.md §3, `ras: posterior` — Normal model of the group mean with prior N(R⁰_p, σ_0²).

    ``group_mean`` = R̄_p, ``group_std`` = std_u(r_p,·), ``prior`` = R⁰_p, ``n`` = samples per group: [P] (or int).
    s² = std_u² + 1e-8; v_post = 1/(n/s² + 1/σ_0²); m_post = v_post·(n·R̄/s² + R⁰/σ_0²);
    q = 1 − Φ((R⁰ − m_post)/√v_post); w = clamp(1 + α_post·(0.5 + q − 1), 0.01, 10).
    Uses the identity R⁰ − m_post = −v_post·(n/s²)·Δ, so q = Φ(√v_post·n·Δ/s²) and w = 1 exactly at Δ = 0.
    Saturates (q ∈ {0, 1}, w ∈ {0.5, 1.5} for α_post = 1) when the within-group variance is small.
    """
    s2 = group_std.square() + 1e-8
    prec = n / s2
    v_post = 1.0 / (prec + 1.0 / sigma0_sq)
    q = torch.special.ndtr(v_post.sqrt() * prec * (group_mean - prior))
    return (1.0 + alpha_post * (q - 0.5)).clamp(0.01, 10.0)


def crt_transform(
    rewards: Tensor, prior: Tensor, *, mode: Literal["paper", "sigmoid"] = "paper", lam: float = 1.0,
    a: float = 50.0, tau: float = 5.0, exp_clamp: float = 30.0,
) -> Tensor:
    """ALGORITHMS.md §3, CRT (contrastive reward transform), element-wise on RAW rewards.

    ``rewards`` = r: [P, G]; ``prior`` = R⁰: [P]; ``lam`` = λ; ``a``, ``tau`` = a, τ_crt; ``exp_clamp`` = 30.
        paper   : R̃ = (λ·(r − R⁰) + 1[r > R⁰]) · exp(clamp(r, −30, 30))
        sigmoid : R̃ = (a·(r − R⁰) + 1[r > R⁰]) · sigmoid(r/τ) · r
    Pitfalls: paper CRT decreases for r < R⁰ − 1 and depends on the absolute reward scale; sigmoid CRT is
    non-monotone below ≈ R⁰/2 (use only for non-negative rewards). Returns R̃: [P, G] (fp32, or fp64).
    """
    r = to_compute(rewards)
    r0 = to_compute(prior).reshape(-1, 1)
    above = (r > r0).to(r.dtype)
    match mode:
        case "paper":
            return (lam * (r - r0) + above) * torch.exp(r.clamp(-exp_clamp, exp_clamp))
        case "sigmoid":
            return (a * (r - r0) + above) * torch.sigmoid(r / tau) * r
        case _:
            raise ValueError(f"bpgo crt must be 'paper', 'sigmoid' or 'off', got {mode!r}")


class BpgoAdvantages(NamedTuple):
    advantages: Tensor  # [B] w_⌊b/G⌋·A_b — main term (A = clip(z(r)) from raw rewards)
    aux_advantages: Tensor | None  # [B] Ã_b = clip(z(R̃)) (·w_p with ras_scales_crt); None when crt is off
    weights: Tensor  # [P] w_p (1 for prompts without a prior and for groups §2.1 zeroes)
    delta: Tensor  # [P] Δ_p = R̄_p − R⁰_p from raw rewards (NaN without a prior or valid sample)
    k: float  # RAS sharpness used for this batch
    k_state: SharpnessState  # auto-k state after this batch
    base: GroupAdvantages  # the plain §2.1 result on raw rewards (valid mask, counters)
    no_prior: int  # prompts with a non-finite prior (`bpgo/no_prior`)
    ras_saturated: int  # groups with w_p within 0.1 % of the range of a RAS bound (posterior hard switch)
    crt_below_fraction: float  # valid samples with r < R⁰ − 1 (paper CRT is decreasing there)


def bpgo_advantages(
    rewards: Tensor, prior: Tensor, group_size: int, *, k_state: SharpnessState = SharpnessState(),
    ras: RasMode = "paper", crt: CrtMode = "paper", alpha: float = 0.5, k_mode: KMode = "auto",
    k_target: float = 2.0, k_fixed: float = 1.0, k_momentum: float = 0.9, lam: float = 1.0, crt_a: float = 50.0,
    crt_tau: float = 5.0, sigma0_sq: float = 1.0, alpha_post: float = 1.0, ras_scales_crt: bool = False,
    mode: AdvantageMode = "zscore", eps: float = 1e-4, std_floor: float = 0.0, adv_clip: float = 5.0,
    valid: Tensor | None = None,
) -> BpgoAdvantages:
    """ALGORITHMS.md §3, BPGO advantages: A = clip(z(r)) scaled by RAS w_p, and Ã = clip(z(R̃)) from CRT.

    ``rewards`` = r: [B] (raw, one scalar reward); ``prior`` = R⁰: [P] (NaN = no usable prior → w_p = 1, Ã_p = 0);
    ``k_state``/``k_mode``/``k_target``/``k_fixed``/``k_momentum``: auto-k (:func:`sharpness`), updated with this
    batch's Δ before use and returned as ``k_state``;
    ``alpha`` = α; ``lam`` = λ; ``crt_a``, ``crt_tau`` = a, τ_crt; ``sigma0_sq``, ``alpha_post`` = σ_0², α_post;
    z/clip = §2.1 via :func:`group_advantages` (``mode``, ``eps``, ``std_floor``, ``adv_clip``, ``valid``).
    RAS reads RAW rewards only, so w_p does not depend on λ, the CRT mode or ς. Ã is computed on the raw valid
    mask; in groups that §2.1 zeroes (too few valid samples, constant, below std_floor) Ã = 0 and w_p = 1.
    Limits: α = 0 and crt = "off" give plain GRPO exactly (RAS-only: crt = "off"; CRT-only: α = 0).
    """
    base = group_advantages(rewards, group_size, mode=mode, eps=eps, std_floor=std_floor, adv_clip=adv_clip,
                            valid=valid)
    r0 = to_compute(prior).reshape(-1).to(base.group_mean.dtype)
    n_prompts = base.group_mean.shape[0]
    if r0.shape[0] != n_prompts:
        raise ValueError(f"prior R⁰ has {r0.shape[0]} entries, expected one per prompt (P = {n_prompts})")
    has_prior = torch.isfinite(r0)
    delta = base.group_mean - r0
    usable = torch.isfinite(delta) & ~base.degenerate
    k, k_state = sharpness(k_state, delta, mode=k_mode, k_target=k_target, k_fixed=k_fixed, momentum=k_momentum)
    match ras:
        case "paper":
            w = ras_paper(torch.where(usable, delta, 0.0), alpha=alpha, k=k)
            lo, hi = 1.0 - abs(alpha), 1.0 + abs(alpha)
        case "posterior":
            std = torch.where(base.degenerate, 0.0, base.group_std)
            w = ras_posterior(base.group_mean, std, r0, base.valid.view(n_prompts, -1).sum(1).to(r0.dtype),
                              sigma0_sq=sigma0_sq, alpha_post=alpha_post)
            lo, hi = max(1.0 - 0.5 * abs(alpha_post), 0.01), min(1.0 + 0.5 * abs(alpha_post), 10.0)
        case _:
            raise ValueError(f"bpgo ras must be 'paper' or 'posterior', got {ras!r}")
    w = torch.where(usable, w, 1.0)
    tol = 1e-3 * (hi - lo)
    saturated = int((usable & ((w <= lo + tol) | (w >= hi - tol))).sum()) if hi > lo else 0
    main = (base.advantages.view(n_prompts, -1) * w[:, None]).reshape(-1)

    raw = to_compute(rewards).reshape(n_prompts, -1).to(r0.dtype)
    ok = base.valid.view(n_prompts, -1)
    below = (ok & (raw < r0[:, None] - 1.0)).sum()
    n_ok = int(ok.sum())
    aux = None
    if crt != "off":
        r_tilde = crt_transform(raw, torch.where(has_prior, r0, 0.0), mode=crt, lam=lam, a=crt_a, tau=crt_tau)
        z = group_advantages(r_tilde, group_size, mode=mode, eps=eps, adv_clip=adv_clip, valid=ok).advantages
        keep = has_prior & ~base.degenerate
        aux = torch.where(keep[:, None], z.view(n_prompts, -1), 0.0)
        aux = (aux * w[:, None] if ras_scales_crt else aux).reshape(-1)
    return BpgoAdvantages(
        advantages=main, aux_advantages=aux, weights=w, delta=delta, k=k, k_state=k_state, base=base,
        no_prior=int((~has_prior).sum()), ras_saturated=saturated,
        crt_below_fraction=float(below) / n_ok if n_ok else 0.0,
    )


def bpgo_objective(
    logp_new: Tensor, logp_old: Tensor, adv: BpgoAdvantages, *, varsigma: float = 1.0, clip_range: float = 1e-4,
    n_steps: Tensor | int | None = None, step_mask: Tensor | None = None, kl: Tensor | None = None,
    beta_kl: float = 0.0, n_valid: Tensor | int | None = None, position_mask: Tensor | None = None,
) -> GrpoObjective:
    """ALGORITHMS.md §3, BPGO loss: L = (1/B_valid)·Σ_b (1/|𝒮_b|)·Σ_s [mean_ν ℓ(w·A) + ς·mean_ν ℓ(Ã)] (+ β_KL·k).

    ``adv`` from :func:`bpgo_advantages`; ``varsigma`` = ς; other arguments as :func:`grpo_objective` (§2.2–2.4).
    Both terms share the ratios ρ but are clipped separately (ℓ(A) + ℓ(Ã) ≠ ℓ(A + Ã)); ℓ(w·A) = w·ℓ(A) for
    w > 0 reproduces the paper's w_p·L_GRPO. With crt off or ς = 0 the auxiliary term is absent.
    For a micro-batch, slice ``adv.advantages``/``aux_advantages`` yourself and call :func:`grpo_objective`.
    """
    return grpo_objective(
        logp_new, logp_old, adv.advantages, adv.base.valid, clip_range=clip_range, n_steps=n_steps,
        step_mask=step_mask, kl=kl, beta_kl=beta_kl, n_valid=n_valid, position_mask=position_mask,
        aux_advantages=adv.aux_advantages, aux_weight=varsigma,
    )
