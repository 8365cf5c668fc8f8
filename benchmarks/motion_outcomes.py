"""Where the motion and order atoms fail (#4): observed vs asked motions on the eval set's motion prompts.

For each model (and for the rendered ground truth, the verifier's own ceiling): the eval sampler's clips (the eval
seeds, so the clips are those `vidtune eval` judges), the confusion of asked vs observed motion on one-motion prompts
and the outcome of every two-motion ("then") prompt (metrics.motion_outcomes.order_outcome).

    .venv/bin/python benchmarks/motion_outcomes.py builtin:base runs/shapeworld/sft/model \
        --out benchmarks/results/motion_outcomes.json [--set sampling.guidance=6] [--i2v]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import torch

from vidtune.config import load_recipe
from vidtune.metrics.motion_outcomes import ORDER_OUTCOMES, motion_confusion, order_outcome
from vidtune.models.tiny import load_tiny
from vidtune.rewards.verifier import ShapeWorldVerifier
from vidtune.sampling.ode import generate
from vidtune.stages.evaluate import eval_examples, eval_set


def outcomes(videos: torch.Tensor, prompts: list[str], asked: list[tuple[str, ...]]) -> dict:
    """The verifier's observed motions of ``videos`` summarised against the ``asked`` motion sequences."""
    observed = [d.get("motions") for d in ShapeWorldVerifier()(videos, prompts).details]
    single = [(a[0], None if g is None else g[0]) for a, g in zip(asked, observed) if len(a) == 1]
    order = Counter(order_outcome(a, None if g is None else tuple(g)) for a, g in zip(asked, observed) if len(a) == 2)
    return {"single_motion_pass": sum(a == g for a, g in single), "single_motion_n": len(single),
            "confusion": motion_confusion([a for a, _ in single], [g for _, g in single]),
            "then_outcomes": {k: order.get(k, 0) for k in ORDER_OUTCOMES}, "then_n": sum(order.values())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="*")
    ap.add_argument("--out", default="benchmarks/results/motion_outcomes.json")
    ap.add_argument("--set", nargs="*", default=[], help="recipe overrides (e.g. sampling.guidance=6)")
    ap.add_argument("--i2v", action="store_true", help="image-to-video: condition on the rendered clip's first frame")
    args = ap.parse_args()
    torch.set_num_threads(2)
    recipe = load_recipe(None, args.set)
    w, s = recipe.world, recipe.sampling
    es = eval_set(recipe)  # the same examples, in the same order, with the eval's prompts and sampling seeds
    exs = eval_examples(recipe)
    keep = [i for i, x in enumerate(exs) if x.scene.motions and not x.scene.pour]
    prompts, seeds = [es.prompts[i] for i in keep], [es.seeds[i] for i in keep]
    asked = [tuple(exs[i].scene.motions) for i in keep]
    real = torch.stack([torch.from_numpy(exs[i].render(w).video).permute(0, 3, 1, 2) for i in keep])
    result = {"overrides": args.set, "i2v": args.i2v, "prompts": prompts, "rows": {"rendered": outcomes(real, prompts, asked)}}
    for spec in args.models:
        policy = load_tiny(spec).eval()
        with torch.no_grad():
            videos = generate(policy, prompts, seeds, steps=s.steps, shift=s.shift, guidance=s.guidance,
                              images=real[:, 0] if args.i2v else None)
        result["rows"][spec] = outcomes(videos, prompts, asked)
    for name, row in result["rows"].items():
        print(f"{name}: one motion {row['single_motion_pass']}/{row['single_motion_n']}; "
              f"then {row['then_outcomes']}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
