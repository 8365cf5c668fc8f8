"""Where does GRPO's verifier advantage point? (#5 diagnostic)

Rollouts of the GRPO recipe (SDE, shared initial noise per group) from a checkpoint on the GRPO prompt pool; each
sample is judged by the verifier, and its z-scored group advantage A (math.advantages.group_advantages, as the
stage computes it) is set against per-sample features: the verifier's atoms, its cleanliness factor, the object's
pixel area, and the rollout's noise (background roughness). Reported per feature is the advantage-weighted mean
difference Σ_b A_b·(f_b − f̄_p) / Σ_b |A_b| (math.advantages.advantage_push), i.e. the direction in which one
policy-gradient step moves the feature (REINFORCE pushes up the likelihood of positive-A samples), split into
near-tied groups (reward spread < ``--tied``) and the others. Also reported: each feature's mean under the rollout
sampler (SDE), to set against the ODE evaluation of the same checkpoint.

    .venv/bin/python benchmarks/grpo_signal.py runs/shapeworld_s6/sft/model --prompts 32
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from vidtune.config import load_recipe
from vidtune.math.advantages import advantage_push, group_advantages
from vidtune.models.tiny import load_tiny
from vidtune.rewards.verifier import COLOUR_NAMES, ShapeWorldVerifier, segment_palette
from vidtune.stages.grpo import do_rollout, prompt_pool, rollout_spec
from vidtune.world.grammar import parse

FEATURES = ("reward", "clean", "object_area", "roughness", "existence", "colour", "shape", "size", "count", "motion")


def features(verifier: ShapeWorldVerifier, video: torch.Tensor, prompt: str, details: dict, reward: float) -> dict:
    """Per-sample features (NaN where the verifier did not check an atom)."""
    frames = video.permute(0, 2, 3, 1).numpy()
    target = COLOUR_NAMES.index(parse(prompt).colour)
    area = float((segment_palette(frames, verifier.colour_threshold) == target).sum((1, 2)).mean())
    atoms = details.get("atoms", {})
    out = {"reward": reward, "clean": details.get("clean", np.nan), "object_area": area,
           "roughness": float(np.mean(details.get("roughness", [np.nan])))}
    out.update({a: float(atoms[a]) if a in atoms else np.nan for a in FEATURES[4:]})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--tied", type=float, default=0.05, help="groups whose reward std is below this are 'near-tied'")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides (e.g. grpo.rollout.eta=0.7)")
    ap.add_argument("--out", default="benchmarks/results/grpo_signal.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    recipe = load_recipe(None, args.set)
    cfg, policy, verifier = recipe.grpo, load_tiny(args.model), ShapeWorldVerifier()
    pool = prompt_pool(recipe).prompts
    prompts = [pool[i % len(pool)] for i in range(args.prompts)]
    ro, _, _ = do_rollout(policy, prompts, cfg.group_size, rollout_spec(cfg), seed=recipe.run.seed)
    videos = policy.decode(ro.final).cpu()
    out = verifier(videos, ro.prompts)
    rewards = out.scores
    ga = group_advantages(rewards, cfg.group_size, mode=cfg.advantage, std_floor=cfg.std_floor)
    rows = [features(verifier, v, p, d, float(r)) for v, p, d, r in zip(videos, ro.prompts, out.details, rewards)]
    spread = ga.group_std.numpy()
    tied = torch.from_numpy(spread < args.tied).repeat_interleave(cfg.group_size)
    result = {"model": args.model, "overrides": args.set, "prompts": args.prompts, "group_size": cfg.group_size,
              "tied_threshold": args.tied, "tied_groups": int((spread < args.tied).sum()),
              "mean": {f: float(np.nanmean([r[f] for r in rows])) for f in FEATURES},  # under the rollout sampler
              "group_reward_std": spread.round(4).tolist(), "push": {}}
    for name, mask in (("all", torch.ones_like(tied)), ("tied", tied), ("spread", ~tied)):
        a = torch.where(mask, ga.advantages, 0.0)
        result["push"][name] = {f: advantage_push(a, torch.tensor([r[f] for r in rows]), cfg.group_size)
                                for f in FEATURES}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps({k: {f: round(v, 4) for f, v in d.items()} for k, d in result["push"].items()}, indent=1))
    print("tied groups", result["tied_groups"], "of", args.prompts)


if __name__ == "__main__":
    main()
