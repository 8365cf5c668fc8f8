"""Physics-slice dynamics metric (issue: physics-aware SFT): I2V generations from the renderer's own first frame,
their OpenCV flow against the renderer's exact flow, reported as EPE, >1px, >3px, F1-all (ALGORITHMS.md §10.3).

Clips are ShapeWorld scenes that fall, bounce or pour; each is generated from (instruction prompt, ground-truth
frame 0, fixed seed), so the only freedom the model has is the dynamics. The estimator is recorded.
"""

from __future__ import annotations

import random

import torch

from vidtune.config import Recipe, WorldConfig
from vidtune.math.flow_metrics import flow_metrics_videos
from vidtune.rewards.temporal import consecutive, flows
from vidtune.sampling.ode import generate
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import caption

ESTIMATOR = "opencv-dis at >= 64 px"


def physics_examples(n: int, seed: int, world: WorldConfig):
    pool = examples(8 * n, seed, world.model_copy(update={"p_pour": 0.15}), "any")
    phys = [e for e in pool if "physics" in e.scene.categories]
    random.Random(seed).shuffle(phys)
    return phys[:n]


def physics_flow_metrics(policy, recipe: Recipe, n: int = 32, seed: int = 77) -> dict:
    world, s = recipe.world, recipe.sampling
    exs = physics_examples(n, seed, world)
    clips = [e.render(world) for e in exs]
    gt_videos = torch.stack([to_tensor(c.video) for c in clips])
    gen = generate(policy, [caption(e.scene) for e in exs], [seed * 1000 + i for i in range(len(exs))],
                   steps=s.steps, shift=s.shift, guidance=s.guidance, batch_size=s.batch_size,
                   images=gt_videos[:, 0])
    f = world.frames
    preds = [flows(v.permute(0, 2, 3, 1).numpy(), consecutive(f)) for v in gen]
    targets = [c.flow for c in clips]
    objects = [c.masks[:-1].any(1) for c in clips]  # pixels on a moving body at frame t
    gt_est = [flows(c.video, consecutive(f)) for c in clips]
    out = {"n_clips": len(exs), "estimator": ESTIMATOR}
    for name, valid in (("all_pixels", None), ("object_pixels", objects)):
        rep = flow_metrics_videos(preds, targets, valid)
        # the estimator's own error on the ground-truth clips bounds what any generator can reach
        floor = flow_metrics_videos(gt_est, targets, valid)
        out[name] = {"pooled": rep.pooled._asdict(), "per_video_mean": rep.per_video_mean._asdict(),
                     "estimator_floor_on_gt": floor.pooled._asdict()}
    return out
