"""Self-paced reward curriculum, published alternative `taros` (ALGORITHMS.md §5; Li et al. 2025, arXiv 2511.19356).

Pure and stateless. The project rule `competence` is in `vidtune.math.self_paced`. fp32, or fp64 for fp64 input.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from vidtune.math.numerics import compute_dtype


def hoyer(r: Tensor, valid: Tensor | None = None, dim: int = -1) -> Tensor:
    """Hoyer sparsity H(r) = (√n − ‖r‖₁/‖r‖₂)/(√n − 1) ∈ [0, 1] along `dim` (ALGORITHMS.md §5; Hoyer 2004).

    r: any shape; valid: same shape bool (default all) — n counts the valid entries, invalid ones are dropped.
    H = 0 when n ≤ 1 or ‖r‖₂ = 0. H(constant) = 0; H(one-hot) = 1; scale-invariant (H(a·r) = H(r), a ≠ 0).
    """
    dt = compute_dtype(r)
    ok = torch.isfinite(r) if valid is None else torch.isfinite(r) & valid.to(torch.bool)
    x = torch.where(ok, r.to(dt), torch.zeros((), dtype=dt, device=r.device))
    n = ok.sum(dim=dim).to(dt)
    l1, l2 = x.abs().sum(dim=dim), x.square().sum(dim=dim).sqrt()
    root = n.sqrt()
    good = (n > 1) & (l2 > 0)
    h = (root - l1 / torch.where(good, l2, torch.ones_like(l2))) / torch.where(good, root - 1, torch.ones_like(root))
    return torch.where(good, h.clamp(0.0, 1.0), torch.zeros_like(h))


class TarosStep(NamedTuple):
    reward: Tensor  # r̃_{p,g} = Σ_j w_{p,j}·r_{p,g,j}, [P, G]; A = z-score of r̃ within the group (§2.1, caller)
    w: Tensor  # [P, J], softmax(g) per prompt
    g: Tensor  # [P, J] scores g_j
    m: Tensor  # [P, J] group means R̄_{p,j} (0 for a component with no valid score in the group)
    hoyer: Tensor  # [P, J] H(r_{p,·,j})
    phase: Tensor  # [P] argmax_j w_{p,j}


def taros_step(rewards: Tensor, valid: Tensor | None = None, *, tau: Tensor | float = 0.75, beta: float = 0.3,
               ) -> TarosStep:
    """TaRoS curriculum weights per prompt group (ALGORITHMS.md §5, `curriculum.rule: taros`).

    rewards: r_{p,g,j} in [0, 1], [P, G, J]; valid: [P, G] bool (non-finite entries are invalid too); tau: τ_j, [J]
    or float; beta: β.
        g_j = sigmoid(R̄_{p,j} − τ_j) + β·(H(r_{p,·,j}) − H(r_{p,·,j+1})),  H(r_{p,·,J+1}) = 0;  w_p = softmax(g)
    R̄ and H use the valid samples only. Limits: with a unit-slope sigmoid on [0, 1] rewards the first term spans
    ≈ [0.32, 0.56], so w stays close to uniform; ∂g_j/∂R̄_j > 0 (a mastered component gains weight).
    """
    dt = compute_dtype(rewards)
    r = rewards.to(dt)
    ok = torch.isfinite(r) if valid is None else torch.isfinite(r) & valid.to(torch.bool)[..., None]
    x = torch.where(ok, r, torch.zeros((), dtype=dt, device=r.device))
    mean = x.sum(dim=1) / ok.sum(dim=1).clamp_min(1).to(dt)
    h = hoyer(r, ok, dim=1)  # [P, J]
    h_next = torch.cat([h[:, 1:], torch.zeros_like(h[:, :1])], dim=1)
    g = torch.sigmoid(mean - torch.as_tensor(tau, dtype=dt, device=r.device)) + beta * (h - h_next)
    w = torch.softmax(g, dim=-1)
    return TarosStep((r * w[:, None, :]).sum(-1), w, g, mean, h, w.argmax(dim=-1))
