"""Peak memory and time of the three Diffusion-DPO backward schedules (ALGORITHMS.md §8.3).

Each schedule runs in a fresh process (so allocator state cannot leak between them) on the embedded DiT at a batch
where activations dominate. Peak memory = (peak RSS during the step) − (RSS right before it), from
``resource.getrusage`` high-water marks; compute = wall time of the step. Writes benchmarks/results/dpo_memory.json.

Two allocator settings are measured. With glibc's defaults freed blocks stay in the process's heap, so RSS counts
fragmentation as well as live tensors. With ``MALLOC_MMAP_THRESHOLD_=65536`` every block ≥ 64 KiB is its own mapping
and is returned to the OS on free, so the RSS high-water mark is the peak of live allocations — the number a CUDA
``max_memory_allocated`` would give.

    .venv/bin/python benchmarks/dpo_memory.py [--pairs 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

CHILD = r"""
import copy, json, resource, sys, time
import torch
torch.set_num_threads(2)
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
from vidtune.stages.dpo_step import DPOBatch, dpo_step
schedule, n, frames = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
policy = TinyVideoPolicy(TinyConfig())  # the embedded default: 8x32x32, 1.9 M params
ref = copy.deepcopy(policy).requires_grad_(False)
g = torch.Generator().manual_seed(0)
shape = (n, 3, frames, 32, 32)  # frames < 8: mixed resolution (dpo.grad_frames)
b = DPOBatch(torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1,
             policy.encode_prompts(["two small red circles move right, then fall"] * n), torch.rand(n, generator=g),
             torch.randn(shape, generator=g), torch.ones(n))
dpo_step(policy, ref, DPOBatch(*(x[:2] if torch.is_tensor(x) else {k: v[:2] for k, v in x.items()} for x in b)),
         beta=5000.0, schedule=schedule)   # warm-up: allocator pools, kernels
policy.zero_grad(set_to_none=True)
def rss_mb():
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024
before = rss_mb()
peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
dpo_step(policy, ref, b, beta=5000.0, schedule=schedule)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"schedule": schedule, "pairs": n, "frames": frames, "rss_before_mb": before, "peak_mb": peak,
                  "peak_before_step_mb": peak_before, "step_peak_delta_mb": peak - before, "seconds": dt}))
"""


ALLOCATORS = {"glibc_default": {}, "mmap_threshold_64k": {"MALLOC_MMAP_THRESHOLD_": "65536"}}


def measure(sched: str, pairs: int, env_extra: dict, frames: int = 8) -> dict:
    """One schedule in a fresh process → the child's JSON line."""
    env = {**os.environ, **env_extra}
    res = subprocess.run([sys.executable, "-c", CHILD, sched, str(pairs), str(frames)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(res.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    """Min over repeats per schedule, and ratios to ``standard``."""
    summary = {}
    for sched in ("standard", "retain", "recompute"):
        rows = [r for r in runs if r["schedule"] == sched]
        summary[sched] = {"step_peak_delta_mb": min(r["step_peak_delta_mb"] for r in rows),
                          "seconds": min(r["seconds"] for r in rows)}
    std = summary["standard"]
    for sched in summary:
        summary[sched]["memory_vs_standard"] = summary[sched]["step_peak_delta_mb"] / std["step_peak_delta_mb"]
        summary[sched]["time_vs_standard"] = summary[sched]["seconds"] / std["seconds"]
    return summary


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/dpo_memory.json")
    args = ap.parse_args()
    result = {"pairs": args.pairs, "model": "embedded DiT 8x32x32 (1.9 M params), fp32, 2 threads",
              "method": "fresh process per schedule; peak RSS high-water mark minus RSS before the step; min over "
                        f"{args.repeats} repeats; two glibc allocator settings (see the script's docstring)",
              "target": "recompute <= 0.55 x standard", "allocators": {}}
    for name, env_extra in ALLOCATORS.items():
        runs = []
        for _ in range(args.repeats):
            for sched in ("standard", "retain", "recompute"):
                runs.append({**measure(sched, args.pairs, env_extra), "allocator": name})
                print(runs[-1])
        result["allocators"][name] = {"summary": summarise(runs), "runs": runs}
    # mixed resolution on top of recompute: the preference gradient on a 4-frame window of the 8-frame pairs
    live = ALLOCATORS["mmap_threshold_64k"]
    half = min((measure("recompute", args.pairs, live, frames=4) for _ in range(args.repeats)),
               key=lambda r: r["step_peak_delta_mb"])
    std = result["allocators"]["mmap_threshold_64k"]["summary"]["standard"]
    result["mixed_resolution"] = {"schedule": "recompute", "grad_frames": 4, "run": half,
                                  "memory_vs_standard_full_clip": half["step_peak_delta_mb"] / std["step_peak_delta_mb"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v["summary"] for k, v in result["allocators"].items()}, indent=2))


if __name__ == "__main__":
    main()
