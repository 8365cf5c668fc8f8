"""Base-model coherence probe (issue #2): do samples of simple one-object prompts show one object?

For each model, samples ``--n`` loose one-object prompts ("a red circle falls", colours × shapes × motions, seeded)
with the default sampler and measures
  - the verifier score and its atoms (existence, colour, shape, motion) and ``clean``,
  - fragmentation: components of the prompt's colour per frame (the verifier's segmentation and minimum area) —
    ``frames_one`` is the share of frames with exactly one, ``components`` the mean count.
Writes benchmarks/results/base_coherence.json (one entry per label, merged into what is there) and a PNG grid of
the first 12 samples per model next to it.

    python benchmarks/base_coherence.py --model shipped=builtin:base --model tloc=runs/x/pretrain/model
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from vidtune.models.tiny import load_tiny
from vidtune.rewards.verifier import (COLOUR_NAMES, ShapeWorldVerifier, components, min_object_area,
                                     segment_palette)
from vidtune.sampling.ode import generate
from vidtune.video.io import save_png_grid
from vidtune.world.grammar import COLOURS, SHAPES, parse

MOTION_WORDS = ("falls", "moves left", "moves right", "moves up", "stays still", "bounces")
RESULTS = Path(__file__).parent / "results"


def probe_prompts(n: int) -> list[str]:
    combos = list(itertools.product(COLOURS, SHAPES, MOTION_WORDS))
    rng = np.random.default_rng(0)
    order = rng.permutation(len(combos))
    return [f"a {c} {s} {m}" for c, s, m in (combos[i % len(combos)] for i in order[:n])]


def fragmentation(video: torch.Tensor, prompt: str, threshold: float = 0.3) -> list[int]:
    """Number of components of the prompt's colour in each frame (verifier segmentation, minimum area)."""
    frames = video.float().permute(0, 2, 3, 1).numpy()
    labels = segment_palette(frames, threshold)
    target = COLOUR_NAMES.index(parse(prompt).colour)
    min_area = min_object_area(frames.shape[1] / 32.0)
    return [len(components(labels[t] == target, min_area)) for t in range(frames.shape[0])]


def measure(spec: str, n: int, steps: int, guidance: float) -> tuple[dict, torch.Tensor]:
    torch.set_num_threads(2)
    policy = load_tiny(spec)
    prompts = probe_prompts(n)
    t0 = time.time()
    with torch.no_grad():
        videos = generate(policy, prompts, list(range(n)), steps=steps, shift=1.0, guidance=guidance)
    out = ShapeWorldVerifier()(videos, prompts)
    counts = np.array([fragmentation(v, p) for v, p in zip(videos, prompts)])
    atoms = {a: float(c.nanmean()) for a, c in out.components.items()}
    clean = float(np.mean([d.get("clean", 0.0) for d in out.details]))
    return {
        "model": spec, "n": n, "steps": steps, "guidance": guidance,
        "verifier": float(out.scores.mean()), "clean": clean, "atoms": atoms,
        "frames_one": float((counts == 1).mean()), "components": float(counts.mean()),
        "seconds": round(time.time() - t0, 1),
    }, videos


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", required=True, help="label=path (or builtin:base)")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--guidance", type=float, default=3.0)
    args = ap.parse_args()
    path = RESULTS / "base_coherence.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    for item in args.model:
        label, _, spec = item.partition("=")
        row, videos = measure(spec, args.n, args.steps, args.guidance)
        table[label] = row
        save_png_grid(list(videos[:12]), RESULTS / f"base_coherence_{label}.png", scale=3)
        print(label, json.dumps(row))
    path.write_text(json.dumps(table, indent=2) + "\n")


if __name__ == "__main__":
    main()
