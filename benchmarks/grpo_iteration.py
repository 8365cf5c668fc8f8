"""Time split of GRPO iterations (rollout, reward, advantage/math, update) and the share of wall time spent
outside model forward/backward and reward calls (target ≤ 15 %). Writes benchmarks/results/grpo_iteration.json.

Model time is measured by wrapping ``policy.velocity`` (every forward, in rollouts and in the update) and
``torch.Tensor.backward``; reward time is the compose call. Run on an idle machine:

    .venv/bin/python benchmarks/grpo_iteration.py [--iterations 4]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from vidtune.config import load_recipe
from vidtune.runlog import read_metrics


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=4)
    ap.add_argument("--out", default="benchmarks/results/grpo_iteration.json")
    args = ap.parse_args()
    from vidtune.models import tiny
    from vidtune.stages import grpo

    spent = {"model": 0.0}
    orig_vel, orig_back = tiny.TinyVideoPolicy.velocity, torch.Tensor.backward

    def vel(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_vel(self, *a, **k)
        finally:
            spent["model"] += time.perf_counter() - t0

    def back(self, *a, **k):
        t0 = time.perf_counter()
        try:
            return orig_back(self, *a, **k)
        finally:
            spent["model"] += time.perf_counter() - t0

    tiny.TinyVideoPolicy.velocity, torch.Tensor.backward = vel, back
    run_dir = Path("/tmp/vidtune_bench_grpo")
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    recipe = load_recipe(None, [f"grpo.iterations={args.iterations}", "grpo.ckpt_every=1000"])
    t0 = time.perf_counter()
    grpo.run(recipe, run_dir, progress=False)
    total = time.perf_counter() - t0
    rows = read_metrics(run_dir / "metrics.jsonl", "grpo")
    split = {k: sum(r[k] for r in rows) for k in ("time_rollout", "time_reward", "time_signal", "time_update",
                                                  "iter_time")}
    loop = split["iter_time"]
    outside = loop - spent["model"] - split["time_reward"]
    result = {"iterations": args.iterations, "rollouts_per_iteration": recipe.grpo.prompts_per_iter *
              recipe.grpo.group_size, "rollout_steps": recipe.grpo.rollout.steps,
              "per_iteration_seconds": {k: v / args.iterations for k, v in split.items()},
              "model_forward_backward_seconds_per_iteration": spent["model"] / args.iterations,
              "outside_model_and_reward_fraction": outside / loop, "target_fraction": 0.15,
              "stage_total_seconds_incl_setup": total}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
