"""Deterministic sampling (probability-flow ODE, Euler) with classifier-free guidance, for evaluation and demos."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from vidtune.math.flow_matching import cfg_combine, time_grid
from vidtune.models.policy import Cond, VideoPolicy, cond_cat


def seeded_noise(seeds: Sequence[int], shape: tuple[int, ...], dtype=torch.float32,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """One N(0, I) draw per seed → [len(seeds), *shape] on ``device``; a sample's noise never depends on its batch
    or on the device (it is drawn by a CPU generator and then moved)."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s)), dtype=dtype)
                        for s in seeds]).to(device)


def guided_velocity(policy: VideoPolicy, x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond | None,
                    guidance: float, both: Cond | None = None) -> torch.Tensor:
    """v_θ with classifier-free guidance; one batched forward over [cond; uncond] (skipped when guidance = 1).
    ``both`` = cond_cat([cond, uncond]) may be passed precomputed by loops that call this every step."""
    if uncond is None or guidance == 1.0:
        return policy.velocity(x, t, cond)
    b = x.shape[0]
    v = policy.velocity(torch.cat([x, x]), torch.cat([t, t]), both or cond_cat([cond, uncond]))
    return cfg_combine(v[:b], v[b:], guidance)


@torch.no_grad()
def sample_ode(policy: VideoPolicy, cond: Cond, uncond: Cond | None, noise: torch.Tensor, steps: int,
               shift: float = 1.0, guidance: float = 1.0) -> torch.Tensor:
    """Euler integration of dx = v dt from t = 1 (``noise``) to t = 0 → latents [B, C, F, H, W]."""
    grid = time_grid(steps, shift)
    x = noise.float()
    both = cond_cat([cond, uncond]) if uncond is not None and guidance != 1.0 else None
    for s in range(steps):
        t = torch.full((x.shape[0],), float(grid[s]), device=x.device)
        v = guided_velocity(policy, x, t, cond, uncond, guidance, both)
        x = x + v.float() * float(grid[s + 1] - grid[s])
    return x


def generate(policy, prompts: list[str], seeds: Sequence[int], *, steps: int, shift: float, guidance: float,
             batch_size: int = 16, images: torch.Tensor | None = None, progress: bool = False) -> torch.Tensor:
    """Prompts → pixel videos [N, F, 3, H, W] in [0, 1] on the CPU, in batches, each sample seeded by its own seed;
    noise and latents live on the policy's device."""
    from vidtune.progress import track

    cfg_w = policy.config
    shape = policy.latent_shape(cfg_w.frames, cfg_w.height, cfg_w.width)
    out = []
    starts = list(range(0, len(prompts), batch_size))
    for i in track(starts, "sampling", disable=not progress):
        p = prompts[i : i + batch_size]
        img = None if images is None else images[i : i + batch_size]
        cond = policy.encode_prompts(p, images=img)
        uncond = policy.encode_prompts([""] * len(p), images=img) if guidance != 1.0 else None
        noise = seeded_noise(seeds[i : i + batch_size], shape, device=policy.device)
        out.append(policy.decode(sample_ode(policy, cond, uncond, noise, steps, shift, guidance)).cpu())
    return torch.cat(out)
