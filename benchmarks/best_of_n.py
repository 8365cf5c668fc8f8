"""Best-of-N gain per extra compute on ShapeWorld: the verifier score of the chosen clip for N = 1, 2, 4, 8 on the
fixed eval prompts (N× sampling cost), ranked by the verifier itself and by the learned scorer (held-out judge:
the verifier). Writes benchmarks/results/best_of_n.json.

    .venv/bin/python benchmarks/best_of_n.py [--model runs/shapeworld/dpo/model]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from vidtune.config import load_recipe
from vidtune.math.intervals import mean_interval
from vidtune.models.tiny import load_tiny
from vidtune.rewards.base import build_reward
from vidtune.stages.evaluate import eval_set


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="builtin:base")
    ap.add_argument("--prompts", type=int, default=32)
    args = ap.parse_args()
    recipe = load_recipe(None)
    es = eval_set(recipe)
    prompts, seeds = es.prompts[: args.prompts], es.seeds[: args.prompts]
    policy = load_tiny(args.model)
    verifier = build_reward("verifier")
    from vidtune.sampling.best_of_n import best_of_n

    s = recipe.sampling
    big = best_of_n(policy, prompts, seeds, 8, verifier, steps=s.steps, shift=s.shift, guidance=s.guidance)
    scorer_scores = None
    out = {"model": args.model, "prompts": len(prompts), "judge": "verifier", "by_n": {}}
    try:
        from vidtune.rewards.scorer import LearnedScorer
        from vidtune.sampling.ode import generate

        flat_p = [p for p in prompts for _ in range(8)]
        flat_s = [q * 1000 + k for q in seeds for k in range(8)]
        vids = generate(policy, flat_p, flat_s, steps=s.steps, shift=s.shift, guidance=s.guidance)
        scorer_scores = LearnedScorer()(vids, flat_p).scores.view(len(prompts), 8)
    except Exception as e:  # noqa: BLE001
        out["scorer_error"] = str(e)
    for n in (1, 2, 4, 8):
        v = big.all_scores[:, :n]
        row = {"compute_x": n, "oracle_verifier": mean_interval(torch.nan_to_num(v, nan=0).max(1).values)._asdict()}
        if scorer_scores is not None:
            pick = scorer_scores[:, :n].argmax(1)
            row["ranked_by_scorer_judged_by_verifier"] = mean_interval(v[torch.arange(len(prompts)), pick])._asdict()
        out["by_n"][str(n)] = row
    Path("benchmarks/results/best_of_n.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out["by_n"], indent=1))


if __name__ == "__main__":
    main()
