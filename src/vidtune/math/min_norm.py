"""Joint reward: min-norm balancing of per-head advantages (ALGORITHMS.md §6.1–6.3; gates §6.4 live elsewhere).

The simplex QP solvers (closed form, pairwise Frank–Wolfe) are in `vidtune.math.min_norm_solver`.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.math.min_norm_solver import solve_min_norm
from vidtune.math.numerics import compute_dtype

Mode = Literal["mgda_batch", "mgda_sample", "fixed"]


def mgda_sample(adv: Tensor) -> tuple[Tensor, Tensor]:
    """Per-sample exact min-norm (ALGORITHMS.md §6.1, mode mgda_sample): argmin_{c∈Δ^N} (Σ_i c_i·a_i)².

    adv: a = (A_{b,1…N}), [B, N] finite. A_b = 0 if min a ≤ 0 ≤ max a, else a_{i*}, i* = argmin_i |a_i| (first on
    ties). c_b: e_{i*} without a sign change; with a zero entry, e_i of the first zero; otherwise the two-point mix of
    the negative and the positive entry closest to 0, weights (a₊, −a₋)/(a₊ − a₋), so Σ_i c_i a_i = 0.
    Returns (c [B, N], A [B]) in adv's dtype. Reduces to A = a for N = 1.
    """
    big = torch.full_like(adv, float("inf"))
    i_star = adv.abs().argmin(dim=1)
    neg = torch.where(adv < 0, adv.abs(), big).argmin(dim=1)  # negative entry closest to 0
    pos = torch.where(adv > 0, adv, big).argmin(dim=1)  # positive entry closest to 0
    an, ap = adv.gather(1, neg[:, None])[:, 0], adv.gather(1, pos[:, None])[:, 0]
    straddle = (adv.amin(dim=1) <= 0) & (adv.amax(dim=1) >= 0)
    mixed = straddle & (an < 0) & (ap > 0) & ~(adv == 0).any(dim=1)
    c = torch.nn.functional.one_hot(i_star, adv.shape[1]).to(adv.dtype)
    den = torch.where(mixed, ap - an, torch.ones_like(ap))
    mix = torch.zeros_like(c).scatter(1, neg[:, None], (ap / den)[:, None])
    mix = mix.scatter(1, pos[:, None], (-an / den)[:, None])
    c = torch.where(mixed[:, None], mix, c)
    a = torch.where(straddle, torch.zeros_like(an), adv.gather(1, i_star[:, None])[:, 0])
    return c, a


class JointAdvantage(NamedTuple):
    c: Tensor  # head weights: [N] (mgda_batch, fixed) or [B, N] (mgda_sample); excluded heads 0
    advantage: Tensor  # combined A, [B], clipped to ±A_max; 0 for invalid samples
    objective: Tensor  # 0-d: cᵀMc (mgda_batch, fixed) or mean_b A_b² over valid samples (mgda_sample), pre-clip
    norm: Tensor  # 0-d: ‖A‖₂ over valid samples (pre-clip); near 0 ⇒ Pareto-stationary heads (training stalls)
    iterations: int  # Frank–Wolfe steps (0 for closed forms)
    excluded: Tensor  # [N] bool, heads with non-finite advantages on a valid sample (counted)
    degenerate: bool  # M = 0 (every usable head degenerate) or no usable head: uniform c, A = 0 (counted)


def joint_advantage(
    adv: Tensor, valid: Tensor | None = None, *, mode: Mode = "mgda_batch", weights: Tensor | None = None,
    a_max: float | None = 5.0,
) -> JointAdvantage:
    """Combine N per-head advantages into one (ALGORITHMS.md §6.1–6.3, min-norm balancing at the advantage level).

    adv: A_i = z(r_{·,i}) per head (§2.1, unclipped), [B, N]; valid: [B] bool (default all); weights: w for `fixed`,
    [N], normalised to sum 1 over usable heads. M_ij = ⟨A_i, A_j⟩ over valid samples and usable heads (heads with a
    non-finite value on a valid sample are excluded, c_i = 0). mgda_batch: c* = argmin_{c∈Δ} cᵀMc, A = Σ_i c*_i A_i;
    mgda_sample: `mgda_sample` per valid sample; fixed: A = Σ_i w_i A_i. Then A ← clip(A, ±a_max) (None = off).
    M = 0 (mean diag ≤ tiny) or no usable head → uniform c over usable heads (all heads if none), A = 0, degenerate.
    Computed in fp32 (fp64 for fp64 input). N = 1 reduces to A = A_1 (plain GRPO).
    """
    dt = compute_dtype(adv)
    adv = adv.to(dt)
    b, n = adv.shape
    valid = torch.ones(b, dtype=torch.bool, device=adv.device) if valid is None else valid.to(torch.bool)
    excluded = ~torch.isfinite(adv[valid]).all(dim=0)
    use = (~excluded).nonzero().flatten()
    a_use = torch.where(valid[:, None], adv[:, use], torch.zeros((), dtype=dt, device=adv.device))
    gram = (a_use[:, :, None] * a_use[:, None, :]).sum(dim=0)  # elementwise: no BLAS threading for tiny N
    zero_a = torch.zeros(b, dtype=dt, device=adv.device)
    k = use.numel()
    if k == 0 or not bool(gram.diagonal().mean() > torch.finfo(dt).tiny):
        c = torch.zeros(n, dtype=dt, device=adv.device)
        c[use if k else torch.arange(n)] = 1.0 / (k if k else n)
        if mode == "mgda_sample":
            c = c.expand(b, n).clone()
        zero = torch.zeros((), dtype=dt, device=adv.device)
        return JointAdvantage(c, zero_a, zero, zero, 0, excluded, True)
    iters = 0
    match mode:
        case "mgda_batch" | "fixed":
            if mode == "fixed":
                if weights is None:
                    raise ValueError("joint mode 'fixed' needs weights (one per reward head)")
                cu = weights.to(torch.float64).cpu()[use.cpu()]
                cu = cu / cu.sum()
            else:
                cu, iters = solve_min_norm(gram)
            cu = cu.to(dt).to(adv.device)
            c = torch.zeros(n, dtype=dt, device=adv.device).index_copy(0, use, cu)
            a = (a_use * cu).sum(dim=1)
            objective = (cu[:, None] * gram * cu[None, :]).sum()
        case "mgda_sample":
            cs, a = mgda_sample(a_use)
            a = torch.where(valid, a, zero_a)
            c = torch.zeros(b, n, dtype=dt, device=adv.device).index_copy(1, use, cs)
            objective = a.square().sum() / valid.sum().clamp_min(1)
        case _:
            raise ValueError(f"joint mode must be 'mgda_batch', 'mgda_sample' or 'fixed', got {mode!r}")
    norm = a.norm()
    if a_max is not None:
        a = a.clamp(-a_max, a_max)
    return JointAdvantage(c, a, objective, norm, iters, excluded, False)


def weighted_head_advantages(adv: Tensor, c: Tensor, valid: Tensor | None = None, *, a_max: float | None = 5.0
                             ) -> Tensor:
    """Per-head advantages for ``combine: loss`` (ALGORITHMS.md §6.1): column i = c_i·clip(A_i, ±A_max) → [B, N].

    With ℓ positively homogeneous (§2.2, ℓ(c·A) = c·ℓ(A) for c ≥ 0), L = Σ_i c_i·L(A_i) is the loss of these
    pre-weighted columns summed on shared ratios (``grpo_objective(..., heads=True)``). adv: A_i [B, N] (unclipped
    z-scores); c: [N] or [B, N] (mgda_sample) from :func:`joint_advantage`, 0 on excluded heads; invalid samples and
    non-finite entries of excluded heads become 0.
    """
    a = adv if a_max is None else adv.clamp(-a_max, a_max)
    a = torch.where(torch.isfinite(a), a, torch.zeros((), dtype=a.dtype, device=a.device))
    out = a * (c if c.ndim == 2 else c[None, :]).to(a.dtype)
    if valid is not None:
        out = torch.where(valid.to(torch.bool)[:, None], out, torch.zeros((), dtype=a.dtype, device=a.device))
    return out
