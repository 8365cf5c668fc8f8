"""SDE rollout step and per-step Gaussian log-density for flow-matching policies.

ALGORITHMS.md §1. The probability-flow ODE dx = v dt is replaced by the reverse-time SDE with the same marginals
(Song et al. 2021); one Euler–Maruyama transition t_s → t_{s+1} (Δt < 0) is

    μ_s = x_s + [ v + σ_s²/(2 t_s) · (x_s + (1 − t_s)·v) ] · Δt,     std_s = σ_s·√|Δt|

so that x_{s+1} ~ N(μ_s, std_s² I). With σ_s = 0 this is the Euler ODE step x + v·Δt.

Coarse exploration noise (project addition, ALGORITHMS.md §1 "Coarse noise"): with a pool (p_F, p_H, p_W) the noise
is ξ = P·z, z ~ N(0, I_d), where P lifts a latent pooled by p_F×p_H×p_W blocks back to full size (each block
constant, divided by √k, k = p_F·p_H·p_W, so PᵀP = I). The SDE's diffusion is then σ²·Π, Π = P·Pᵀ, and the drift
that keeps the marginals is v + σ²/(2t)·Π(x + (1 − t)·v); the transition is a Gaussian on the d-dimensional affine
subspace μ + range(P), whose density is that of Pᵀx_{s+1} ~ N(Pᵀμ, std² I_d).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from vidtune.math.numerics import compute_dtype

Pool = tuple[int, int, int]
ISOTROPIC: Pool = (1, 1, 1)


class SDEStep(NamedTuple):
    mean: torch.Tensor  # μ_s  [B, C, F, H, W]
    std: torch.Tensor  # std_s, broadcastable to mean (0-dim or [B, 1, 1, 1, 1])


def noise_level(
    t: torch.Tensor | float,
    t_next: torch.Tensor | float,
    schedule: Literal["dance", "flow_grpo"] = "dance",
    eta: float = 0.3,
    a: float = 0.7,
) -> torch.Tensor:
    """ALGORITHMS.md §1, noise schedules σ_s.

    ``dance`` (DanceGRPO): σ_s = η.  ``flow_grpo`` (Flow-GRPO): σ_s = a·√(t_s / (1 − t̃_s)), t̃_s = t_s if t_s < 1
    else t_{s+1} (at t = 1 the denominator uses the next grid time).
    """
    t = torch.as_tensor(t, dtype=torch.float64)
    t_next = torch.as_tensor(t_next, dtype=torch.float64)
    match schedule:
        case "dance":
            return torch.full_like(t, float(eta))
        case "flow_grpo":
            t_tilde = torch.where(t < 1, t, t_next)
            return a * torch.sqrt(t / (1 - t_tilde))
    raise ValueError(f"unknown noise schedule {schedule!r}")


def _bcast(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(s, dtype=like.dtype, device=like.device)
    return s.reshape(s.shape + (1,) * (like.ndim - s.ndim)) if s.ndim else s


def pooled_shape(shape: tuple[int, ...], pool: Pool) -> tuple[int, ...]:
    """Shape of Pᵀx for a latent of ``shape`` (C, F, H, W) or (B, C, F, H, W): the last three sizes divided by the
    pool; a size the pool does not divide is an error naming both."""
    head, tail = tuple(shape[:-3]), tuple(shape[-3:])
    if any(n % p for n, p in zip(tail, pool)):
        raise ValueError(f"noise pool {tuple(pool)} does not divide the latent's (F, H, W) = {tail}")
    return head + tuple(n // p for n, p in zip(tail, pool))


def subspace_project(x: torch.Tensor, pool: Pool) -> torch.Tensor:
    """ALGORITHMS.md §1 "Coarse noise", Pᵀx: the sum over each p_F×p_H×p_W block divided by √k (= block mean·√k),
    [B, C, F, H, W] → [B, C, F/p_F, H/p_H, W/p_W]. The identity for the pool (1, 1, 1). A pool that does not divide
    (F, H, W) is an error (avg_pool3d would silently drop the remainder)."""
    if tuple(pool) == ISOTROPIC:
        return x
    pooled_shape(tuple(x.shape), pool)  # raises on a remainder
    return F.avg_pool3d(x, tuple(pool)) * math.sqrt(math.prod(pool))


def subspace_lift(z: torch.Tensor, pool: Pool) -> torch.Tensor:
    """ALGORITHMS.md §1 "Coarse noise", P·z: each coarse element repeated over its block and divided by √k, so
    Pᵀ(P·z) = z. The identity for the pool (1, 1, 1)."""
    if tuple(pool) == ISOTROPIC:
        return z
    for dim, p in zip((-3, -2, -1), pool):
        z = z.repeat_interleave(p, dim)
    return z / math.sqrt(math.prod(pool))


def sde_step(
    x: torch.Tensor, v: torch.Tensor, t: torch.Tensor | float, t_next: torch.Tensor | float,
    sigma: torch.Tensor | float, pool: Pool = ISOTROPIC,
) -> SDEStep:
    """ALGORITHMS.md §1, Euler–Maruyama mean and std of one transition.

    x = x_s, v = v_θ(x_s, t_s, c), t = t_s, t_next = t_{s+1}, sigma = σ_s (scalars or [B]).
    μ = x + [v + σ²/(2t)·Π(x + (1 − t)·v)]·Δt,  std = σ·√|Δt|, Π = P·Pᵀ of the noise ``pool`` (the identity by
    default). σ = 0 ⇒ μ = x + v·Δt (Euler ODE), std = 0.
    Computed in fp32 (or fp64 when x is fp64) whatever the model dtype.
    """
    dtype = compute_dtype(x)
    x, v = x.to(dtype), v.to(dtype)
    t, t_next, sigma = (_bcast(torch.as_tensor(z, dtype=dtype), x) for z in (t, t_next, sigma))
    dt = t_next - t
    if torch.is_tensor(sigma) and bool((sigma == 0).all()):
        return SDEStep(x + v * dt, torch.zeros_like(dt))
    drift = v + sigma**2 / (2 * t) * subspace_lift(subspace_project(x + (1 - t) * v, pool), pool)
    return SDEStep(x + drift * dt, sigma * torch.sqrt(dt.abs()))


def gaussian_logprob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """ALGORITHMS.md §1, element-wise log-density ℓ_e = −(x_{s+1} − μ)²/(2 std²) − log std − ½ log 2π.

    Shapes as ``mean`` ([B, C, F, H, W]); std broadcastable. std must be > 0 (an ODE step has no density).
    """
    std = torch.as_tensor(std, dtype=mean.dtype)
    return -((x_next.to(mean.dtype) - mean) ** 2) / (2 * std**2) - torch.log(std) - 0.5 * math.log(2 * math.pi)


def subspace_logprob(x_next: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, pool: Pool) -> torch.Tensor:
    """ALGORITHMS.md §1 "Coarse noise", the transition's element-wise log-density on its subspace: ℓ of
    Pᵀx_{s+1} under N(Pᵀμ, std² I_d), shape [B, C, F/p_F, H/p_H, W/p_W]. Equals :func:`gaussian_logprob` for the
    pool (1, 1, 1)."""
    return gaussian_logprob(subspace_project(x_next, pool), subspace_project(mean, pool), std)


def reduce_logprob(elementwise: torch.Tensor, mode: Literal["scalar", "dense"] = "scalar",
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """ALGORITHMS.md §1, reductions of ℓ_e [B, C, F, H, W].

    ``scalar``: L_b = (1/D)·Σ_e ℓ_e → [B] (the ratio is the geometric mean of per-element ratios).
    ``dense``:  L_{b,ν} = Σ_c ℓ_{c,ν} → [B, F, H, W] (ViPO, §4).  Identity: D·L_scalar = Σ_ν L_dense.
    ``mask`` [B or 1, 1, F, H, W] of kept positions (0 where a condition clamps the latent) is applied first; the
    scalar mean then runs over kept elements only.
    """
    if mask is not None:
        elementwise = elementwise * mask
    match mode:
        case "scalar":
            if mask is None:
                return elementwise.flatten(1).mean(1)
            kept = (mask.expand_as(elementwise) != 0).flatten(1).sum(1).clamp_min(1)
            return elementwise.flatten(1).sum(1) / kept
        case "dense":
            return elementwise.sum(1)
    raise ValueError(f"unknown log-prob reduction {mode!r}")
