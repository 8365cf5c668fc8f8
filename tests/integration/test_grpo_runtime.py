"""The same GRPO run under `runtime: local` and `runtime: ray` (2 CPUs) logs identical metrics for the same seed
(wall times and runtime bookkeeping excluded)."""

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.runlog import read_metrics
from vidtune.stages import grpo


def _run(model_dir, out, runtime):
    r = load_recipe(None, [f"model.init={model_dir}", "world.frames=4", "world.size=16", "run.threads=1",
                           f"run.runtime={runtime}", "grpo.iterations=2", "grpo.prompts_per_iter=2",
                           "grpo.group_size=3", "grpo.rollout.steps=3", "grpo.prompt_pool=4",
                           "grpo.reward.heads=[{reward: verifier}, {reward: freeze, weight: 0.5}]"])
    grpo.run(r, out, progress=False)
    rows = read_metrics(out / "metrics.jsonl", "grpo")
    return [{k: v for k, v in row.items() if not k.startswith(("time", "iter_time", "runtime/"))} for row in rows]


@pytest.mark.slow
def test_local_and_ray_give_identical_metrics(tmp_path, tiny_policy):
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.05)
    model = tiny_policy.save_pretrained(tmp_path / "m")
    local = _run(model, tmp_path / "local", "local")
    ray_rows = _run(model, tmp_path / "ray", "ray")
    assert len(local) == 2 and local == ray_rows
