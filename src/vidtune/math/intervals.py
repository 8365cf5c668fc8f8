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
