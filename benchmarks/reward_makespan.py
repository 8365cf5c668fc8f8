"""Reward-stage makespan on Ray (ALGORITHMS.md §9, issue 9): 4 light reward workers (verifier, motion_smoothness,
freeze, gravity) on 16 rendered ShapeWorld clips (8 × 32 × 32), a 2-CPU Ray pool.

1. Profile every worker alone at each usable thread budget (median of 3 after 1 warm-up), plan with
   ``plan_reward_groups``; then time ``--repeats`` reward stages under
   * ``serial``: one worker at a time, each at its best quota (the T_serial baseline of §9),
   * ``serial_full``: one worker at a time at the full quota (2 threads),
   * ``grouped``: the scheduler's plan (groups in sequence, workers of a group concurrently),
   interleaved per repeat, and in-process ``compose`` with 2 threads for reference. All modes must give identical
   Compositions.
2. The scheduler vs brute force (all set partitions) on the measured profiles and on ``--instances`` random
   monotone saturating profiles with 2–6 workers (§9 property 2's generator).
Writes benchmarks/results/reward_makespan.json:

    .venv/bin/python benchmarks/reward_makespan.py          # needs the 2 cores free to mean anything
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from vidtune.config import WorldConfig
from vidtune.math.makespan import (QUOTA_GRID, MakespanPlan, brute_force_plan, plan_reward_groups,
                                   random_profiles)
from vidtune.rewards.compose import RewardSpec, build, compose
from vidtune.runtime import RewardPool, describe
from vidtune.runtime.worker import set_thread_budget
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import caption
from vidtune.world.render import render

HEADS = [RewardSpec("verifier"), RewardSpec("motion_smoothness"), RewardSpec("freeze"),
         RewardSpec("gravity", {"not_applicable": 1.0})]


def fixed_serial(profiles: dict[str, list[float]], best: bool) -> MakespanPlan:
    """Singletons in name order, each at its fastest quota (``best``) or at q = 1."""
    names = sorted(profiles)
    qs = [QUOTA_GRID[int(np.argmin(profiles[k]))] if best else 1.0 for k in names]
    cost = [min(profiles[k]) if best else profiles[k][-1] for k in names]
    serial = sum(map(min, profiles.values()))
    return MakespanPlan(tuple((k,) for k in names), tuple((q,) for q in qs), sum(cost), serial)


def timed_modes(pool: RewardPool, plans: dict[str, MakespanPlan], videos, prompts, repeats: int) -> dict:
    """Per mode: one warm-up stage, then ``repeats`` timed stages, the modes interleaved (A B C A B C …) so that a
    drifting background load hits every mode alike → {mode: (median s, min s, groups of the median, worker s,
    result)}."""
    runs: dict[str, list] = {m: [] for m in plans}
    last = {}
    for r in range(repeats + 1):
        for mode, plan in plans.items():
            pool.set_plan(plan)
            last[mode] = pool(videos, prompts)
            if r:
                h = pool.history[-1]
                runs[mode].append((pool.last_logs["runtime/reward_measured_s"], h["measured_group_s"], h["worker_s"]))
    out = {}
    for mode, rs in runs.items():
        rs.sort(key=lambda x: x[0])
        med = rs[len(rs) // 2]
        out[mode] = (med[0], rs[0][0], med[1], med[2], last[mode])
    return out


def same(a, b) -> bool:
    eq = lambda x, y: torch.equal(torch.nan_to_num(x, nan=-7.0), torch.nan_to_num(y, nan=-7.0))  # noqa: E731
    return eq(a.heads, b.heads) and eq(a.scalar, b.scalar) and a.counters == b.counters


def scheduler_vs_brute_force(instances: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    ratios, t_plan, t_brute = [], 0.0, 0.0
    for i in range(instances):
        prof = random_profiles(rng, 2 + i % 5)
        t0 = time.perf_counter()
        plan = plan_reward_groups(prof)
        t1 = time.perf_counter()
        opt = brute_force_plan(prof)
        t_plan, t_brute = t_plan + t1 - t0, t_brute + time.perf_counter() - t1
        ratios.append(plan.makespan / opt.makespan)
    r = np.array(ratios)
    return {"instances": instances, "workers": "2-6", "seed": seed, "max_ratio_to_optimal": round(float(r.max()), 5),
            "mean_ratio_to_optimal": round(float(r.mean()), 6),
            "share_optimal": round(float((r <= 1 + 1e-9).mean()), 4),
            "share_within_5pct": round(float((r <= 1.05).mean()), 4),
            "scheduler_ms_per_instance": round(1e3 * t_plan / instances, 2),
            "brute_force_ms_per_instance": round(1e3 * t_brute / instances, 2)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--instances", type=int, default=500)
    ap.add_argument("--out", default="benchmarks/results/reward_makespan.json")
    args = ap.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    world = WorldConfig(p_pour=0.2)
    exs = examples(args.batch, 3, world, "any")
    videos = torch.stack([to_tensor(render(e.scene, e.seed, world.frames, world.size).video) for e in exs])
    prompts = [caption(e.scene) for e in exs]
    comp = build(HEADS)
    load_before = os.getloadavg()
    set_thread_budget(2)
    compose(comp, videos, prompts)
    t_local = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        reference = compose(comp, videos, prompts)
        t_local.append(time.perf_counter() - t0)
    set_thread_budget(1)  # the driver only waits from here on
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        t0 = time.perf_counter()
        pool = RewardPool(comp, "ray", timeout_s=300)
        t_start = time.perf_counter() - t0
        t0 = time.perf_counter()
        pool.profile(videos, prompts)
        t_profile = time.perf_counter() - t0
        plan = pool.replan()
        pool.set_plan(plan)
        plans = {"grouped": plan, "serial": fixed_serial(pool.profiles, True),
                 "serial_full": fixed_serial(pool.profiles, False)}
        modes = {}
        for mode, (med, best, groups, workers, result) in timed_modes(pool, plans, videos, prompts,
                                                                       args.repeats).items():
            p = plans[mode]
            modes[mode] = {"plan": describe(p), "predicted_s": round(p.makespan, 4), "measured_median_s": round(med, 4),
                           "measured_best_s": round(best, 4), "measured_group_s": [round(g, 4) for g in groups],
                           "worker_s": {k: round(v, 4) for k, v in sorted(workers.items())},
                           "identical_to_compose": same(result, reference)}
            print(f"{mode:11s} predicted {p.makespan:.3f} s  measured median {med:.3f} s (best {best:.3f})  "
                  f"{describe(p)}")
        pool.close()
    finally:
        ray.shutdown()
    grouped = modes["grouped"]["measured_median_s"]
    measured_profiles = {k: [round(c, 5) if np.isfinite(c) else None for c in v] for k, v in pool.profiles.items()}
    brute = brute_force_plan(pool.profiles)
    out = {
        "setup": {"batch": args.batch, "frames": world.frames, "size": world.size, "ray_cpus": 2, "workers":
                  [h.name for h in HEADS], "repeats": args.repeats, "cores": os.cpu_count(),
                  "loadavg_before": [round(x, 2) for x in load_before],
                  "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                  "python": platform.python_version(), "torch": torch.__version__, "ray": ray.__version__},
        "profiles_s": measured_profiles, "pool_start_s": round(t_start, 2), "profile_wall_s": round(t_profile, 2),
        "plan": {"groups": [list(g) for g in plan.groups], "quotas": [list(q) for q in plan.quotas],
                 "predicted_s": round(plan.makespan, 4), "serial_predicted_s": round(plan.serial_makespan, 4),
                 "brute_force_s": round(brute.makespan, 4)},
        "in_process_compose_2threads_median_s": round(statistics.median(t_local), 4),
        "modes": modes,
        "speedup_serial_over_grouped": round(modes["serial"]["measured_median_s"] / grouped, 3),
        "speedup_serial_full_over_grouped": round(modes["serial_full"]["measured_median_s"] / grouped, 3),
        "speedup_serial_over_grouped_best_runs": round(modes["serial"]["measured_best_s"]
                                                       / modes["grouped"]["measured_best_s"], 3),
        "predicted_speedup": round(plan.serial_makespan / plan.makespan, 3),
        "target_speedup": 1.7,
        "scheduler_vs_brute_force": scheduler_vs_brute_force(args.instances, 2026),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("speedup_serial_over_grouped", "speedup_serial_full_over_grouped",
                                          "predicted_speedup", "scheduler_vs_brute_force")}, indent=1))


if __name__ == "__main__":
    main()
