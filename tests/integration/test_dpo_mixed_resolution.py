"""`dpo.grad_frames` / `dpo.grad_downsample`: Stage III trains on reduced clips of full-size pairs."""

import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
from vidtune.runlog import read_metrics
from vidtune.stages import dpo


def test_dpo_on_half_length_half_resolution_clips(tmp_path):
    torch.manual_seed(0)
    m = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 4, 4), hidden=32, depth=1, heads=2, text_layers=1))
    with torch.no_grad():
        m.net.final.weight.normal_(std=0.05)
    init = m.save_pretrained(tmp_path / "init")
    recipe = load_recipe(None, [
        "run.threads=1", "world.frames=4", "world.size=16", "sampling.steps=2",
        "dpo.steps=2", "dpo.batch_size=2", "dpo.lr=1e-3", "dpo.log_every=1", "dpo.grad_frames=2",
        "dpo.grad_downsample=2", "dpo.pairs.n_prompts=2", "dpo.pairs.n_candidates=2", "dpo.pairs.n_synthetic_clips=2",
        "dpo.pairs.good_min=0.0", "dpo.pairs.synthetic=[reverse,shuffle]",
    ])
    out = dpo.run(recipe, tmp_path / "run", init=str(init), progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "dpo")
    assert [r["step"] for r in rows] == [1, 2] and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    before, after = load_file(str(init / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # the exported model still generates full-size clips
    assert after["net.pos_s"].shape == before["net.pos_s"].shape
