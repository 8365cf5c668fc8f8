"""Diffusion-DPO in velocity form: loss, β schedules, pair weights, decoupled coefficients (ALGORITHMS.md §8.1, §8.3).

Inputs are per-pair velocity errors (``math.flow_matching.per_sample_mse``): e_θ^w, e_θ^l from the policy and
e_ref^w, e_ref^l from the frozen reference, all [N], with the shared time t: [N]. Everything here is computed in
fp32 (fp64 when e_θ^w is fp64) and is differentiable in the e_θ inputs only where stated.
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from vidtune.math.numerics import compute_dtype

BetaT = Literal["constant", "eps"]
DPOForm = Literal["standard", "reference_free"]
BetaSchedule = Literal["linear", "cosine", "constant"]


def beta_at_t(beta: float, t: Tensor, beta_t: BetaT = "constant") -> Tensor:
    """ALGORITHMS.md §8.1, β_t: ``constant`` β_t = β, or ``eps`` β_t = β·(1 − t)².

    ``t``: [N] flow times → [N]. With ``eps`` the velocity-form loss equals ε-prediction Diffusion-DPO with the
    same β, since ε − ε̂ = (1 − t)(v − v_θ); at t = 1 (pure noise) ``eps`` gives β_t = 0.
    """
    match beta_t:
        case "constant":
            return torch.full_like(t, beta, dtype=compute_dtype(t))
        case "eps":
            return beta * (1.0 - t.to(compute_dtype(t))) ** 2
    raise ValueError(f"unknown dpo.beta_t {beta_t!r}; expected 'constant' or 'eps'")


class DPOLoss(NamedTuple):
    """Loss of §8.1 and the quantities logged each step."""

    loss: Tensor  # scalar L = (1/N)·Σ_k ω_k·ℓ_k
    z: Tensor  # [N] z = −½·β_t·Δ (standard) or β_t·(e_θ^l − e_θ^w) (reference-free)
    delta: Tensor  # [N] Δ = (e_θ^w − e_ref^w) − (e_θ^l − e_ref^l)  (e_ref ≡ 0 for reference-free)
    accuracy: Tensor  # scalar, implicit accuracy mean 1[z > 0]
    margin: Tensor  # scalar, mean z (implicit reward margin)
    winner_gap: Tensor  # scalar, mean(e_θ^w − e_ref^w)
    loser_gap: Tensor  # scalar, mean(e_θ^l − e_ref^l)


def dpo_loss(
    e_w: Tensor,
    e_l: Tensor,
    t: Tensor,
    e_ref_w: Tensor | None = None,
    e_ref_l: Tensor | None = None,
    *,
    beta: float = 5000.0,
    beta_t: BetaT = "constant",
    weights: Tensor | None = None,
    form: DPOForm = "standard",
) -> DPOLoss:
    """ALGORITHMS.md §8.1, Diffusion-DPO loss in velocity form (Wallace et al. 2023; Flow-DPO, Liu et al. 2025).

    ``standard``:  Δ = (e_θ^w − e_ref^w) − (e_θ^l − e_ref^l),  z = −½·β_t·Δ.
    ``reference_free``:  z = β_t·(e_θ^l − e_θ^w)  (no reference; identical to ``standard`` with e_ref ≡ 0 and
    β doubled).  Both:  ℓ = −logsigmoid(z),  L = (1/N)·Σ_k ω_k·ℓ_k.
    ``e_w``/``e_l`` e_θ^w/e_θ^l, ``e_ref_w``/``e_ref_l`` e_ref^w/e_ref^l (standard only), ``t``, ``weights`` ω: [N];
    ω ≡ 1 when None. Limits: π_θ = π_ref gives z = 0, L = log 2 (ω ≡ 1) and implicit accuracy 0; swapping winner and
    loser negates z. N = 0 gives NaN statistics.
    """
    dt = compute_dtype(e_w)
    e_w, e_l = e_w.to(dt), e_l.to(dt)
    bt = beta_at_t(beta, t.to(dt), beta_t)
    match form:
        case "standard":
            if e_ref_w is None or e_ref_l is None:
                raise ValueError("form 'standard' needs the reference errors e_ref_w and e_ref_l")
            gap_w, gap_l = e_w - e_ref_w.to(dt).detach(), e_l - e_ref_l.to(dt).detach()
            delta = gap_w - gap_l
            z = -0.5 * bt * delta
        case "reference_free":
            if e_ref_w is not None or e_ref_l is not None:
                raise ValueError("form 'reference_free' takes no reference errors")
            gap_w, gap_l = e_w, e_l
            delta = e_w - e_l
            z = bt * (e_l - e_w)
        case _:
            raise ValueError(f"unknown DPO form {form!r}; expected 'standard' or 'reference_free'")
    ell = -F.logsigmoid(z)
    w = torch.ones_like(ell) if weights is None else weights.to(dt)
    loss = (w * ell).mean()
    zd = z.detach()
    return DPOLoss(
        loss=loss,
        z=z,
        delta=delta,
        accuracy=(zd > 0).to(dt).mean(),
        margin=zd.mean(),
        winner_gap=gap_w.detach().mean(),
        loser_gap=gap_l.detach().mean(),
    )


def dynamic_beta(
    step: int, beta_0: float, n_anneal: int, kappa: float = 0.8, schedule: BetaSchedule = "linear"
) -> float:
    """ALGORITHMS.md §8.1, dynamic β: β(n) = β_0·f(p), p = min(1, n/N_anneal).

    ``linear`` f = 1 − (1 − κ)·p; ``cosine`` f = κ + (1 − κ)·(1 + cos πp)/2; ``constant`` f = 1. ``step`` n ≥ 0,
    ``n_anneal`` N_anneal ≥ 1 (the run length), ``kappa`` κ. β(0) = β_0 and β(n ≥ N_anneal) = κ·β_0 (except
    ``constant``); monotone in n (non-increasing for κ ≤ 1). κ = 1 makes every schedule constant.
    """
    if step < 0 or n_anneal < 1:
        raise ValueError(f"need step >= 0 and n_anneal >= 1, got step={step}, n_anneal={n_anneal}")
    p = min(1.0, step / n_anneal)
    match schedule:
        case "linear":
            f = 1.0 - (1.0 - kappa) * p
        case "cosine":
            f = kappa + (1.0 - kappa) * (1.0 + math.cos(math.pi * p)) / 2.0
        case "constant":
            f = 1.0
        case _:
            raise ValueError(f"unknown beta schedule {schedule!r}; expected 'linear', 'cosine' or 'constant'")
    return beta_0 * f


class PairWeights(NamedTuple):
    """Kept pairs and their weights (§8.1, pair weights)."""

    index: Tensor  # [n_kept] int64 positions of the kept pairs in the pool, ascending
    omega: Tensor  # [n_kept] ω, mean exactly 1 over the kept pool
    n_dropped: int  # ⌊q·n⌋


def pair_weights(gaps: Tensor, drop_q: float = 0.25, clip: tuple[float, float] = (0.2, 5.0)) -> PairWeights:
    """ALGORITHMS.md §8.1, pair weights from ensemble score gaps (VideoDPO-style, Liu et al. 2025).

    ``gaps`` gap_k = score(w) − score(l) ≥ 0: [n]. Drops exactly ⌊q·n⌋ pairs with the smallest gaps (the pairs
    below Q_q(gap); ties broken by lower position first), then ω_k = clip(gap_k / mean_kept(gap), lo, hi),
    renormalised to mean 1 over the kept pool. Limits: q = 0 keeps all; a kept pool whose gaps are all 0 gets
    ω ≡ 1; renormalisation may move ω outside [lo, hi]. Negative or non-finite gaps are an error.
    """
    g = gaps.to(compute_dtype(gaps)).reshape(-1)
    if not bool(torch.isfinite(g).all()) or bool((g < 0).any()):
        raise ValueError("pair gaps must be finite and >= 0 (gap = score(chosen) - score(rejected))")
    if not 0.0 <= drop_q < 1.0:
        raise ValueError(f"drop quantile q must lie in [0, 1), got {drop_q}")
    n = g.numel()
    n_drop = math.floor(drop_q * n)
    order = torch.sort(g, stable=True).indices
    index = torch.sort(order[n_drop:]).values
    kept = g[index]
    mean = kept.mean() if kept.numel() else torch.zeros((), dtype=g.dtype)
    if kept.numel() == 0 or float(mean) == 0.0:
        return PairWeights(index, torch.ones_like(kept), n_drop)
    omega = (kept / mean).clamp(clip[0], clip[1])
    return PairWeights(index, omega / omega.mean(), n_drop)


def batch_weights(omega: Tensor) -> Tensor:
    """The pool weights ω of a drawn batch [b], renormalised to mean exactly 1 over it: ω_b ← ω_b / mean_batch(ω),
    as SFT does for its structure weights (ALGORITHMS.md §7), so the loss scale does not depend on which pairs a step
    draws. ω ≡ c gives ones. A deliberate addition to §8.1, whose ω has mean 1 over the kept pool only: it keeps the
    relative weights within a batch and gives up the weighting between batches (a batch of one pair gets ω = 1),
    which at the default batch of 8 keeps every step's gradient on the same scale."""
    w = omega.to(compute_dtype(omega))
    return w / w.mean()


class DecoupledCoefficients(NamedTuple):
    """Per-pair coefficients of §8.3 (no gradient): ∇L = Σ_k winner_k·∇e_θ^{w,k} + Σ_k loser_k·∇e_θ^{l,k}."""

    eta: Tensor  # [N] η_k = β_{t_k}·sigmoid(−z_k)·ω_k / N
    winner: Tensor  # [N] ½η (standard) or η (reference-free)
    loser: Tensor  # [N] −winner


def decoupled_coefficients(
    z: Tensor,
    t: Tensor,
    *,
    beta: float = 5000.0,
    beta_t: BetaT = "constant",
    weights: Tensor | None = None,
    form: DPOForm = "standard",
) -> DecoupledCoefficients:
    """ALGORITHMS.md §8.3, decoupled-gradient coefficients η_k = β_{t_k}·sigmoid(−z_k)·ω_k / N (no gradient).

    ``z``: [N] from :func:`dpo_loss` (detached here), ``t``, ``weights`` ω: [N]; ``beta`` is the same β passed to
    :func:`dpo_loss`. Backward on Σ_k winner_k·e_θ^{w,k} and then on Σ_k loser_k·e_θ^{l,k} accumulates exactly
    ∇L: standard winner = ½η (dz/de_w = −½β_t), reference-free winner = η (dz/de_w = −β_t); loser = −winner.
    This is the general η = β·sigmoid(−β·Â) with log π_θ(y) ↦ −½·e_θ^y and β·Â ↦ z.
    """
    zd = z.detach().to(compute_dtype(z))
    n = zd.numel()
    w = torch.ones_like(zd) if weights is None else weights.detach().to(zd.dtype)
    eta = beta_at_t(beta, t.detach().to(zd.dtype), beta_t) * torch.sigmoid(-zd) * w / max(n, 1)
    match form:
        case "standard":
            winner = 0.5 * eta
        case "reference_free":
            winner = eta
        case _:
            raise ValueError(f"unknown DPO form {form!r}; expected 'standard' or 'reference_free'")
    return DecoupledCoefficients(eta, winner, -winner)
