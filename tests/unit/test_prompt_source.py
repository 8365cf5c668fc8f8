"""Prompt files and first-frame folders for GRPO / DPO (data/prompts.py): parsing, and one DataError naming the key
and the path for every bad input."""

import cv2
import numpy as np
import pytest
import torch

from vidtune.data.prompts import (check_prompts, first_frame_files, load_first_frames, parse_prompt_lines,
                                  read_prompts)
from vidtune.errors import DataError, VidtuneError


def test_blank_lines_and_comments_are_skipped():
    text = "# header\n\n  one red circle  \n\t\n  # indented comment\ntwo blue squares # not a comment\n"
    assert parse_prompt_lines(text) == ["one red circle", "two blue squares # not a comment"]


def test_read_prompts_errors_name_the_key_and_the_path(tmp_path):
    with pytest.raises(DataError, match=rf"grpo.prompts_file: prompts file {tmp_path / 'none.txt'} not found"):
        read_prompts(tmp_path / "none.txt", "grpo.prompts_file")
    with pytest.raises(DataError, match="it is a folder"):
        read_prompts(tmp_path, "grpo.prompts_file")
    empty = tmp_path / "empty.txt"
    empty.write_text("# only a comment\n\n   \n")
    with pytest.raises(DataError, match=rf"{empty} holds no prompt"):
        read_prompts(empty, "grpo.prompts_file")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(DataError, match="is not UTF-8 text"):
        read_prompts(binary, "dpo.pairs.prompts_file")


def test_first_frames_are_matched_by_index_and_resized_as_rgb(tmp_path):
    bgr = np.zeros((6, 10, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red in OpenCV's BGR order
    for k in range(2):
        cv2.imwrite(str(tmp_path / f"{k}.png"), bgr)
    files = first_frame_files(tmp_path, 2, "grpo.images_dir")
    assert [f.name for f in files] == ["0.png", "1.png"]
    frames = load_first_frames(files, 4, 8)
    assert frames.shape == (2, 3, 4, 8) and frames.dtype == torch.float32
    assert torch.equal(frames[:, 0], torch.ones(2, 4, 8)) and float(frames[:, 1:].abs().max()) == 0.0


def test_missing_and_unreadable_first_frames_are_listed_in_one_error(tmp_path):
    with pytest.raises(DataError, match="grpo.images_dir: first-frame folder .* not found"):
        first_frame_files(tmp_path / "none", 1, "grpo.images_dir")
    cv2.imwrite(str(tmp_path / "0.png"), np.zeros((4, 4, 3), dtype=np.uint8))
    (tmp_path / "2.png").write_text("not an image")
    with pytest.raises(DataError, match=r"for all 4 prompts: 2 missing \(1.png, 3.png\); 1 not images \(2.png\)"):
        first_frame_files(tmp_path, 4, "grpo.images_dir")


def test_check_prompts_names_where_and_which_prompt():
    def no_dragons(p):
        if "dragon" in p:
            raise VidtuneError("unknown word 'dragon'")

    check_prompts(["a red circle"], no_dragons, "f.txt")
    with pytest.raises(DataError, match=r"f.txt, prompt 1 \(from 0\) 'a dragon': unknown word 'dragon'"):
        check_prompts(["a red circle", "a dragon"], no_dragons, "f.txt")
