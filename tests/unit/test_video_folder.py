"""User video datasets (data/video_folder.py): manifest and folder layouts, validation, flow, config and CLI."""

import json
import logging
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vidtune.cli import app
from vidtune.config import load_recipe
from vidtune.data.video_folder import farneback_flows, load_sft_videos, load_video_dataset, sample_indices
from vidtune.errors import ConfigError, DataError

H, W = 32, 48  # source size (H.264 needs even sides)


def write_mp4(path, n_frames: int, levels=None):
    """A tiny H.264 clip: frame i is a flat grey ``levels[i]`` with a bright square moving right."""
    levels = levels if levels is not None else [100] * n_frames
    frames = np.empty((n_frames, H, W, 3), np.uint8)
    for i, level in enumerate(levels):
        frames[i] = level
        frames[i, 8:16, 4 + 2 * i : 12 + 2 * i] = 250
    iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=8, out_pixel_format="yuv420p")
    return path


def write_corrupt(path, good):
    """The first half of a valid mp4 (the index at its end is lost): undecodable."""
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def manifest(tmp_path):
    """A manifest with one good clip (absolute path) and one of each kind of bad line."""
    good = write_mp4(tmp_path / "good.mp4", 6)
    (tmp_path / "clips").mkdir()
    write_mp4(tmp_path / "clips" / "nocap.mp4", 6)
    write_corrupt(tmp_path / "corrupt.mp4", good)
    write_mp4(tmp_path / "short.mp4", 2)
    rows = [
        json.dumps({"video": str(good), "caption": "a bright square moves right"}),
        json.dumps({"video": "corrupt.mp4", "caption": "broken"}),
        "",
        json.dumps({"video": "short.mp4", "caption": "too short"}),
        json.dumps({"video": "missing.mp4", "caption": "gone"}),
        '{"video": "good.mp4", "caption": ',
        json.dumps({"video": "clips/nocap.mp4", "caption": "  "}),
        json.dumps({"caption": "no video"}),
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


BAD_NAMES = ["data.jsonl:2 (corrupt.mp4)", "data.jsonl:4 (short.mp4)", "data.jsonl:5 (missing.mp4)",
             "data.jsonl:6", "data.jsonl:7 (clips/nocap.mp4)", "data.jsonl:8"]


def test_error_names_every_bad_clip_once(manifest):
    with pytest.raises(DataError) as exc:
        load_video_dataset(manifest, frames=4, height=16, width=24)
    msg = str(exc.value)
    assert msg.startswith("6 bad clip(s)")
    for name in BAD_NAMES:
        assert name in msg
    assert "cannot decode" in msg and "has 2 frame(s), needs at least 4" in msg and "file not found" in msg
    assert "not valid JSON" in msg and 'empty "caption"' in msg and 'missing "video"' in msg
    assert "data.jsonl:1" not in msg  # the good clip


def test_skip_keeps_the_good_clips_and_warns_per_bad_one(manifest, caplog):
    with caplog.at_level(logging.WARNING, logger="vidtune.data"):
        ds = load_video_dataset(manifest, frames=4, height=16, width=24, on_bad="skip")
    assert ds.videos.shape == (1, 3, 4, 16, 24) and ds.videos.dtype == torch.uint8
    assert ds.captions == ["a bright square moves right"]
    assert ds.paths[0].name == "good.mp4"
    assert [b.where for b in ds.skipped] == BAD_NAMES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6 and all(w.startswith("skipping ") for w in warnings)


def test_empty_dataset_is_an_error(tmp_path, manifest):
    bad_only = tmp_path / "bad.jsonl"
    bad_only.write_text("\n".join(manifest.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DataError, match=r"no usable clips \(6 bad clip\(s\) skipped\)"):
        load_video_dataset(bad_only, frames=4, height=16, width=24, on_bad="skip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable clips"):
        load_video_dataset(tmp_path / "empty", frames=4, height=16, width=24)
    with pytest.raises(DataError, match="dataset not found"):
        load_video_dataset(tmp_path / "nowhere", frames=4, height=16, width=24)
    with pytest.raises(DataError, match="must be a .jsonl manifest or a folder"):
        load_video_dataset(tmp_path / "good.mp4", frames=4, height=16, width=24)


def test_frames_are_sampled_uniformly_and_resized(tmp_path):
    levels = [10 + 20 * i for i in range(10)]
    write_mp4(tmp_path / "ramp.mp4", 10, levels)
    (tmp_path / "ramp.txt").write_text("a ramp\n")
    ds = load_video_dataset(tmp_path, frames=4, height=8, width=12)
    assert ds.videos.shape == (1, 3, 4, 8, 12) and ds.videos.dtype == torch.uint8
    assert ds.captions == ["a ramp"]
    background = ds.videos[0, :, :, -2:, :].float().mean(dim=(0, 2, 3))  # bottom rows: no square
    expected = torch.tensor([levels[i] for i in (0, 3, 6, 9)], dtype=torch.float32)
    assert torch.allclose(background, expected, atol=4), background


def test_sample_indices_are_uniform_distinct_and_span_the_clip():
    assert sample_indices(10, 4).tolist() == [0, 3, 6, 9]
    assert sample_indices(4, 4).tolist() == [0, 1, 2, 3]
    assert sample_indices(7, 1).tolist() == [0]
    idx = sample_indices(9, 8)
    assert len(set(idx.tolist())) == 8 and idx[0] == 0 and idx[-1] == 8


def test_folder_with_txt_captions(tmp_path):
    for name in "abcd":
        write_mp4(tmp_path / f"{name}.mp4", 5)
    (tmp_path / "a.txt").write_text("first clip")
    (tmp_path / "b.txt").write_text("second clip\n")
    (tmp_path / "d.txt").write_text("\n")
    (tmp_path / "notes.md").write_text("not a video")
    with pytest.raises(DataError) as exc:
        load_video_dataset(tmp_path, frames=4, height=16, width=16)
    msg = str(exc.value)
    assert "c.mp4: no caption file c.txt" in msg and "d.mp4: empty caption file d.txt" in msg
    assert "a.mp4" not in msg and "notes.md" not in msg
    ds = load_video_dataset(tmp_path, frames=4, height=16, width=16, on_bad="skip")
    assert ds.captions == ["first clip", "second clip"] and ds.videos.shape == (2, 3, 4, 16, 16)


def test_load_sft_videos_from_the_recipe(tmp_path):
    write_mp4(tmp_path / "a.mp4", 8)
    (tmp_path / "a.txt").write_text("a square moves right")
    r = load_recipe(None, ["sft.data.source=video_folder", f"sft.data.path={tmp_path}"])
    videos, captions = load_sft_videos(r.sft.data, 8, 16, 16)
    assert videos.shape == (1, 3, 8, 16, 16) and videos.dtype == torch.uint8 and captions == ["a square moves right"]
    with pytest.raises(ValueError, match="source=video_folder"):
        load_sft_videos(load_recipe().sft.data, 8, 16, 16)


def test_config_data_section_is_validated():
    assert load_recipe().sft.data.source == "shapeworld"
    r = load_recipe(None, ["sft.data.source=video_folder", "sft.data.path=data.jsonl", "sft.data.on_bad=skip"])
    assert (r.sft.data.path, r.sft.data.on_bad) == ("data.jsonl", "skip")
    with pytest.raises(ConfigError, match="sft.data.source=video_folder needs sft.data.path"):
        load_recipe(None, ["sft.data.source=video_folder"])
    with pytest.raises(ConfigError, match="sft.data.path is for sft.data.source=video_folder"):
        load_recipe(None, ["sft.data.path=x.jsonl"])
    with pytest.raises(ConfigError, match="'sft.data.on_bad'"):
        load_recipe(None, ["sft.data.on_bad=ignore"])
    with pytest.raises(ConfigError, match=r"unknown key 'sft.data.paht' \(did you mean 'path'\?\)"):
        load_recipe(None, ["sft.data.paht=x"])


def test_farneback_flow_agrees_with_the_renderer_on_object_pixels():
    from vidtune.world.grammar import Scene
    from vidtune.world.render import render

    clip = render(Scene("red", "square", "large", 1, ("right",), "static"), seed=3, frames=8, size=32)
    video = torch.from_numpy((clip.video * 255 + 0.5).astype(np.uint8)).permute(3, 0, 1, 2)[None]  # [1,3,F,H,W]
    flow = farneback_flows(video)
    assert flow.shape == (1, 2, 7, 32, 32) and flow.dtype == torch.float32
    est = flow[0].permute(1, 0, 2, 3).numpy()  # [F-1, 2, H, W], the renderer's layout
    obj = clip.masks[:-1, 0]
    epe = np.linalg.norm(est - clip.flow, axis=1)[obj].mean()
    epe_zero = np.linalg.norm(clip.flow, axis=1)[obj].mean()
    assert epe < 0.6 * epe_zero, (epe, epe_zero)
    assert est[:, 0][obj].mean() > 0.5 and abs(est[:, 1][obj].mean()) < 0.5  # moves right: +dx, no dy


def test_check_data_cli_fails_with_one_message(manifest):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "vidtune.cli", "check-data", str(manifest), "--frames", "4",
                          "--size", "16"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr + res.stdout
    assert res.stderr.count("error:") == 1
    for name in ["corrupt.mp4", "short.mp4", "missing.mp4", "data.jsonl:6", "nocap.mp4", "data.jsonl:8"]:
        assert name in res.stderr, res.stderr


def test_check_data_cli_summarises_with_skip(manifest):
    res = CliRunner().invoke(app, ["check-data", str(manifest), "--frames", "4", "--size", "16", "--on-bad", "skip"])
    assert res.exit_code == 0, res.output
    assert "usable clips" in res.output and "skipped (bad)" in res.output
    assert "corrupt.mp4" in res.output and "missing.mp4" in res.output
