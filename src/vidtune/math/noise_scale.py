"""Gradient noise scale: how much of a mini-batch gradient is signal (McCandlish et al. 2018, "An Empirical Model of
Large-Batch Training", §2.2 and App. A), estimated from n independent per-unit gradients (a unit = one GRPO group).

With per-unit gradients g_i of mean G = E[g] and covariance Σ, a batch of B units has E|ḡ_B|² = |G|² + tr Σ / B.
The *simple noise scale* B_simple = tr Σ / |G|² is the batch at which half of that squared norm is signal.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor


class NoiseScale(NamedTuple):
    signal_sq: float  # unbiased estimate of |G|² (may be < 0 when the signal is below the estimate's noise)
    signal_sq_se: float  # its jackknife standard error over the units
    trace_cov: float  # unbiased estimate of tr Σ
    n: int  # units


def gradient_noise_scale(grads: Tensor) -> NoiseScale:
    """Estimates from per-unit gradients ``grads`` [n, P] (n ≥ 3), in fp64:

        |G|²  ≈ (|Σ_i g_i|² − Σ_i |g_i|²) / (n(n − 1))      (the mean of g_i·g_j over i ≠ j: unbiased)
        tr Σ  ≈ (Σ_i |g_i|² − n·|ḡ|²) / (n − 1)             (unbiased sample variance, summed over coordinates)
        se    = √((n − 1)/n · Σ_i (e_(i) − ē)²)              (jackknife: e_(i) is the |G|² estimate without unit i)
    """
    n = grads.shape[0]
    if grads.ndim != 2 or n < 3:
        raise ValueError(f"need [n ≥ 3, P] per-unit gradients, got {tuple(grads.shape)}")
    g = grads.double()
    total = g.sum(0)
    sq = (g * g).sum(1)  # |g_i|²
    s_sq, q = float(total @ total), float(sq.sum())
    signal = (s_sq - q) / (n * (n - 1))
    trace = (q - s_sq / n) / (n - 1)
    cross = g @ total  # S·g_i
    loo = ((s_sq - 2 * cross + sq) - (q - sq)) / ((n - 1) * (n - 2))  # |S − g_i|² − (Q − |g_i|²)
    se = math.sqrt((n - 1) / n * float(((loo - loo.mean()) ** 2).sum()))
    return NoiseScale(signal, se, trace, n)


def signal_fraction(signal_sq: float, trace_cov: float, batch: float) -> float:
    """Expected share of a B-unit batch gradient's squared norm that is the mean gradient:
    |G|² / (|G|² + tr Σ / B) (McCandlish et al. 2018, Eq. 2.5 rearranged); 0 when the signal estimate is ≤ 0."""
    if signal_sq <= 0:
        return 0.0
    return signal_sq / (signal_sq + trace_cov / batch)


def same_prompt_signal(grads: Tensor, ids: Tensor) -> tuple[float, float, int]:
    """E_p|G_p|²: the mean over ids p (prompts with ≥ 2 units, e.g. groups drawn with different noise) of the mean
    of g_i·g_j over that id's pairs i < j, each product being unbiased for the squared norm |G_p|² of the prompt's
    own mean gradient; its standard error over the ids (pairs of one id share units, ids are independent); and the
    number of ids used. It is the signal a prompt's groups agree on before prompts with different needs are averaged
    into G (|G|² ≤ E_p|G_p|²)."""
    g = grads.double()
    per_id = []
    for p in ids.unique():
        rows = torch.nonzero(ids == p).flatten()
        if len(rows) >= 2:
            gram = g[rows] @ g[rows].T
            per_id.append(float(gram.triu(1).sum()) / (len(rows) * (len(rows) - 1) / 2))
    if len(per_id) < 2:
        raise ValueError(f"need at least 2 ids with 2 or more units, got {len(per_id)}")
    v = torch.tensor(per_id, dtype=torch.float64)
    return float(v.mean()), float(v.std(unbiased=True)) / math.sqrt(len(v)), len(v)
