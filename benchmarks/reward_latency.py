"""Per-reward latency on a batch of 16 rendered ShapeWorld clips (8 × 32 × 32), one thread: every registered reward
(verifier, temporal, perceptual, safety) with default arguments plus a composite (gates noise + saturation + safety,
heads verifier + 4 temporal critics + gravity). Reports the best and median of ``--repeats`` timed calls after one
warm-up, in ms per batch and per clip. Writes benchmarks/results/reward_latency.json:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/reward_latency.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import torch

from vidtune.config import WorldConfig
from vidtune.rewards.base import REGISTRY, build_reward
from vidtune.rewards.compose import GateSpec, RewardSpec, build, compose
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import caption

KWARGS = {"safety": {"colours": ["magenta"], "words": ["pour"]}, "gravity": {"not_applicable": 1.0}}


def timed(fn, repeats: int) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[0], times[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="benchmarks/results/reward_latency.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    world = WorldConfig(p_pour=0.2)
    exs = examples(args.batch, 3, world, "any")
    videos = torch.stack([to_tensor(e.render(world).video) for e in exs])
    prompts = [caption(e.scene) for e in exs]
    rows = {}
    for name in sorted(REGISTRY):
        reward = build_reward(name, **KWARGS.get(name, {}))
        best, med = timed(lambda: reward(videos, prompts), args.repeats)
        rows[name] = {"best_ms": round(1e3 * best, 1), "median_ms": round(1e3 * med, 1),
                      "per_clip_ms": round(1e3 * best / args.batch, 2)}
    heads = ["verifier", "motion_smoothness", "dynamic_degree", "freeze", "flicker", "gravity"]
    comp = build([RewardSpec(n, KWARGS.get(n, {})) for n in heads],
                 [GateSpec("noise"), GateSpec("saturation"), GateSpec("safety", KWARGS["safety"])])
    best, med = timed(lambda: compose(comp, videos, prompts), args.repeats)
    rows["composite"] = {"best_ms": round(1e3 * best, 1), "median_ms": round(1e3 * med, 1),
                         "per_clip_ms": round(1e3 * best / args.batch, 2),
                         "heads": heads, "gates": ["noise", "saturation", "safety"]}
    out = {"setup": {"batch": args.batch, "frames": world.frames, "size": world.size, "repeats": args.repeats,
                     "threads": 1, "python": platform.python_version(), "torch": torch.__version__,
                     "opencv": cv2.__version__, "kwargs": KWARGS},
           "rewards": rows}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for name, r in rows.items():
        print(f"{name:18s} best {r['best_ms']:8.1f} ms  median {r['median_ms']:8.1f} ms  ({r['per_clip_ms']} ms/clip)")


if __name__ == "__main__":
    main()
