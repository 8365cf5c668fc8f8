"""Stage ablations on the embedded default: each named variant trains one stage from a fixed starting checkpoint
with overrides and is evaluated on the fixed eval set. Results append to benchmarks/results/ablations.jsonl
(one line per finished variant, so a partial run keeps what it measured).

    .venv/bin/python benchmarks/ablations.py sft            # SFT seeds, structure weighting, physics branch
    .venv/bin/python benchmarks/ablations.py grpo --init runs/shapeworld/sft/model
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from vidtune.config import load_recipe
from vidtune.metrics.physics_eval import physics_flow_metrics
from vidtune.models.tiny import load_tiny
from vidtune.stages import evaluate

# three heads, one per curriculum component; the fixed-weight scalar is the verifier alone
CURRICULUM_HEADS = ("grpo.reward.heads=[{reward: sharpness, component: visual, weight: 0}, "
                    "{reward: motion_smoothness, component: temporal, weight: 0}, "
                    "{reward: verifier, component: semantic, weight: 1}]")

VARIANTS = {
    "sft": {
        "sft_seed0": ["run.seed=0"],
        "sft_seed1": ["run.seed=1"],
        "sft_seed2": ["run.seed=2"],
        "sft_plain_seed0": ["run.seed=0", "sft.structure.enabled=false"],
        "sft_physics_seed0": ["run.seed=0", "sft.physics.enabled=true"],
    },
    "grpo": {
        "grpo_seed0": ["run.seed=0"],
        "grpo_seed1": ["run.seed=1"],
        "grpo_vipo": ["grpo.vipo.enabled=true"],
        "grpo_bpgo": ["grpo.bpgo.enabled=true"],
        "grpo_bpgo_ras_only": ["grpo.bpgo.enabled=true", "grpo.bpgo.crt=off"],
        "grpo_bpgo_crt_only": ["grpo.bpgo.enabled=true", "grpo.bpgo.alpha=0"],
        "grpo_self_paced": ["grpo.curriculum.enabled=true", CURRICULUM_HEADS],
        "grpo_joint_fixed": ["grpo.joint.enabled=true", "grpo.joint.mode=fixed", CURRICULUM_HEADS],
        "grpo_joint_mgda": ["grpo.joint.enabled=true", CURRICULUM_HEADS],
        "grpo_full_stack": ["grpo.vipo.enabled=true", "grpo.curriculum.enabled=true", CURRICULUM_HEADS],
    },
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=list(VARIANTS))
    ap.add_argument("--init", default=None, help="starting checkpoint (default: the recipe's model.init)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--out", default="benchmarks/results/ablations.jsonl")
    ap.add_argument("--physics", action="store_true", help="also compute physics-slice flow metrics")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for name, overrides in VARIANTS[args.stage].items():
        if args.only and name not in args.only:
            continue
        recipe = load_recipe(None, [*overrides, f"run.name={name}", "run.out_dir=/tmp/vidtune_ablations"])
        t0 = time.time()
        if args.stage == "sft":
            from vidtune.stages.sft import run
        else:
            from vidtune.stages.grpo import run
        model = run(recipe, Path(recipe.run.out_dir) / name, init=args.init, progress=False)
        train_s = time.time() - t0
        res = evaluate.evaluate_policy(load_tiny(model), recipe, progress=False)
        row = {"variant": name, "stage": args.stage, "overrides": overrides, "init": args.init,
               "train_seconds": train_s, "summary": res["summary"], "slices": res["slices"],
               "vbench_total": res["vbench"]["total"], "vbench_quality": res["vbench"]["quality"]}
        if args.physics or "physics" in name:
            row["physics_flow"] = physics_flow_metrics(load_tiny(model), recipe)
        with open(out, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        print(name, {k: round(v["mean"], 3) for k, v in res["summary"].items() if v["n"]}, flush=True)


if __name__ == "__main__":
    main()
