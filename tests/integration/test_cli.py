"""The command line: bad input ends with one clear message and a non-zero exit, no traceback."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

VIDTUNE = [sys.executable, "-m", "vidtune.cli"]


def run(*args, cwd=None):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(VIDTUNE + list(args), capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def _assert_clean_error(res, *needles):
    assert res.returncode != 0
    assert "Traceback" not in res.stderr + res.stdout
    for n in needles:
        assert n in res.stderr, res.stderr


def test_validate_and_print_config(tmp_path):
    good = tmp_path / "r.yaml"
    good.write_text("pretrain:\n  steps: 5\n")
    res = run("validate", str(good))
    assert res.returncode == 0 and "ok" in res.stdout
    res = run("print-config", str(good), "world.size=16")
    assert res.returncode == 0 and "size: 16" in res.stdout and "steps: 5" in res.stdout


def test_malformed_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("pretrain:\n  lr: fast\n  stpes: 3\n")
    _assert_clean_error(run("validate", str(bad)), "pretrain.lr", "did you mean 'steps'")


def test_unknown_prompt_word(tmp_path):
    _assert_clean_error(run("sample", "a red dragon", "--out", str(tmp_path / "x.mp4")), "'dragon'")


def test_missing_checkpoint_folder(tmp_path):
    _assert_clean_error(run("sample", "a red circle", "--model", str(tmp_path / "none"), "--out",
                            str(tmp_path / "x.mp4")), "checkpoint folder not found")


def test_output_path_that_cannot_be_written(tmp_path, tiny_model_dir):
    blocker = tmp_path / "file"
    blocker.write_text("")
    # a parent that is a regular file cannot hold the output
    _assert_clean_error(run("sample", "a red circle", "--model", str(tiny_model_dir), "--steps", "2", "--out",
                            str(blocker / "x.mp4")), "cannot create the folder")
    _assert_clean_error(run("sample", "a red circle", "--model", str(tiny_model_dir), "--out",
                            str(tmp_path / "x.avi")), ".mp4 or .gif")


def test_sample_writes_a_readable_video(tmp_path, tiny_model_dir):
    from vidtune.video.io import read_video

    out = tmp_path / "v.mp4"
    res = run("sample", "one small red circle falls", "--model", str(tiny_model_dir), "--steps", "2", "--out",
              str(out))
    assert res.returncode == 0, res.stderr
    v = read_video(out)
    assert v.shape == (4, 3, 64, 64)  # 4 frames of 16 px, upscaled 4x for viewing


@pytest.fixture
def tiny_model_dir(tmp_path, tiny_policy) -> Path:
    return tiny_policy.save_pretrained(tmp_path / "model")


def test_run_into_an_existing_run_directory_refuses(tmp_path):
    from vidtune.config import load_recipe
    from vidtune.pipeline import prepare_run_dir

    prepare_run_dir(load_recipe(None, [f"run.out_dir={tmp_path}", "run.name=x"]), tmp_path / "x", resume=False)
    res = run("run", f"run.out_dir={tmp_path}", "run.name=x")
    _assert_clean_error(res, "already exists", "--resume", "--overwrite")
    _assert_clean_error(run("run", "--resume", str(tmp_path / "x"), "--overwrite"), "do not pass")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_machine_without_it_fails_before_the_run_directory_exists(tmp_path):
    _assert_clean_error(run("run", f"run.out_dir={tmp_path}", "run.name=x", "run.device=cuda"),
                        "run.device=cuda: CUDA is not available")
    assert not (tmp_path / "x").exists()


def test_a_missing_prompts_file_is_one_clear_error(tmp_path):
    _assert_clean_error(run("grpo", f"run.out_dir={tmp_path}", f"grpo.prompts_file={tmp_path / 'p.txt'}"),
                        "grpo.prompts_file: prompts file", "not found")
