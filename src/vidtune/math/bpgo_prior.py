"""BPGO running estimates passed by value: the auto-k sharpness EMA and the `ema` prior (ALGORITHMS.md §3).

Both states are small frozen dataclasses of Python floats (checkpointable as plain numbers). Every function takes
the old state and returns a new one; nothing is stored in the module.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
from torch import Tensor

KMode = Literal["auto", "fixed"]


@dataclass(frozen=True)
class SharpnessState:
    """ŝ of §3 "Sharpness k": EMA of std_u(Δ_p) over batches with ≥ 2 usable prompts; None before any estimate."""

    s_hat: float | None = None


class Sharpness(NamedTuple):
    k: float  # RAS sharpness k to use for the current batch
    state: SharpnessState  # the state after this batch (feed it to the next call)


def sharpness(
    state: SharpnessState, delta: Tensor, *, mode: KMode = "auto", k_target: float = 2.0, k_fixed: float = 1.0,
    momentum: float = 0.9,
) -> Sharpness:
    """ALGORITHMS.md §3, "Sharpness k" (`k_mode`): k = k_target / max(ŝ, 1e-6).

    ``delta`` = Δ_p = R̄_p − R⁰_p: [P]; non-finite entries (no prior, no valid sample) are ignored. ``momentum``
    = 0.9; ŝ is initialised with the first value and updated with the current batch BEFORE use:
    ŝ ← momentum·ŝ + (1 − momentum)·std_u(Δ). A batch with < 2 usable prompts leaves ŝ unchanged; before any
    estimate k = k_fixed. ``mode = "fixed"`` always returns k_fixed and the unchanged state.
    Limit: on the first usable batch k·std_u(Δ) = k_target, so k·|Δ| is O(1) and RAS is not inert.
    std_p(Δ) is taken as the unbiased std (divisor P−1), the §2.1 convention.
    """
    match mode:
        case "fixed":
            return Sharpness(float(k_fixed), state)
        case "auto":
            d = delta.detach().double()
            d = d[torch.isfinite(d)]
            s_hat = state.s_hat
            if d.numel() >= 2:
                s = float(d.std(unbiased=True))
                s_hat = s if s_hat is None else momentum * s_hat + (1.0 - momentum) * s
            if s_hat is None:
                return Sharpness(float(k_fixed), state)
            return Sharpness(k_target / max(s_hat, 1e-6), SharpnessState(s_hat=s_hat))
        case _:
            raise ValueError(f"bpgo k_mode must be 'auto' or 'fixed', got {mode!r}")


@dataclass(frozen=True)
class EmaPrior:
    """`bpgo.prior: ema` state: one prior R⁰ shared by all prompts; None before the first batch has been used."""

    value: float | None = None


def ema_prior_values(state: EmaPrior, n_prompts: int, *, dtype: torch.dtype = torch.float32,
                     device: torch.device | str | None = None) -> Tensor:
    """ALGORITHMS.md §3, `ema` prior: R⁰_p = R⁰ for every prompt p, as [P]; NaN (= no usable prior) before any
    batch has been used, so the first batch gets w_p = 1 and no CRT term (counted as `bpgo/no_prior`)."""
    fill = torch.nan if state.value is None else state.value
    return torch.full((n_prompts,), fill, dtype=dtype, device=device)


def ema_prior_update(state: EmaPrior, group_mean: Tensor, *, momentum: float = 0.9) -> EmaPrior:
    """ALGORITHMS.md §3, `ema` prior: R⁰ ← μ·R⁰ + (1−μ)·mean_p R̄_p, μ = ``momentum`` = 0.9.

    ``group_mean`` = R̄_p: [P] of RAW rewards (non-finite entries ignored). Call AFTER the batch has been used, so
    the prior at step n depends only on batches < n (a group never enters its own prior). The first update sets
    R⁰ = mean_p R̄_p; a batch without any finite R̄_p leaves the state unchanged. momentum = 1 freezes R⁰.
    """
    m = group_mean.detach().double()
    m = m[torch.isfinite(m)]
    if m.numel() == 0:
        return state
    batch = float(m.mean())
    if state.value is None:
        return EmaPrior(value=batch)
    return EmaPrior(value=momentum * state.value + (1.0 - momentum) * batch)
