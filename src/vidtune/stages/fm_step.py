"""The flow-matching training step shared by pretraining and SFT (ALGORITHMS.md §7.1)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from vidtune.math.flow_matching import interpolate, per_sample_mse, sample_t, velocity_target, weighted_fm_loss


class FMBatch(NamedTuple):
    """The random choices of one step, a pure function of (seed, step) so a resumed run replays them exactly."""

    index: torch.Tensor  # [B] clip indices
    t: torch.Tensor  # [B] flow times
    drop: torch.Tensor  # [B] bool: use the empty prompt (classifier-free guidance training)
    i2v: torch.Tensor  # [B] bool: condition on the first frame
    generator: torch.Generator  # continues the stream (noise)


def draw_batch(step: int, seed: int, n_data: int, batch: int, p_drop: float, p_i2v: float,
               t_sampler: str) -> FMBatch:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(n_data, (batch,), generator=g)
    t = sample_t(batch, g, t_sampler)  # type: ignore[arg-type]
    drop = torch.rand(batch, generator=g) < p_drop
    i2v = torch.rand(batch, generator=g) < p_i2v
    return FMBatch(idx, t, drop, i2v, g)


class FMLoss(NamedTuple):
    loss: torch.Tensor  # scalar L_FM (weighted mean)
    errors: torch.Tensor  # [B] per-sample e_b (detached)


def fm_loss(policy, video: torch.Tensor, prompts: list[str], fb: FMBatch,
            weights: torch.Tensor | None = None) -> FMLoss:
    """L_FM = (1/B)·Σ ω_b·e_b on pixel videos [B, F, 3, H, W] (latents via the policy), with I2V rows conditioned
    on their first frame."""
    x0 = policy.encode_video(video)
    eps = torch.randn(x0.shape, generator=fb.generator)
    cond = policy.encode_prompts(["" if d else p for p, d in zip(prompts, fb.drop.tolist())],
                                 images=video[:, 0], image_mask=fb.i2v)
    errors = per_sample_mse(policy.velocity(interpolate(x0, eps, fb.t), fb.t, cond), velocity_target(x0, eps))
    return FMLoss(weighted_fm_loss(errors, weights), errors.detach())
