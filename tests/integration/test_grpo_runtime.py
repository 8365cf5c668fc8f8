"""The same GRPO run under `runtime: local` and `runtime: ray` (2 CPUs) logs identical metrics for the same seed
(wall times and runtime bookkeeping excluded)."""

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.models.tiny import load_tiny
from vidtune.runlog import read_metrics
from vidtune.stages import grpo


def _run(model_dir, out, runtime, *extra):
    r = load_recipe(None, [f"model.init={model_dir}", "world.frames=4", "world.size=16", "run.threads=1",
                           f"run.runtime={runtime}", "grpo.iterations=2", "grpo.prompts_per_iter=2",
                           "grpo.group_size=3", "grpo.rollout.steps=3", "grpo.prompt_pool=4",
                           "grpo.reward.heads=[{reward: verifier}, {reward: freeze, weight: 0.5}]", *extra])
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


@pytest.mark.slow
def test_rollout_workers_on_the_pool_match_local(tmp_path, tiny_policy):
    """Under Ray with 2 rollout workers (each rolls out one prompt group per iteration with the policy actor's
    weights, sent by object reference), the run logs the metrics of the in-process run to float rounding and ends
    at its weights."""
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.05)
    model = tiny_policy.save_pretrained(tmp_path / "m")
    local = _run(model, tmp_path / "local", "local")
    fleet = _run(model, tmp_path / "fleet", "ray", "run.rollout_workers=2")
    assert len(fleet) == 2 and local[0].keys() == fleet[0].keys()
    for a, b in zip(local, fleet):
        for k in a:
            assert b[k] == (pytest.approx(a[k], rel=1e-5, abs=1e-7) if isinstance(a[k], float) else a[k]), k
    w_local = load_tiny(tmp_path / "local" / "grpo" / "model").state_dict()
    w_fleet = load_tiny(tmp_path / "fleet" / "grpo" / "model").state_dict()
    for k in w_local:
        torch.testing.assert_close(w_fleet[k], w_local[k], rtol=1e-5, atol=1e-6)


def test_rollout_workers_need_ray_and_whole_groups(tmp_path):
    with pytest.raises(VidtuneError, match="run.rollout_workers=2 needs run.runtime=ray"):
        load_recipe(None, ["run.rollout_workers=2"])
    r = load_recipe(None, ["run.runtime=ray", "run.rollout_workers=3", "grpo.prompts_per_iter=4"])
    with pytest.raises(VidtuneError, match=r"grpo.prompts_per_iter=4 does not split .* run.rollout_workers=3"):
        grpo.run(r, tmp_path, progress=False)
