"""How much of a GRPO step's gradient is signal? (#5 diagnostic)

One rollout batch of the GRPO recipe from a checkpoint (``--prompts`` groups of G), judged by the verifier. For
each group, the gradient of the GRPO loss restricted to that group (on-policy, ratio 1: REINFORCE with the group
baseline over the trained transitions, as `stages.grpo.update` computes it) is flattened; from these per-group
gradients `math.noise_scale.gradient_noise_scale` estimates the squared norm of the mean gradient |G|², the noise
tr Σ, and the batch (in groups) at which a step's gradient is half signal, B_simple = tr Σ / |G|². The same
rollouts with coin-flip rewards (0/1) are the null: their |G|² must be 0 within its standard error; the clip's mean
brightness, a reward GRPO demonstrably raises, is the positive control. B_simple does
not depend on the advantages' scale, so the advantage variants (z-score, a std floor that zeroes near-tied groups,
the mean baseline) are compared on the same rollouts. When a prompt has several groups (more groups than the prompt
pool), the products of their gradients estimate the signal one prompt's groups agree on, E_p|G_p|², which bounds
|G|² from above: a large E_p|G_p|² with a small |G|² means prompts that need different changes.

    .venv/bin/python benchmarks/grpo_noise_scale.py runs/shapeworld_s6/sft/model --prompts 128 \
        --advantages verifier coin_flip brightness --set grpo.micro_batch=128 grpo.prompt_pool=32
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from rich.progress import track

from vidtune.config import load_recipe
from vidtune.math.advantages import group_advantages
from vidtune.math.grpo_loss import grpo_objective
from vidtune.math.noise_scale import gradient_noise_scale, same_prompt_signal, signal_fraction
from vidtune.models.tiny import load_tiny
from vidtune.rewards.base import build_reward
from vidtune.rewards.verifier import ShapeWorldVerifier
from vidtune.sampling.rollout import transition_eval
from vidtune.stages.grpo import do_rollout, prompt_pool, rollout_spec
from vidtune.world.dataset import motion_prompts_with_frames


# advantage variants on the same rollouts: group_advantages keyword overrides of the verifier's; coin_flip (0/1
# rewards) is the null, brightness (the clip's mean pixel, which GRPO demonstrably raises: tests/integration/
# test_grpo_learns.py) the positive control
VARIANTS = {"verifier": {}, "verifier_std_floor": {"std_floor": 0.05},
            "verifier_mean_baseline": {"mode": "mean_baseline"}, "coin_flip": {}, "brightness": {}}


def group_gradients(policy, ro, cond, uncond, adv: torch.Tensor, group: int, label: str) -> torch.Tensor:
    """[P, n_params] gradient of the on-policy GRPO loss of each group alone (normalised by its G samples)."""
    params = [p for p in policy.parameters() if p.requires_grad]
    n_cols, out = ro.train_steps.shape[1], []
    for start in track(range(0, adv.shape[0], group), description=f"{label}: per-group gradients"):
        rows = torch.arange(start, start + group)
        for p in params:
            p.grad = None
        for col in range(n_cols):
            te = transition_eval(policy, ro, cond, uncond, rows, col)
            obj = grpo_objective(te.logp.unsqueeze(1), ro.logp_old[rows, col].unsqueeze(1), adv[rows],
                                 torch.ones(group, dtype=torch.bool), n_steps=n_cols, n_valid=group)
            obj.loss.backward()
        out.append(torch.cat([p.grad.flatten() for p in params]))
    return torch.stack(out)


def summary(grads: torch.Tensor, batches: tuple[int, ...], tensors: dict[str, int], prompt_ids: torch.Tensor,
            top: int = 5) -> dict:
    """The whole gradient's noise scale; the signal two groups of the same prompt agree on (E_p|G_p|², whose
    excess over |G|² is prompts pulling in different directions); and the ``top`` parameter tensors by the
    z-score |G|²/se of their own (Adam steps each coordinate by its own signal-to-noise, so a signal confined to a
    few tensors matters)."""
    ns = gradient_noise_scale(grads)
    repeated = int((prompt_ids.bincount() >= 2).sum())  # prompts with two or more groups
    same, same_se, n_prompts = same_prompt_signal(grads, prompt_ids) if repeated >= 2 else (None, None, 0)
    b_simple = ns.trace_cov / ns.signal_sq if ns.signal_sq > 0 else float("inf")
    per, start = {}, 0
    for name, size in tensors.items():
        t = gradient_noise_scale(grads[:, start: start + size])
        start += size
        per[name] = {"z": t.signal_sq / t.signal_sq_se if t.signal_sq_se > 0 else 0.0, "signal_sq": t.signal_sq,
                     "trace_cov": t.trace_cov, "params": size}
    best = sorted(per, key=lambda k: -per[k]["z"])[:top]
    return {"signal_sq": ns.signal_sq, "signal_sq_se": ns.signal_sq_se, "trace_cov": ns.trace_cov, "groups": ns.n,
            "b_simple_groups": b_simple,
            "same_prompt_signal_sq": same, "same_prompt_signal_sq_se": same_se, "same_prompt_prompts": n_prompts,
            "signal_fraction": {str(b): signal_fraction(ns.signal_sq, ns.trace_cov, b) for b in batches},
            "top_tensors": {k: per[k] for k in best}}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--prompts", type=int, default=128,
                    help="groups in the rollout batch; more than the prompt pool (64) repeats prompts, which the "
                    "same-prompt signal needs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides (e.g. grpo.rollout.eta=0.7)")
    ap.add_argument("--advantages", nargs="*", default=list(VARIANTS),
                    help="advantage variants to measure, or registered reward names (e.g. scorer); each costs one "
                    "backward pass over the batch")
    ap.add_argument("--i2v", action="store_true",
                    help="image-to-video: the prompts are 64 rendered ShapeWorld training clips with a motion, each "
                    "group conditioned on its clip's first frame (the layout is then given; the SDE steps decide "
                    "the motion)")
    ap.add_argument("--out", default="benchmarks/results/grpo_noise_scale.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    recipe = load_recipe(None, args.set)
    cfg, policy = recipe.grpo, load_tiny(args.model)
    pool, frames = (motion_prompts_with_frames(64, recipe.run.seed + 5, recipe.world) if args.i2v
                    else (prompt_pool(recipe).prompts, None))
    prompt_ids = torch.arange(args.prompts) % len(pool)  # > len(pool) groups: some prompts twice
    prompts = [pool[i] for i in prompt_ids.tolist()]
    ro, cond, uncond = do_rollout(policy, prompts, cfg.group_size, rollout_spec(cfg), seed=args.seed,
                                  images=None if frames is None else frames[prompt_ids])
    videos = policy.decode(ro.final).cpu()
    rewards = ShapeWorldVerifier()(videos, ro.prompts).scores
    controls = {"coin_flip": lambda: torch.bernoulli(torch.full_like(rewards, 0.5),
                                                     generator=torch.Generator().manual_seed(args.seed)),
                "brightness": lambda: videos.flatten(1).mean(1).double()}
    tensors = {n: p.numel() for n, p in policy.named_parameters() if p.requires_grad}  # group_gradients' order
    batches = (cfg.prompts_per_iter, 4, 16, 64, 256, 1024)
    result = {"model": args.model, "overrides": args.set, "i2v": args.i2v, "groups": args.prompts,
              "group_size": cfg.group_size,
              "seed": args.seed, "reward_mean": float(rewards.mean()), "rewards": {}}
    for name in args.advantages:
        if name in VARIANTS:
            r = controls[name]() if name in controls else rewards
        else:  # another registered reward on the same clips
            r = build_reward(name)(videos, ro.prompts).scores.double()
        kw = {"mode": cfg.advantage, "std_floor": cfg.std_floor, **VARIANTS.get(name, {})}
        ga = group_advantages(r, cfg.group_size, **kw)
        grads = group_gradients(policy, ro, cond, uncond, ga.advantages, cfg.group_size, name)
        result["rewards"][name] = summary(grads, batches, tensors, prompt_ids)
        result["rewards"][name]["informative_groups"] = int((ga.group_std > 0).sum())
        # the spread a group sees against the spread between groups: a reward that varies across prompts but hardly
        # within a group gives GRPO little to compare
        # (nan-aware: a reward may score a prompt NaN, e.g. motion_progress on a non-directional motion)
        group_means = r.reshape(-1, cfg.group_size).nanmean(1)
        scored = ~group_means.isnan()
        result["rewards"][name]["reward_mean"] = float(r.nanmean())
        result["rewards"][name]["scored_groups"] = int(scored.sum())
        result["rewards"][name]["within_group_std"] = float(ga.group_std[scored].mean())
        result["rewards"][name]["between_group_std"] = float(group_means[scored].std())
        print(name, json.dumps(result["rewards"][name], indent=1))
    result["seconds"] = time.time() - t0
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
