"""Foundation benchmark: sampling throughput vs a bare loop of the same model calls, pretraining step time, peak
memory. Writes benchmarks/results/foundation.json. Run on an otherwise idle machine:

    .venv/bin/python benchmarks/foundation.py [--model builtin:base]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path

import torch

from vidtune.math.flow_matching import interpolate, per_sample_mse, velocity_target
from vidtune.models.tiny import load_tiny
from vidtune.sampling.ode import generate


def bare_loop(policy, prompts, steps, guidance):
    """The same model calls as `generate`, without any of its bookkeeping (the throughput ceiling)."""
    cond = policy.encode_prompts(prompts)
    uncond = policy.encode_prompts([""] * len(prompts))
    both = {k: torch.cat([cond[k], uncond[k]]) for k in cond}
    x = torch.randn(len(prompts), 3, policy.config.frames, policy.config.size, policy.config.size)
    dt = -1.0 / steps
    with torch.no_grad():
        for s in range(steps):
            t = torch.full((2 * len(prompts),), 1.0 - s / steps)
            v = policy.velocity(torch.cat([x, x]), t, both)
            x = x + (v[: len(prompts)] * guidance + v[len(prompts) :] * (1 - guidance)) * dt
    return policy.decode(x)


def best_of(fn, repeats=5):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), sorted(times)[len(times) // 2]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:base")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/foundation.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    policy = load_tiny(args.model)
    batch, steps, guidance = 8, 20, 3.0
    prompts = ["two small red circles move right, then fall"] * batch

    gen_best, gen_med = best_of(lambda: generate(policy, prompts, list(range(batch)), steps=steps, shift=1.0,
                                                 guidance=guidance, batch_size=batch))
    bare_best, bare_med = best_of(lambda: bare_loop(policy, prompts, steps, guidance))

    policy.train()
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-5)
    video = torch.rand(32, policy.config.frames, 3, policy.config.size, policy.config.size)
    cond = policy.encode_prompts(["a red circle"] * 32)

    def train_step():
        x0 = policy.encode_video(video)
        eps = torch.randn_like(x0)
        t = torch.rand(32)
        loss = per_sample_mse(policy.velocity(interpolate(x0, eps, t), t, cond), velocity_target(x0, eps)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_best, train_med = best_of(train_step)
    result = {
        "machine": {"cpu_threads": args.threads, "python": platform.python_version(), "torch": torch.__version__},
        "model": {"path": args.model, "params": sum(p.numel() for p in policy.parameters()),
                  "video": [policy.config.frames, policy.config.size, policy.config.size],
                  "patch": list(policy.config.patch)},
        "sampling": {"batch": batch, "steps": steps, "guidance": guidance,
                     "videos_per_s": batch / gen_med, "bare_loop_videos_per_s": batch / bare_med,
                     "ratio_to_bare_loop": bare_med / gen_med, "seconds_median": gen_med,
                     "bare_seconds_median": bare_med, "target_ratio": 0.95},
        "pretrain_step": {"batch": 32, "seconds_median": train_med, "seconds_best": train_best},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
