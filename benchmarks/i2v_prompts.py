"""Write an image-to-video GRPO prompt set: instruction captions of ShapeWorld training clips that have a motion
(seen compositions) and the first frames of their renderings, as `grpo.prompts_file` and `grpo.images_dir` read them
(data/prompts.py: `<k>.png` is the first frame of the k-th prompt):

    .venv/bin/python benchmarks/i2v_prompts.py --n 64 --out runs/i2v_prompts
    vidtune grpo RECIPE grpo.prompts_file=runs/i2v_prompts/prompts.txt grpo.images_dir=runs/i2v_prompts/frames
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from vidtune.config import WorldConfig
from vidtune.world.dataset import motion_prompts_with_frames


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--directional", action="store_true",
                    help="only motions along a direction (left/right/up/down/fall), which the motion_progress reward "
                    "grades")
    ap.add_argument("--out", default="runs/i2v_prompts")
    args = ap.parse_args()
    prompts, frames = motion_prompts_with_frames(args.n, args.seed, WorldConfig(), args.directional)
    out = Path(args.out)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    kind = "directional motion" if args.directional else "motion"
    (out / "prompts.txt").write_text(f"# image-to-video {kind} prompts, seen compositions (benchmarks/i2v_prompts.py)\n"
                                     + "\n".join(prompts) + "\n")
    for k, f in enumerate(frames):
        rgb = (f.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
        cv2.imwrite(str(out / "frames" / f"{k}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    print(f"{len(prompts)} prompts and first frames in {out}")


if __name__ == "__main__":
    main()
