"""Stage I on the user's videos (sft.data.source=video_folder): ShapeWorld clips written as mp4 files with their
captions train the tiny model with ψ weights and physics flow targets estimated from the files; bad data stops the
stage before any training, naming the file."""

import json

import pytest
import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.errors import DataError
from vidtune.runlog import read_metrics
from vidtune.stages import sft
from vidtune.video.io import save_video
from vidtune.world.dataset import captions, examples


def _folder(tmp_path, n=4):
    world = load_recipe(None, ["world.frames=4", "world.size=16"]).world
    exs = examples(n, 0, world, "train")
    lines = []
    for i, (e, text) in enumerate(zip(exs, captions(exs, "instruction", 0, 0.0))):
        save_video(torch.from_numpy(e.render(world).video).permute(0, 3, 1, 2), tmp_path / f"c{i}.mp4", scale=1)
        lines.append(json.dumps({"video": f"c{i}.mp4", "caption": text}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path / "data.jsonl"


def _recipe(model_dir, manifest, *extra):
    return load_recipe(None, [f"model.init={model_dir}", "world.frames=4", "world.size=16", "run.threads=1",
                              "sft.steps=2", "sft.batch_size=2", "sft.log_every=1", "sft.data.source=video_folder",
                              f"sft.data.path={manifest}", *extra])


def test_sft_trains_on_a_video_folder_with_physics_targets(tmp_path, tiny_policy):
    model = tiny_policy.save_pretrained(tmp_path / "m")
    manifest = _folder(tmp_path / "data")
    out = sft.run(_recipe(model, manifest, "sft.physics.enabled=true"), tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "sft")
    assert [r["step"] for r in rows] == [1, 2] and all("flow_epe" in r for r in rows)
    assert rows[0]["weight_max"] >= rows[0]["weight_min"] > 0  # ψ weights from the files' estimated flow
    before, after = load_file(str(model / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_bad_clip_stops_the_stage_before_training(tmp_path, tiny_policy):
    model = tiny_policy.save_pretrained(tmp_path / "m")
    manifest = _folder(tmp_path / "data", n=2)
    (tmp_path / "data" / "c1.mp4").write_bytes(b"not a video")
    with pytest.raises(DataError, match="c1.mp4"):
        sft.run(_recipe(model, manifest), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "sft" / "checkpoint").exists()
