"""Dataclasses that cross package lines (DESIGN.md §2). No logic beyond shape bookkeeping."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from vidtune.math.sde import ISOTROPIC, Pool


@dataclass
class Rollout:
    """A batch of SDE trajectories with their per-step log-probabilities (ALGORITHMS.md §1).

    states      [B, S+1, C, F, H, W]  x_0 (t = 1) … x_S (t = 0), prompt-major (row b = p·G + g)
    grid        [S+1]                 time grid t_0 = 1 > … > t_S = 0 (fp64)
    sigmas      [S]                   σ_s of each transition (0 for ODE steps)
    train_steps [B, n]                indices s of the trained transitions of each sample (never S − 1)
    logp_old    [B, n] or [B, n, F, H, W]  log-density of x_{s+1} under π_old, ``reduction`` of §1
    noise_pool  (p_F, p_H, p_W)       blocks of the coarse SDE noise ((1, 1, 1): isotropic); densities are on Pᵀx
    """

    states: torch.Tensor
    grid: torch.Tensor
    sigmas: torch.Tensor
    train_steps: torch.Tensor
    logp_old: torch.Tensor
    prompts: list[str]
    seeds: list[int]
    group_size: int
    guidance: float
    reduction: str
    noise_pool: Pool = ISOTROPIC  # block sizes of the SDE noise (§1 "Coarse noise")
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def final(self) -> torch.Tensor:
        return self.states[:, -1]


@dataclass
class RewardOutput:
    """Scores of a batch: ``scores`` [B] in the reward's documented range; optional heads and maps."""

    scores: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)
    maps: torch.Tensor | None = None
    gate_failed: torch.Tensor | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
