"""Does a model's prediction use the motion words and their order? A teacher-forced caption probe (#4).

For every motion prompt of the eval set (one motion, or a "then" sequence), its ground-truth clip x_0 is noised to
x_t = (1 − t)·x_0 + t·ε and the model predicts the velocity with the true caption c and with the counterfactual
caption c⁻ (world/counterfactual.py: a sequence in reversed order, or a different single motion). Both are scored
against the true clip's target ε − x_0:

    gap = e(c⁻) − e(c),   e = mean over the clip's elements of (v − (ε − x_0))²

so gap > 0 means the true words fit the true motion better (the model's prediction depends on them the right way),
and "accuracy" is the share of clips with gap > 0 (a diffusion classifier between the two captions; 0.5 = the words
are ignored). Image-to-video (the clean first frame given, as in SFT): the first frame then fixes the layout, so
what the words add is where the objects go. Three flow times, two noise draws each.

    .venv/bin/python benchmarks/motion_word_probe.py builtin:base_p244_pan runs/sft_camera_p244/sft/model \
        --out benchmarks/results/motion_word_probe.json
"""

from __future__ import annotations

import argparse
import json
import random
from dataclasses import replace
from pathlib import Path

import torch

from vidtune.config import load_recipe
from vidtune.math.flow_matching import interpolate, per_sample_mse, velocity_target
from vidtune.models.tiny import load_tiny
from vidtune.stages.evaluate import eval_examples, eval_set
from vidtune.world.counterfactual import counterfactual_motions
from vidtune.world.grammar import caption

TIMES = (0.5, 0.7, 0.9)
DRAWS = 2


def probe(policy, real: torch.Tensor, true_caps: list[str], cf_caps: list[str]) -> dict[str, torch.Tensor]:
    """Per flow time: the [N] gaps e(c⁻) − e(c) averaged over ``DRAWS`` noise draws (I2V mode)."""
    x0 = policy.encode_video(real)
    out = {}
    with torch.no_grad():
        cond_true = policy.encode_prompts(true_caps, images=real[:, 0])
        cond_cf = policy.encode_prompts(cf_caps, images=real[:, 0])
        for t in TIMES:
            gaps = []
            for draw in range(DRAWS):
                eps = torch.randn(x0.shape, generator=torch.Generator().manual_seed(draw))
                tt = torch.full((len(x0),), t)
                xt, target = interpolate(x0, eps, tt), velocity_target(x0, eps)
                gaps.append(per_sample_mse(policy.velocity(xt, tt, cond_cf), target)
                            - per_sample_mse(policy.velocity(xt, tt, cond_true), target))
            out[str(t)] = torch.stack(gaps).mean(0)
    return out


def summary(gaps: dict[str, torch.Tensor], rows: torch.Tensor) -> dict:
    """Accuracy (share of gaps > 0) and mean gap over ``rows``, per flow time and over all times."""
    per_t = {t: {"accuracy": float((g[rows] > 0).double().mean()), "mean_gap": float(g[rows].mean())}
             for t, g in gaps.items()}
    every = torch.cat([g[rows] for g in gaps.values()])
    return {"accuracy": float((every > 0).double().mean()), "mean_gap": float(every.mean()), "per_t": per_t,
            "n": int(rows.sum())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("models", nargs="+")
    ap.add_argument("--out", default="benchmarks/results/motion_word_probe.json")
    args = ap.parse_args()
    torch.set_num_threads(2)
    recipe = load_recipe(None)
    w = recipe.world
    es = eval_set(recipe)  # the eval's prompts, in the order of its examples (as benchmarks/motion_outcomes.py)
    exs = eval_examples(recipe)
    rng = random.Random("motion-word-probe")
    idx, cf_caps = [], []
    for i, x in enumerate(exs):
        shown = None if x.scene.pour else counterfactual_motions(x.scene.motions, rng)
        if shown is not None:
            idx.append(i)
            cf_caps.append(caption(replace(x.scene, motions=shown)))
    true_caps = [es.prompts[i] for i in idx]
    real = torch.stack([torch.from_numpy(exs[i].render(w).video).permute(0, 3, 1, 2) for i in idx])
    order = torch.tensor([len(exs[i].scene.motions) > 1 for i in idx])
    result = {"true": true_caps, "counterfactual": cf_caps, "models": {}}
    for spec in args.models:
        gaps = probe(load_tiny(spec).eval(), real, true_caps, cf_caps)
        row = {"one_motion": summary(gaps, ~order), "order": summary(gaps, order)}
        result["models"][spec] = row
        print(f"{spec}: one motion acc {row['one_motion']['accuracy']:.3f} gap {row['one_motion']['mean_gap']:+.5f}"
              f" (n {row['one_motion']['n']}); order acc {row['order']['accuracy']:.3f} "
              f"gap {row['order']['mean_gap']:+.5f} (n {row['order']['n']})", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
