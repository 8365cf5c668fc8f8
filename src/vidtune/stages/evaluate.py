"""Evaluation of a policy on fixed prompts and seeds: verifier atoms, scores and slices (ALGORITHMS.md §10).

The prompt set (seen + held-out instruction prompts) and the sampling noise depend only on ``eval.seed``, so the
same clips are compared across stages and checkpoints.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from vidtune.config import Recipe
from vidtune.metrics.slices import slice_table
from vidtune.rewards.verifier import ATOMS, ShapeWorldVerifier
from vidtune.sampling.ode import generate
from vidtune.world.dataset import examples
from vidtune.world.grammar import Scene, caption


@dataclass(frozen=True)
class EvalSet:
    scenes: list[Scene]
    prompts: list[str]
    seeds: list[int]


def eval_set(recipe: Recipe) -> EvalSet:
    e, w = recipe.eval, recipe.world
    exs = examples(e.n_seen, e.seed, w, "train") + examples(e.n_heldout, e.seed, w, "heldout")
    return EvalSet([x.scene for x in exs], [caption(x.scene) for x in exs],
                   [e.seed * 100_003 + i for i in range(len(exs))])


def score_videos(videos: torch.Tensor, es: EvalSet) -> dict[str, torch.Tensor]:
    """Per-sample metrics [N]: verifier score, cleanliness and every atom (NaN where the prompt has no such atom)."""
    out = ShapeWorldVerifier()(videos, es.prompts)
    metrics = {"verifier": out.scores, "clean": torch.tensor([d.get("clean", float("nan")) for d in out.details])}
    for a in ATOMS:
        metrics[f"atom/{a}"] = out.components.get(a, torch.full((len(es.prompts),), float("nan")))
    return metrics


def evaluate_policy(policy, recipe: Recipe, progress: bool = True) -> dict:
    es = eval_set(recipe)
    s = recipe.sampling
    videos = generate(policy, es.prompts, es.seeds, steps=s.steps, shift=s.shift, guidance=s.guidance,
                      batch_size=s.batch_size, progress=progress)
    metrics = score_videos(videos, es)
    table = slice_table(metrics, es.scenes)
    return {"summary": {k: v for k, v in table["all"].items()}, "slices": table,
            "per_sample": {k: v.tolist() for k, v in metrics.items()}, "prompts": es.prompts,
            "videos": videos[: recipe.eval.grid_prompts]}


def write_eval(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {k: v for k, v in result.items() if k != "videos"}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=float))
    tmp.replace(path)
