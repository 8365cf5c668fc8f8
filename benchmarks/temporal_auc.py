"""Temporal-critic AUC: how well each flow-based critic (rewards/temporal.py) ranks a real rendered ShapeWorld clip
above a temporally corrupted copy of it (preference/synthetic.py: reverse, shuffle, freeze, stall).

Real clips are dynamic by ground truth (some motion other than "still", a camera pan, or a pour). The four prompt-free
critics are scored on ``--clips`` of them; ``gravity`` on ``--physics`` clips whose prompt falls, bounces or pours.
AUC = P(score_real > score_negative) + ½·P(tie) over all real/negative pairs (Mann–Whitney); ``paired_win`` is the same
within each clip's own pair; the 95 % interval is a bootstrap over clips (1000 resamples, seed 0). Writes
benchmarks/results/temporal_auc.json. Run with one thread on a shared machine:

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/temporal_auc.py
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vidtune.config import WorldConfig
from vidtune.preference.synthetic import RejectedNegative, temporal_negative
from vidtune.rewards.base import build_reward
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import caption

KINDS = ("reverse", "shuffle", "freeze", "stall")
CRITICS = ("motion_smoothness", "dynamic_degree", "freeze", "flicker")


def is_dynamic(scene) -> bool:
    return scene.pour or scene.pans or any(m != "still" for m in scene.motions or ())


def is_physics(scene) -> bool:
    return scene.pour or any(m in ("fall", "bounce") for m in scene.motions or ())


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Mann–Whitney AUC over all (real, negative) pairs, ties counted ½."""
    d = pos[:, None] - neg[None, :]
    return float((d > 0).mean() + 0.5 * (d == 0).mean())


def clips(n: int, keep, seed: int) -> tuple[torch.Tensor, list[str]]:
    world = WorldConfig()
    exs = [e for e in examples(6 * n, seed, world, "any") if keep(e.scene)][:n]
    if len(exs) < n:
        raise SystemExit(f"only {len(exs)} clips pass the filter; raise the pool")
    return torch.stack([to_tensor(e.render(world).video) for e in exs]), [caption(e.scene) for e in exs]


def negatives(videos: torch.Tensor, kind: str) -> tuple[torch.Tensor, list[int]]:
    """Negative of each clip (seeded per clip); indices of clips whose negative was accepted. ``min_diff`` is 1e-6
    (only identical copies are rejected): the §8.2 default 2/255 of mean |y_l − y_w| rejects most one-frame holds
    of small 32-px objects, and the question here is whether a critic notices the corruption at all."""
    out, idx = [], []
    for i, v in enumerate(videos):
        try:
            out.append(temporal_negative(v, kind, torch.Generator().manual_seed(1000 + i), min_diff=1e-6).video)
            idx.append(i)
        except RejectedNegative:
            pass
    return torch.stack(out), idx


def evaluate(name: str, videos: torch.Tensor, prompts: list[str], rng: np.random.Generator) -> dict:
    reward = build_reward(name)
    out = reward(videos, prompts)
    real = out.scores.double().numpy()
    res = {"mean_real": round(float(np.nanmean(real)), 4)}
    if "passed" in out.components:  # gravity: share of clips passing every atom
        res["pass_real"] = round(float(np.nanmean(out.components["passed"].numpy())), 4)
    for kind in KINDS:
        neg_v, idx = negatives(videos, kind)
        neg_out = reward(neg_v, [prompts[i] for i in idx])
        neg = neg_out.scores.double().numpy()
        pos = real[idx]
        ok = np.isfinite(pos) & np.isfinite(neg)
        pos, neg = pos[ok], neg[ok]
        boot = [auc(pos[s], neg[s]) for s in (rng.integers(0, len(pos), len(pos)) for _ in range(1000))]
        ci = [round(float(q), 4) for q in np.quantile(boot, [0.025, 0.975])]
        res[kind] = {"auc": round(auc(pos, neg), 4), "ci95": ci,
                     "paired_win": round(float(np.mean((pos > neg) + 0.5 * (pos == neg))), 4),
                     "mean_neg": round(float(neg.mean()), 4), "n": int(ok.sum()), "rejected": len(videos) - len(idx)}
        if "passed" in neg_out.components:
            res[kind]["pass_neg"] = round(float(np.nanmean(neg_out.components["passed"].numpy())), 4)
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=400)
    ap.add_argument("--physics", type=int, default=300)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", default="benchmarks/results/temporal_auc.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    videos, prompts = clips(args.clips, is_dynamic, args.seed)
    results = {name: evaluate(name, videos, prompts, rng) for name in CRITICS}
    pv, pp = clips(args.physics, is_physics, args.seed + 1)
    results["gravity"] = evaluate("gravity", pv, pp, rng)
    out = {
        "setup": {"clips": args.clips, "physics_clips": args.physics, "seed": args.seed, "frames": 8, "size": 32,
                  "flow": "opencv-dis at >= 64 px (critic defaults)",
                  "negatives": "preference/synthetic.py defaults, min_diff 1e-6",
                  "threads": 1, "python": platform.python_version(), "torch": torch.__version__,
                  "opencv": cv2.__version__},
        "critics": results,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    for name, r in results.items():
        print(f"{name:18s} " + "  ".join(f"{k} {r[k]['auc']:.3f} [{r[k]['ci95'][0]:.2f}, {r[k]['ci95'][1]:.2f}]"
                                          for k in KINDS))
    print(f"{out['seconds']} s -> {args.out}")


if __name__ == "__main__":
    main()
