"""grpo.prompts_file / grpo.images_dir / dpo.pairs.prompts_file on the tiny model: a good file drives the stage, and
every bad one stops it with one VidtuneError naming the key and the path, before any rollout."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from vidtune.config import load_recipe
from vidtune.errors import ConfigError, VidtuneError
from vidtune.runlog import read_metrics
from vidtune.stages import dpo, grpo

GOOD = ["one red circle moves left", "two blue squares fall"]


@pytest.fixture
def model_dir(tmp_path, tiny_policy) -> Path:
    return tiny_policy.save_pretrained(tmp_path / "model")


def tiny_recipe(model_dir: Path, *overrides: str):
    """One GRPO iteration (1 prompt × G=2, 2 SDE steps) of the 4-frame 16 px tiny model."""
    return load_recipe(None, [f"model.init={model_dir}", "run.threads=1", "run.tensorboard=false", "world.frames=4",
                              "world.size=16", "grpo.iterations=1", "grpo.prompts_per_iter=1", "grpo.group_size=2",
                              "grpo.rollout.steps=2", *overrides])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def frames_dir(folder: Path, n: int) -> Path:
    folder.mkdir()
    for k in range(n):
        cv2.imwrite(str(folder / f"{k}.png"), np.full((16, 16, 3), 40 * k, dtype=np.uint8))
    return folder


def test_tiny_i2v_grpo_runs_from_a_prompts_file_and_first_frames(model_dir, tmp_path):
    f = write(tmp_path / "p.txt", "# ShapeWorld words only for the tiny model\n" + "\n".join(GOOD) + "\n")
    recipe = tiny_recipe(model_dir, f"grpo.prompts_file={f}", f"grpo.images_dir={frames_dir(tmp_path / 'img', 2)}")
    grpo.run(recipe, tmp_path / "run", progress=False)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "grpo")] == [1]


def bad_source(case: str, tmp_path: Path) -> tuple[list[str], str]:
    """(recipe overrides, expected error pattern) of one bad prompt source."""
    good = write(tmp_path / "good.txt", "\n".join(GOOD))
    img = frames_dir(tmp_path / "img", 2)
    with_frames = [f"grpo.prompts_file={good}", f"grpo.images_dir={img}"]
    match case:
        case "missing":
            none = tmp_path / "none.txt"
            return [f"grpo.prompts_file={none}"], rf"grpo.prompts_file: prompts file {none} not found"
        case "comments only":
            f = write(tmp_path / "c.txt", "# nothing yet\n\n")
            return [f"grpo.prompts_file={f}"], rf"grpo.prompts_file: {f} holds no prompt"
        case "unknown word":
            f = write(tmp_path / "w.txt", "one red circle\n# a comment\na red dragon flies\n")
            return [f"grpo.prompts_file={f}"], rf"grpo.prompts_file \({f}\), prompt 1 \(from 0\) 'a red .*'dragon'"
        case "missing frame":
            (img / "1.png").unlink()
            return with_frames, rf"grpo.images_dir: {img} must hold .* 1 missing \(1.png\)"
        case "not an image":
            write(img / "0.png", "text")
            return with_frames, r"1 not images \(0.png\)"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["missing", "comments only", "unknown word", "missing frame", "not an image"])
def test_a_bad_grpo_prompt_source_is_one_clear_error_before_any_rollout(model_dir, tmp_path, case):
    keys, msg = bad_source(case, tmp_path)
    with pytest.raises(VidtuneError, match=msg):
        grpo.run(tiny_recipe(model_dir, *keys), tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "grpo" / "checkpoint").exists()


def test_images_dir_needs_a_prompts_file(tmp_path):
    with pytest.raises(ConfigError, match="grpo.images_dir needs grpo.prompts_file"):
        load_recipe(None, [f"grpo.images_dir={tmp_path}"])


def test_dpo_candidates_are_a_seeded_subset_of_the_file_in_file_order(tmp_path):
    lines = GOOD + ["three green triangles move right"]
    f = write(tmp_path / "p.txt", "\n".join(lines))
    two = dpo.candidate_prompts(load_recipe(None, [f"dpo.pairs.prompts_file={f}", "dpo.pairs.n_prompts=2"]))
    assert len(two) == 2 and two == [p for p in lines if p in two]
    assert dpo.candidate_prompts(load_recipe(None, [f"dpo.pairs.prompts_file={f}", "dpo.pairs.n_prompts=9"])) == lines


def test_dpo_prompts_the_shapeworld_judges_cannot_read_fail_before_loading_the_model(tmp_path):
    f = write(tmp_path / "p.txt", "one red circle\na lighthouse at dusk\n")
    recipe = load_recipe(None, [f"dpo.pairs.prompts_file={f}", f"model.init={tmp_path / 'no-model'}"])
    with pytest.raises(VidtuneError, match=rf"dpo.pairs.prompts_file \({f}; .*\), prompt 1 \(from 0\) 'a lighthouse"):
        dpo.run(recipe, tmp_path / "run", progress=False)


def test_i2v_static_frame_prior_is_the_reward_of_the_held_first_frame_and_is_tied_to_its_reward(model_dir, tmp_path):
    """§3 ``i2v_static_frame``: R⁰_p is the training reward of prompt p's first frame repeated for the clip length;
    the checkpoint stores it with its reward, and resuming under another reward is an error naming the field."""
    import torch

    from vidtune.data.prompts import load_first_frames
    from vidtune.rewards.compose import RewardSpec, build, compose
    from vidtune.runlog import load_checkpoint

    img = tmp_path / "img"
    img.mkdir()
    rng = np.random.default_rng(0)
    for k in range(2):  # textured frames of different sharpness, so the two priors differ
        cv2.imwrite(str(img / f"{k}.png"), cv2.GaussianBlur(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8),
                                                            (0, 0), 0.3 + 2 * k))
    f = write(tmp_path / "p.txt", "\n".join(GOOD))
    keys = [f"grpo.prompts_file={f}", f"grpo.images_dir={img}", "grpo.bpgo.enabled=true",
            "grpo.bpgo.prior=i2v_static_frame"]
    grpo.run(tiny_recipe(model_dir, *keys, "grpo.reward.heads=[{reward: sharpness}]"), tmp_path / "run",
             progress=False)
    saved = load_checkpoint(tmp_path / "run" / "grpo" / "checkpoint" / "state.pt")
    first = load_first_frames([img / "0.png", img / "1.png"], 16, 16)
    held = first[:, None].expand(-1, 4, -1, -1, -1)
    expected = compose(build([RewardSpec("sharpness")]), held, GOOD).scalar
    assert torch.allclose(saved["prior"], expected) and float(expected[0] - expected[1]) > 0.05
    assert saved["prior_record"]["prior"] == "i2v_static_frame"
    other = tiny_recipe(model_dir, *keys, "grpo.reward.heads=[{reward: noise}]", "grpo.iterations=2")
    with pytest.raises(VidtuneError, match=r"prior was built for another reward or sampler \(reward: stored"):
        grpo.run(other, tmp_path / "run", progress=False)


def test_the_static_frame_prior_needs_first_frames():
    with pytest.raises(ConfigError, match="i2v_static_frame .* needs grpo.images_dir"):
        load_recipe(None, ["grpo.bpgo.enabled=true", "grpo.bpgo.prior=i2v_static_frame",
                           "grpo.reward.heads=[{reward: sharpness}]"])
