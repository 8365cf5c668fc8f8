"""Confidence intervals for evaluation means."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch


class MeanInterval(NamedTuple):
    mean: float
    low: float
    high: float
    n: int


def mean_interval(values: torch.Tensor, z: float = 1.96) -> MeanInterval:
    """Normal-approximation interval mean ± z·s/√n over the finite entries of ``values`` (s: unbiased std).

    n = 0 gives NaNs; n = 1 gives a zero-width interval (no spread estimate).
    """
    v = values[torch.isfinite(values)].double()
    n = int(v.numel())
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0)
    m = float(v.mean())
    half = z * float(v.std(unbiased=True)) / math.sqrt(n) if n > 1 else 0.0
    return MeanInterval(m, m - half, m + half, n)


# two-sided 95 % Student-t quantiles t_{0.975, df}
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def seed_interval(values: list[float]) -> MeanInterval:
    """Student-t interval over a few training seeds: mean ± t_{0.975, n−1}·s/√n (s: unbiased std, n ≤ 11);
    n = 1 gives a zero-width interval."""
    n = len(values)
    if not 1 <= n <= max(T975) + 1:
        raise ValueError(f"seed_interval needs 1 to {max(T975) + 1} values, got {n}")
    return mean_interval(torch.tensor(values, dtype=torch.float64), z=T975.get(n - 1, 0.0))


def paired_prompt_difference(a: torch.Tensor, b: torch.Tensor, k: int, z: float = 1.96) -> MeanInterval:
    """Paired difference of two evaluations of the same eval set (``eval.samples_per_prompt`` = k, repeat-major
    per-sample scores [k·N], stages/evaluate.eval_set): d_i = (1/k)·Σ_j (a_{jN+i} − b_{jN+i}) per prompt i, then
    :func:`mean_interval` over the N prompts. Pairing on the prompt removes the prompt-difficulty variance that an
    unpaired comparison of the two means carries. A metric undefined on some clips (NaN, e.g. the gravity critic
    off the fall/bounce prompts) averages d_i over the repeats where both are finite; a prompt with none is left
    out (n counts the prompts used)."""
    if a.shape != b.shape or a.ndim != 1 or a.numel() % k:
        raise ValueError(f"paired scores must be two [k·N] vectors with k={k}, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    d = (a.double() - b.double()).view(k, -1).nanmean(0)
    return mean_interval(d, z)
