"""Verifier validity on rendered ground truth (issue: judge validity).

For each atom type, ≥ 500 rendered clips whose prompt has that atom: the verifier's score for the true prompt and
for the prompt with that one atom changed (world/corrupt.py). Writes benchmarks/results/judge_validity.json.

    .venv/bin/python benchmarks/judge_validity.py [--n 500]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import numpy as np

from vidtune.config import WorldConfig
from vidtune.rewards.verifier import ShapeWorldVerifier
from vidtune.world.corrupt import CORRUPTIBLE, corrupt
from vidtune.world.dataset import examples, to_tensor


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=500, help="cases per atom type")
    ap.add_argument("--out", default="benchmarks/results/judge_validity.json")
    args = ap.parse_args()
    world = WorldConfig(p_then=0.5, p_camera=0.5, p_pour=0.1)
    judge = ShapeWorldVerifier()
    rng = random.Random(0)
    true_scores: list[float] = []
    bad: dict[str, list[float]] = {a: [] for a in CORRUPTIBLE}
    t0, seed = time.time(), 0
    while min(len(v) for v in bad.values()) < args.n:
        for e in examples(200, seed, world, "any"):
            video = to_tensor(e.render(world).video)
            needed = [a for a in CORRUPTIBLE if len(bad[a]) < args.n]
            cases = [(a, c) for a in needed if (c := corrupt(e.scene, a, rng)) is not None]
            if not cases:
                continue
            true_scores.append(judge.judge(video, e.scene).score)
            for a, c in cases:
                bad[a].append(judge.judge(video, c).score)
        seed += 1
    ts = np.array(true_scores)
    result = {
        "true_prompt": {"n": len(ts), "mean": float(ts.mean()), "frac_ge_0.95": float((ts >= 0.95).mean()),
                        "target": "mean >= 0.95"},
        "one_atom_changed": {a: {"n": len(v), "mean": float(np.mean(v)), "frac_le_0.5": float(np.mean(np.array(v) <= 0.5))}
                             for a, v in bad.items()},
        "target_changed": "<= 0.5",
        "seconds": time.time() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
