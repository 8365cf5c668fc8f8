"""Per-prompt group advantages of GRPO (ALGORITHMS.md §2.1) with the invalid-reward rules of §0.

Layout is prompt-major: a flat batch ``[B]`` is viewed as ``[P, G]`` by a row-major reshape, so rows
``p*G … p*G+G-1`` belong to prompt ``p``. Statistics are always per prompt, never over the whole batch.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.math.numerics import to_compute

AdvantageMode = Literal["zscore", "mean_baseline"]


class GroupStats(NamedTuple):
    """Statistics of each prompt's group over its valid samples."""

    mean: Tensor  # [P]  R̄_p (NaN when the group has no valid sample)
    std: Tensor  # [P]  std_u(r_p,·) (NaN when the group has fewer than 2 valid samples)
    count: Tensor  # [P]  number of valid samples (int64)
    valid: Tensor  # [P, G] bool, finite reward and (if given) the caller's mask


def group_stats(rewards: Tensor, valid: Tensor | None = None) -> GroupStats:
    """Per-prompt mean R̄_p and unbiased std std_u over valid samples (ALGORITHMS.md §2.1, group statistics).

    ``rewards`` r: [P, G] (any float dtype; computed in fp32, or fp64 for fp64 input). A sample is valid when its
    reward is finite and ``valid`` (optional [P, G] bool) allows it (§0, invalid values). Groups without valid
    samples get mean NaN; groups with fewer than 2 get std NaN (std_u needs n−1 ≥ 1).
    """
    r = to_compute(rewards)
    ok = torch.isfinite(r) if valid is None else torch.isfinite(r) & valid.to(torch.bool)
    n = ok.sum(dim=1)
    mean = torch.where(ok, r, 0.0).sum(dim=1) / n
    dev = torch.where(ok, r - mean[:, None], 0.0)
    var = dev.square().sum(dim=1) / (n - 1)
    var = torch.where(n >= 2, var, torch.nan)
    return GroupStats(mean=mean, std=var.sqrt(), count=n, valid=ok)


class GroupAdvantages(NamedTuple):
    """Advantages and the counters of §0/§2 that are logged every step."""

    advantages: Tensor  # [B]  A_b (0 for invalid samples and degenerate groups)
    valid: Tensor  # [B] bool, valid samples (defines B_valid of the loss normaliser, §2.4)
    group_mean: Tensor  # [P]  R̄_p over valid samples
    group_std: Tensor  # [P]  std_u over valid samples
    degenerate: Tensor  # [P] bool, groups forced to A = 0 (see degenerate_groups)
    invalid_count: int  # samples with a non-finite reward (or masked out by the caller)
    degenerate_groups: int  # groups forced to A = 0: < 2 valid samples, identical rewards, or std_u < std_floor
    floored_groups: int  # the subset of degenerate groups caused by std_floor (≥ 2 valid, not constant)
    clipped_fraction: float  # fraction of valid samples with |A| > A_max before the clip


def group_advantages(
    rewards: Tensor,
    group_size: int,
    *,
    mode: AdvantageMode = "zscore",
    eps: float = 1e-4,
    std_floor: float = 0.0,
    adv_clip: float = 5.0,
    valid: Tensor | None = None,
) -> GroupAdvantages:
    """Per-prompt GRPO advantages (ALGORITHMS.md §2.1, "A_{p,g}", floor, clip; `advantage: mean_baseline`).

    Symbols: ``rewards`` = r_b, ``group_size`` = G, ``eps`` = ε_A, ``std_floor`` = std_floor, ``adv_clip`` = A_max,
    ``valid`` = optional extra validity mask (e.g. gates), all shaped [B] with B = P·G prompt-major (a [P, G]
    input is accepted and flattened). Returns A: [B] in fp32 (fp64 for fp64 input).

        zscore        : A = (r − R̄_p) / (std_u(r_p,·) + ε_A)
        mean_baseline : A = r − R̄_p                      (reward units; re-tune lr and A_max)
        then          : A_p,· = 0 if std_u < std_floor;  A ← clip(A, −A_max, A_max)

    Rules of §0: non-finite rewards are invalid (excluded from R̄, std_u; A = 0); a group with < 2 valid samples
    or identical valid rewards gets A = 0 exactly. Limits: std_floor = 0 disables the floor; with unbiased std
    |A| < (G−1)/√G, so the default A_max = 5 never binds for G ≤ 26; mean_baseline = zscore·(std_u + ε_A).
    """
    if group_size < 2:
        raise ValueError(f"group_size (G) must be >= 2 for per-prompt statistics, got {group_size}")
    flat = rewards.reshape(-1)
    if flat.numel() == 0 or flat.numel() % group_size:
        raise ValueError(
            f"rewards hold {flat.numel()} samples, not a positive multiple of group_size={group_size} "
            "(prompt-major layout [B] = [P, G])"
        )
    r = to_compute(flat).view(-1, group_size)
    mask = None if valid is None else valid.reshape(r.shape)
    stats = group_stats(r, mask)
    ok = stats.valid
    lo = torch.where(ok, r, torch.inf).amin(dim=1)
    hi = torch.where(ok, r, -torch.inf).amax(dim=1)
    constant = (stats.count < 2) | (lo == hi)  # identical rewards → exactly 0 (the float mean may be off by 1 ulp)
    floored = ~constant & (stats.std < std_floor)
    zero_group = constant | floored

    centred = r - stats.mean[:, None]
    match mode:
        case "zscore":
            adv = centred / (stats.std[:, None] + eps)
        case "mean_baseline":
            adv = centred
        case _:
            raise ValueError(f"advantage mode must be 'zscore' or 'mean_baseline', got {mode!r}")
    adv = torch.where(ok & ~zero_group[:, None], adv, 0.0)
    clipped = adv.abs() > adv_clip
    adv = adv.clamp(-adv_clip, adv_clip)
    n_valid = int(ok.sum())
    return GroupAdvantages(
        advantages=adv.reshape(-1),
        valid=ok.reshape(-1),
        group_mean=stats.mean,
        group_std=stats.std,
        degenerate=zero_group,
        invalid_count=int((~ok).sum()),
        degenerate_groups=int(zero_group.sum()),
        floored_groups=int(floored.sum()),
        clipped_fraction=float(clipped.sum()) / n_valid if n_valid else 0.0,
    )


def advantage_push(advantages: Tensor, feature: Tensor, group_size: int) -> float:
    """Direction of one REINFORCE step along a per-sample feature (a diagnostic, benchmarks/grpo_signal.py):

        push = Σ_b A_b·(f_b − f̄_p(b)) / Σ_b |A_b|

    over the samples b where f is finite, with f̄_p the mean of f over the finite samples of b's group. Positive:
    the step raises the likelihood of samples with above-group-average f. NaN when no finite f has A ≠ 0.
    ``advantages`` and ``feature`` are [B] (prompt-major, B = P·G)."""
    a = to_compute(advantages).reshape(-1, group_size)
    f = to_compute(feature).reshape(-1, group_size)
    ok = torch.isfinite(f)
    f0 = torch.where(ok, f, 0.0)
    fbar = f0.sum(1, keepdim=True) / ok.sum(1, keepdim=True).clamp_min(1)
    den = torch.where(ok, a.abs(), 0.0).sum()
    if den == 0:
        return float("nan")
    return float((a * torch.where(ok, f - fbar, 0.0)).sum() / den)
