"""Human-ranked I2V pairs (ALGORITHMS.md §8.2, the optional ``image`` field): the conditioning frame of each pair
reaches the policy's conditioning in every DPO step, survives the stage's pair file, and a file that mixes pairs with
and without a frame is one clear error."""

import json

import cv2
import numpy as np
import pytest
import torch

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.models.tiny import TinyVideoPolicy
from vidtune.preference.pairs import read_pairs, save_clip
from vidtune.stages import dpo


def human_file(folder, n: int, with_image) -> str:
    g = torch.Generator().manual_seed(0)
    rows = []
    for i in range(n):
        save_clip(torch.rand(4, 3, 16, 16, generator=g), folder / f"{i}_w.npy")
        save_clip(torch.rand(4, 3, 16, 16, generator=g), folder / f"{i}_l.npy")
        row = {"prompt": "a red circle falls", "chosen": f"{i}_w.npy", "rejected": f"{i}_l.npy"}
        if with_image(i):
            cv2.imwrite(str(folder / f"{i}.png"), np.full((24, 20, 3), 30 * i, np.uint8))  # resized to 16×16
            row["image"] = f"{i}.png"
        rows.append(json.dumps(row))
    (folder / "h.jsonl").write_text("\n".join(rows) + "\n")
    return str(folder / "h.jsonl")


def recipe(human: str, *extra: str):
    return load_recipe(None, ["run.threads=1", "world.frames=4", "world.size=16", "dpo.pairs.on_policy=false",
                              "dpo.pairs.synthetic=[]", f"dpo.pairs.human={human}", "dpo.steps=2", "dpo.batch_size=2",
                              "dpo.min_pairs=2", *extra])


def test_pair_images_condition_every_dpo_step(tmp_path, tiny_policy, monkeypatch):
    seen = []
    real = TinyVideoPolicy.encode_prompts

    def spy(self, prompts, images=None, image_mask=None):
        seen.append(None if images is None else images.clone())
        return real(self, prompts, images, image_mask)

    monkeypatch.setattr(TinyVideoPolicy, "encode_prompts", spy)
    init = tiny_policy.save_pretrained(tmp_path / "init")
    dpo.run(recipe(human_file(tmp_path, 4, lambda i: True)), tmp_path / "run", init=str(init), progress=False)
    pairs, _ = read_pairs(tmp_path / "run" / "dpo" / "pairs.jsonl")
    grey = {round(float(p.image.mean()) * 255) for p in pairs}
    assert grey == {0, 30, 60, 90} and all(p.image.shape == (3, 16, 16) for p in pairs)
    batches = [s for s in seen if s is not None]
    assert len(batches) >= 2 and all(b.shape == (2, 3, 16, 16) for b in batches)
    assert {round(float(f.mean()) * 255) for b in batches for f in b} <= grey


def test_a_pair_file_mixing_t2v_and_i2v_pairs_is_one_error(tmp_path, tiny_policy):
    init = tiny_policy.save_pretrained(tmp_path / "init")
    with pytest.raises(VidtuneError, match="3 pairs have an 'image' .* and 1 do not"):
        dpo.run(recipe(human_file(tmp_path, 4, lambda i: i > 0)), tmp_path / "run", init=str(init), progress=False)
    with pytest.raises(VidtuneError, match="unset dpo.grad_frames"):
        dpo.run(recipe(human_file(tmp_path, 4, lambda i: True), "dpo.grad_frames=1"), tmp_path / "run2",
                init=str(init), progress=False)
