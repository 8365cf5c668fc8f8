"""ALGORITHMS.md §1 "Coarse noise" in a GRPO run: block-constant SDE noise with the KL to the reference on its
subspace. The first update is on-policy (ratio 1, KL 0); later ones move off the reference with a finite KL."""

import math

from vidtune.config import load_recipe
from vidtune.runlog import read_metrics
from vidtune.stages import grpo


def test_a_grpo_run_with_coarse_noise_and_kl(tiny_policy, tmp_path):
    model = tiny_policy.save_pretrained(tmp_path / "tiny")
    recipe = load_recipe(None, [f"model.init={model}", "run.threads=1", "world.frames=4", "world.size=16",
                                "grpo.iterations=3", "grpo.prompts_per_iter=2", "grpo.group_size=2",
                                "grpo.rollout.steps=3", "grpo.prompt_pool=4", "grpo.rollout.noise_pool=[2,8,8]",
                                "grpo.beta_kl=0.1", "grpo.lr=1e-3"])
    grpo.run(recipe, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "grpo")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[0]["kl_ref"] == 0.0 and rows[0]["clip_fraction"] == 0.0
    assert rows[2]["kl_ref"] > 0 and math.isfinite(rows[2]["kl_ref"])
