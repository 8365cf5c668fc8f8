"""Stage ablations on the embedded default: each named variant trains one stage from a fixed starting checkpoint
with overrides and is evaluated on the fixed eval set. Results append to benchmarks/results/ablations.jsonl
(one line per finished variant, so a partial run keeps what it measured).

    .venv/bin/python benchmarks/ablations.py sft            # SFT seeds, structure weighting, physics branch
    .venv/bin/python benchmarks/ablations.py grpo --init runs/shapeworld/sft/model --seeds 0 1 2 [--only grpo grpo_vipo]
    .venv/bin/python benchmarks/ablations.py dpo --init runs/shapeworld/grpo/model --seeds 0 1 2 --set $DPO_PAIRS

Rows are keyed "<variant>_seed<k>"; a rerun skips the ones already in the output file.
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

# the reward-noise experiment: the verifier corrupted by N(0, 0.3²) on a fixed half of the prompts (rewards/noisy.py)
NOISY_HEAD = "grpo.reward.heads=[{reward: noisy, kwargs: {base: verifier, std: 0.3, fraction: 0.5}}]"

# the control's reward: the verifier plus N(0, 10²) clamped to [0, 1] on every prompt, i.e. a coin flip
PURE_NOISE_HEAD = "grpo.reward.heads=[{reward: noisy, kwargs: {base: verifier, std: 10, fraction: 1}}]"

VARIANTS = {
    "sft": {
        "sft": [],
        "sft_plain": ["sft.structure.enabled=false"],
        "sft_physics": ["sft.physics.enabled=true"],
        # 10× the pipeline's SFT samples (4000 × 32 vs 800 × 16) on 8× the clips: is the budget what holds back the
        # motion / camera / order atoms?
        "sft_long": ["sft.steps=4000", "sft.batch_size=32", "sft.dataset_size=16384"],
        # camera pans of the control mix rendered with 3× the background texture: is the pan's visibility what
        # keeps the model from binding "camera pans <dir>" (benchmarks/camera_probe.py)?
        "sft_camera_contrast": ["sft.control_contrast=3"],
        # flow times toward noise (as the base's last 8000 steps), where the pan direction is what the words add
        "sft_highnoise": ["sft.t_loc=1.2"],
        # the base's text encoder is nearly order-blind (positions 50× smaller than words): grow a position table
        # with gain 30 (Adam moves it ≈ 30·lr per step) so "then" order and the pan clause can be told apart
        "sft_textpos": ["sft.text_pos_gain=30"],
        "sft_textpos300": ["sft.text_pos_gain=300"],  # gain 30 grew the table to std 0.003 (effective 0.09) only
        # everything that raises what the pan's direction word is worth to the loss: all control clips (70 % pans),
        # 3× texture, image-to-video only, flow times further toward noise (binds on a 2×4×4 base, not on 8×8)
        "sft_pan_oracle": ["sft.control_ratio=1.0", "sft.control_contrast=3", "sft.p_i2v=1.0", "sft.t_loc=1.5"],
        # the same at 2.5× the steps: binding the pan (session 10) left sampled pans under the camera atom's threshold
        "sft_pan_oracle_long": ["sft.control_ratio=1.0", "sft.control_contrast=3", "sft.p_i2v=1.0", "sft.t_loc=1.5",
                                "sft.steps=2000"],
        # the same with 30 % general instruction clips: the all-control mix costs the motion atom (session 11)
        "sft_pan_oracle_long_mix": ["sft.control_ratio=0.7", "sft.control_contrast=3", "sft.p_i2v=1.0",
                                    "sft.t_loc=1.5", "sft.steps=2000"],
    },
    "grpo": {
        "start": None,  # the --init checkpoint itself, evaluated by this runner (no GRPO)
        "grpo": [],
        "grpo_vipo": ["grpo.vipo.enabled=true"],
        "grpo_bpgo": ["grpo.bpgo.enabled=true"],
        "grpo_bpgo_ras_only": ["grpo.bpgo.enabled=true", "grpo.bpgo.crt=off"],
        "grpo_bpgo_crt_only": ["grpo.bpgo.enabled=true", "grpo.bpgo.alpha=0"],
        "grpo_self_paced": ["grpo.curriculum.enabled=true", CURRICULUM_HEADS],
        "grpo_joint_fixed": ["grpo.joint.enabled=true", "grpo.joint.mode=fixed", CURRICULUM_HEADS],
        "grpo_joint_mgda": ["grpo.joint.enabled=true", CURRICULUM_HEADS],
        "grpo_full_stack": ["grpo.vipo.enabled=true", "grpo.curriculum.enabled=true", CURRICULUM_HEADS],
        # 5× the rollout budget of plain GRPO (150 iterations): is the budget what keeps GRPO at its start?
        "grpo_long": ["grpo.iterations=150"],
        "grpo_lr1e-4": ["grpo.lr=1e-4"],  # learning-rate sweep of plain GRPO at the same rollout budget
        "grpo_lr3e-4": ["grpo.lr=3e-4"],
        "grpo_noisy": [NOISY_HEAD],
        "grpo_noisy_bpgo": [NOISY_HEAD, "grpo.bpgo.enabled=true"],
        # the reward-noise experiment at a learning rate where plain GRPO does degrade
        "grpo_noisy_lr1e-4": [NOISY_HEAD, "grpo.lr=1e-4"],
        "grpo_noisy_bpgo_lr1e-4": [NOISY_HEAD, "grpo.bpgo.enabled=true", "grpo.lr=1e-4"],
        # where the signal is: groups of 8 spread by 0.02–0.09 in reward, and z-scoring gives a near-tied group the
        # same ±1 advantages as a group with a real quality gap; the mean baseline weights groups by their spread
        "grpo_mean_baseline": ["grpo.advantage=mean_baseline"],
        "grpo_eta07": ["grpo.rollout.eta=0.7"],  # more exploration per SDE step
        "grpo_eta07_mean_baseline": ["grpo.rollout.eta=0.7", "grpo.advantage=mean_baseline"],
        "grpo_std_floor": ["grpo.std_floor=0.05"],  # near-tied groups (spread < 0.05) get no advantage (§2.1)
        # 4× the rollouts per optimiser step (16 prompts × 8, 4× the budget): is the gradient's variance the limit?
        "grpo_p16": ["grpo.prompts_per_iter=16"],
        "grpo_g16": ["grpo.group_size=16", "grpo.prompts_per_iter=2"],  # same rollouts, larger groups
        # control: advantages from a coin flip (verifier + N(0, 10²) clamped to [0, 1] on every prompt): how much of
        # a run's change is the random walk of the update rather than the reward?
        "grpo_pure_noise": [PURE_NOISE_HEAD],
        # the dense verifier (rewards/soft_verifier.py) as the training reward; evaluation keeps the pass/fail one
        "grpo_soft": ["grpo.reward.heads=[{reward: soft_verifier}]"],
    },
    # pair sources (ALGORITHMS.md §8.2); the thresholds are set for every variant with --set (see docs/results.md)
    "dpo": {
        "start": None,  # the --init checkpoint itself, evaluated once (no DPO)
        "dpo_synthetic": ["dpo.pairs.on_policy=false"],
        # the same negatives built from the renderer's ground-truth clips of the candidate prompts (real-video stand-in)
        "dpo_synthetic_world": ["dpo.pairs.on_policy=false", "dpo.pairs.synthetic_from=world"],
        "dpo_synthetic_world_strong": ["dpo.pairs.on_policy=false", "dpo.pairs.synthetic_from=world", "dpo.lr=2e-5",
                                       "dpo.steps=300"],  # 12× the update (4× lr, 3× steps)
        "dpo_on_policy": ["dpo.pairs.synthetic=[]"],
        "dpo_both": [],
    },
}


def pair_counts(stage_dir: Path) -> dict[str, int]:
    """Pairs per source in the DPO stage's pair file (``on_policy``, ``synthetic/reverse``, …)."""
    counts: dict[str, int] = {}
    path = stage_dir / "pairs.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        src = json.loads(line).get("source", "unknown")
        counts[src] = counts.get(src, 0) + 1
    return counts


def train(stage: str, recipe, name: str, init: str | None) -> Path:
    """Run one stage of ``recipe`` from ``init``; returns the exported model folder."""
    if stage == "sft":
        from vidtune.stages.sft import run
    elif stage == "grpo":
        from vidtune.stages.grpo import run
    else:
        from vidtune.stages.dpo import run
    return run(recipe, Path(recipe.run.out_dir) / name, init=init, progress=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("stage", choices=list(VARIANTS))
    ap.add_argument("--init", default=None, help="starting checkpoint (default: the recipe's model.init)")
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="run.seed of each repeat")
    ap.add_argument("--set", nargs="*", default=[], help="extra dotted overrides for every variant")
    ap.add_argument("--out", default="benchmarks/results/ablations.jsonl")
    ap.add_argument("--run-dir", default="/tmp/vidtune_ablations",
                    help="where the runs go (a finished run there is reused: use a fresh folder per --init)")
    ap.add_argument("--physics", action="store_true", help="also compute physics-slice flow metrics")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(f"{args.stage}_{variant}" if overrides is None else f"{variant}_seed{seed}", variant,
             None if overrides is None else [*overrides, *args.set, f"run.seed={seed}"])
            for seed in args.seeds for variant, overrides in VARIANTS[args.stage].items()
            if (not args.only or variant in args.only) and (overrides is not None or seed == args.seeds[0])]
    done = {json.loads(line)["variant"] for line in out.read_text().splitlines()} if out.exists() else set()
    for name, variant, overrides in jobs:
        if name in done:  # resumable: a finished (variant, seed) is not run again
            continue
        recipe = load_recipe(None, [*(overrides or args.set), f"run.name={name}", f"run.out_dir={args.run_dir}"])
        t0 = time.time()
        model = args.init if overrides is None else train(args.stage, recipe, name, args.init)
        train_s = time.time() - t0
        res = evaluate.evaluate_policy(load_tiny(model), recipe, progress=False)
        row = {"variant": name, "group": f"{args.stage}_{variant}" if overrides is None else variant,
               "seed": recipe.run.seed, "stage": args.stage,
               "overrides": overrides, "init": args.init,
               "train_seconds": train_s, "summary": res["summary"], "slices": res["slices"],
               "vbench_total": res["vbench"]["total"], "vbench_quality": res["vbench"]["quality"]}
        if args.stage == "dpo" and overrides is not None:
            row["pairs"] = pair_counts(Path(recipe.run.out_dir) / name / "dpo")
            row["skipped"] = (Path(recipe.run.out_dir) / name / "dpo" / "SKIPPED").exists()
        if args.physics or "physics" in name:
            row["physics_flow"] = physics_flow_metrics(load_tiny(model), recipe)
        with open(out, "a") as f:
            f.write(json.dumps(row, default=float) + "\n")
        print(name, {k: round(v["mean"], 3) for k, v in res["summary"].items() if v["n"]}, flush=True)


if __name__ == "__main__":
    main()
