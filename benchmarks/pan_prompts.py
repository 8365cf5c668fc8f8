"""Write a GRPO prompt file of camera-pan prompts with seen colour/shape compositions (the ShapeWorld training
split), for training one atom with the `pan_progress` reward (rewards/soft_verifier.py):

    .venv/bin/python benchmarks/pan_prompts.py --n 32 --out recipes/prompts/pan_seen.txt
    vidtune grpo RECIPE --set grpo.prompts_file=recipes/prompts/pan_seen.txt "grpo.reward.heads=[{reward: pan_progress}]"
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidtune.config import WorldConfig
from vidtune.world.dataset import examples
from vidtune.world.grammar import caption


def pan_prompts(n: int, seed: int) -> list[str]:
    """``n`` distinct captions of training-split scenes whose camera pans."""
    out: list[str] = []
    for e in examples(8 * n, seed, WorldConfig(p_camera=1.0), "train"):
        text = caption(e.scene)
        if e.scene.pans and text not in out:
            out.append(text)
    if len(out) < n:
        raise SystemExit(f"only {len(out)} distinct pan prompts among {8 * n} scenes")
    return out[:n]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=32)
    ap.add_argument("--seed", type=int, default=303)
    ap.add_argument("--out", default="recipes/prompts/pan_seen.txt")
    args = ap.parse_args()
    Path(args.out).write_text("# camera-pan prompts, seen compositions (benchmarks/pan_prompts.py)\n"
                              + "\n".join(pan_prompts(args.n, args.seed)) + "\n")


if __name__ == "__main__":
    main()
