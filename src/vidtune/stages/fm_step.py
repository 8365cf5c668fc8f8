"""The flow-matching training step shared by pretraining and SFT (ALGORITHMS.md §7.1)."""

from __future__ import annotations

from typing import NamedTuple

import torch

from vidtune.math.structure_weights import epe_loss
from vidtune.math.flow_matching import (contrastive_errors, interpolate, motion_emphasis, per_sample_mse, sample_t,
                                        velocity_target, weighted_fm_loss)


class FMBatch(NamedTuple):
    """The random choices of one step, a pure function of (seed, step) so a resumed run replays them exactly."""

    index: torch.Tensor  # [B] clip indices
    t: torch.Tensor  # [B] flow times
    drop: torch.Tensor  # [B] bool: use the empty prompt (classifier-free guidance training)
    i2v: torch.Tensor  # [B] bool: condition on the first frame
    generator: torch.Generator  # continues the stream (noise)


def draw_batch(step: int, seed: int, n_data: int, batch: int, p_drop: float, p_i2v: float,
               t_sampler: str, t_loc: float = 0.0, t_scale: float = 1.0) -> FMBatch:
    g = torch.Generator().manual_seed(seed * 1_000_003 + step)
    idx = torch.randint(n_data, (batch,), generator=g)
    t = sample_t(batch, g, t_sampler, loc=t_loc, scale=t_scale)  # type: ignore[arg-type]
    drop = torch.rand(batch, generator=g) < p_drop
    i2v = torch.rand(batch, generator=g) < p_i2v
    return FMBatch(idx, t, drop, i2v, g)


class FMLoss(NamedTuple):
    loss: torch.Tensor  # scalar L_FM (weighted mean) [+ λ_flow·EPE]
    errors: torch.Tensor  # [B] per-sample e_b against the clip's own target (detached)
    epe: torch.Tensor | None = None  # motion-branch EPE (detached), when a flow target was given
    neg_errors: torch.Tensor | None = None  # [B] e⁻_b against the counterfactual's target (detached), when given


class Negatives(NamedTuple):
    """Counterfactual negatives of the batch's rows (world/counterfactual.py) for the contrastive term."""

    video: torch.Tensor  # [B, F, 3, H, W] pixel clips, same first frame as the positives
    mask: torch.Tensor  # [B] bool: the row has a negative
    lam: float  # λ of math/flow_matching.contrastive_errors
    t_min: float = 0.0  # the term applies to rows whose flow time t ≥ t_min only (sft.contrastive_t_min)


def fm_loss(policy, video: torch.Tensor, prompts: list[str], fb: FMBatch, weights: torch.Tensor | None = None,
            flow_target: torch.Tensor | None = None, lambda_flow: float = 0.0, rows: slice = slice(None),
            emphasis: float = 0.0, negatives: Negatives | None = None) -> FMLoss:
    """L_FM = (1/B)·Σ ω_b·e_b on pixel videos [B, F, 3, H, W] (latents via the policy), with I2V rows conditioned
    on their first frame; plus λ_flow·EPE of the motion branch against ``flow_target`` [B, F−1, 2, H', W']
    (ALGORITHMS.md §7.3) when given. ``emphasis`` λ > 0 weights each element's squared error by
    :func:`motion_emphasis` of the target latents (``sft.motion_emphasis``). ``negatives`` add the counterfactual
    contrastive term (:func:`contrastive_errors`, ``sft.contrastive_lambda``): the same ε, t and element weights
    against each negative's target ε − x⁻_0, on the rows that have a negative and t ≥ ``negatives.t_min``. The step
    runs on the policy's device; the batch's random draws stay on the CPU generator, so they do not depend on the
    device.

    Data parallelism: ``rows`` are this rank's rows of the batch ``fb`` (runtime/distributed.shard). ``video``,
    ``prompts``, ``weights`` and ``flow_target`` hold those rows only, while the batch's draws (flow times, prompt
    dropout, I2V, noise) are made for the whole batch and sliced, so the ranks together compute exactly the
    single-process batch. Both terms are means over rows of equal shards, so DDP's gradient average over ranks is
    the whole batch's gradient; no rescaling is needed."""
    device = policy.device
    x0 = policy.encode_video(video).to(device)
    eps = torch.randn((len(fb.t), *x0.shape[1:]), generator=fb.generator)[rows].to(device)
    t = fb.t[rows].to(device)
    cond = policy.encode_prompts(["" if d else p for p, d in zip(prompts, fb.drop[rows].tolist())],
                                 images=video[:, 0], image_mask=fb.i2v[rows])
    xt = interpolate(x0, eps, t)
    if flow_target is None:
        v, epe = policy.velocity(xt, t, cond), None
    else:
        v, flow = policy.velocity_and_flow(xt, t, cond)
        epe = epe_loss(flow, flow_target.to(flow))
    m = motion_emphasis(x0, emphasis) if emphasis > 0 else None
    errors = per_sample_mse(v, velocity_target(x0, eps), m)
    train_errors, neg_errors = errors, None
    if negatives is not None:
        x_neg = policy.encode_video(negatives.video).to(device)
        neg_errors = per_sample_mse(v, velocity_target(x_neg, eps), m)
        has_negative = negatives.mask.to(device) & (t >= negatives.t_min)
        train_errors = contrastive_errors(errors, neg_errors, negatives.lam, has_negative)
    loss = weighted_fm_loss(train_errors, None if weights is None else weights.to(device))
    if epe is not None:
        loss = loss + lambda_flow * epe
    return FMLoss(loss, errors.detach(), None if epe is None else epe.detach(),
                  None if neg_errors is None else neg_errors.detach())
