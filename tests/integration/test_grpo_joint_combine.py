"""Joint reward, ALGORITHMS.md §6 property 7 end to end: one on-policy GRPO iteration (one optimiser step at
θ = θ_old) with `combine: loss` and with `combine: advantage` moves the policy to the same weights."""

import pytest
import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.runlog import read_metrics
from vidtune.stages import grpo


def _run(model_dir, out, combine, mode):
    r = load_recipe(None, [f"model.init={model_dir}", "world.frames=4", "world.size=16", "run.threads=1",
                           "grpo.iterations=1", "grpo.prompts_per_iter=2", "grpo.group_size=3",
                           "grpo.rollout.steps=3", "grpo.prompt_pool=4", "grpo.lr=1e-3", "grpo.joint.enabled=true",
                           f"grpo.joint.combine={combine}", f"grpo.joint.mode={mode}",
                           "grpo.reward.heads=[{reward: sharpness}, {reward: motion_smoothness, weight: 0.5}]"])
    folder = grpo.run(r, out, progress=False)
    return load_file(str(folder / "model.safetensors")), read_metrics(out / "metrics.jsonl", "grpo")[0]


@pytest.mark.parametrize("mode", ["mgda_batch", "fixed"])  # fixed: both heads carry weight
def test_combine_loss_and_advantage_take_the_same_first_step(tmp_path, tiny_policy, mode):
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.05)
    model = tiny_policy.save_pretrained(tmp_path / "m")
    w_loss, m_loss = _run(model, tmp_path / "loss", "loss", mode)
    w_adv, m_adv = _run(model, tmp_path / "adv", "advantage", mode)
    start = load_file(str(model / "model.safetensors"))
    assert any(not torch.equal(start[k], w_loss[k]) for k in start)  # the step did something
    for k in w_loss:
        torch.testing.assert_close(w_loss[k], w_adv[k], rtol=1e-4, atol=1e-6)
    assert m_loss["joint/c_0"] == m_adv["joint/c_0"]
