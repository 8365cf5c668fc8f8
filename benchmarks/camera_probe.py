"""Does a model follow "camera pans <dir>"? Two measurements on the eval set's camera-pan prompts (#4).

1. Sampling: the verifier's observed camera and the mean background flow of generated clips (20 Euler steps, CFG 3,
   the eval seeds).
2. Teacher forcing: the ground-truth clip of each prompt is noised to x_t = (1 − t)·x_0 + t·ε, the model predicts
   x̂_0 with the true caption, the caption with the opposite pan direction, and the caption without the camera
   clause; reported is the background flow of x̂_0 projected on the true background flow (px/frame; the rendered
   clip's own is ≈ 1). If the three agree, the model does not use the camera words. The same in image-to-video
   mode (the clean first frame given): there the pan direction is the only information the words add about where
   the known texture goes next.

    .venv/bin/python benchmarks/camera_probe.py builtin:base runs/shapeworld/sft/model
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vidtune.config import load_recipe
from vidtune.math.flow_matching import interpolate, x0_from_velocity
from vidtune.models.tiny import load_tiny
from vidtune.rewards.verifier import ShapeWorldVerifier, background_flow, segment_palette
from vidtune.sampling.ode import generate
from vidtune.stages.evaluate import eval_set
from vidtune.video.flow import video_flow
from vidtune.world.render import render

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
TIMES = (0.3, 0.5, 0.7, 0.9)


def mean_background_flow(video: torch.Tensor) -> np.ndarray:
    """Mean over transitions of the verifier's background flow of one clip [F, 3, H, W] → (dx, dy)."""
    frames = video.permute(0, 2, 3, 1).numpy()
    verifier = ShapeWorldVerifier()
    palette_px = segment_palette(frames, verifier.colour_threshold) >= 0
    return background_flow(video_flow(frames, verifier.flow), palette_px).mean(0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default="benchmarks/results/camera_probe.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    es = eval_set(load_recipe(None))
    idx = [i for i, s in enumerate(es.scenes) if s.pans]
    prompts = [es.prompts[i] for i in idx]
    captions = {"true": prompts,
                "opposite": [p.rsplit(" ", 1)[0] + " " + OPPOSITE[p.rsplit(" ", 1)[1]] for p in prompts],
                "no camera": [p.split(", camera")[0] for p in prompts]}
    real = torch.stack([torch.from_numpy(render(es.scenes[i], es.seeds[i]).video).permute(0, 3, 1, 2) for i in idx])
    true_flow = [mean_background_flow(v) for v in real]
    unit = [f / max(np.linalg.norm(f), 1e-6) for f in true_flow]
    results = {"prompts": prompts, "real_projection": float(np.mean([f @ u for f, u in zip(true_flow, unit)])),
               "models": {}}
    for spec in args.models:
        policy = load_tiny(spec).eval()
        with torch.no_grad():
            vids = generate(policy, prompts, [es.seeds[i] for i in idx], steps=20, shift=1.0, guidance=3.0)
        verdicts = ShapeWorldVerifier()(vids, prompts).details
        row = {"observed_camera": [d.get("camera") for d in verdicts],
               "camera_atom": float(np.mean([d.get("camera") == es.scenes[i].camera for d, i in zip(verdicts, idx)])),
               "sampled_projection": float(np.mean([mean_background_flow(v) @ u for v, u in zip(vids, unit)]))}
        x0 = policy.encode_video(real)
        eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0))
        for mode, images in (("teacher_forced", None), ("teacher_forced_i2v", real[:, 0])):
            row[mode] = {}
            for t in TIMES:
                tt = torch.full((len(x0),), t)
                xt = interpolate(x0, eps, tt)
                row[mode][str(t)] = {}
                for name, caps in captions.items():
                    with torch.no_grad():
                        v = policy.velocity(xt, tt, policy.encode_prompts(caps, images=images))
                    pred = policy.decode(x0_from_velocity(xt, v, tt)).clamp(0, 1)
                    row[mode][str(t)][name] = float(np.mean([mean_background_flow(p) @ u
                                                             for p, u in zip(pred, unit)]))
        results["models"][spec] = row
        print(spec, json.dumps({k: v for k, v in row.items() if k != "observed_camera"}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
