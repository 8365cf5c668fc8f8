"""The reward-noise experiment's corrupted reward (rewards/noisy.py)."""

import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.rewards.base import build_reward
from vidtune.rewards.noisy import in_noisy_slice


def test_slice_by_words_and_by_stable_fraction():
    assert in_noisy_slice("a red circle, the camera pans left", ("pans",), 0.0)
    assert not in_noisy_slice("a red circle moves left", ("pans",), 1.0)
    prompts = [f"prompt {i}" for i in range(2000)]
    share = sum(in_noisy_slice(p, (), 0.3) for p in prompts) / len(prompts)
    assert 0.25 < share < 0.35
    # the slice is fixed by CRC32, not by Python's per-process string hash: CRC32("prompt 3") = 941007916 and
    # CRC32("prompt 6") = 1216106659 are below 0.3 · 2³² ≈ 1.29e9, CRC32("prompt 2") = 1326552250 is not
    assert [in_noisy_slice(p, (), 0.3) for p in prompts[:8]] == [False, False, False, True, False, False, True, True]


def test_noise_only_on_the_slice_and_clamped_to_range():
    clean = build_reward("sharpness")
    noisy = build_reward("noisy", base="sharpness", std=5.0, words=["pans"], seed=1)
    videos = torch.rand(4, 3, 3, 16, 16)
    prompts = ["a red circle", "a red circle, the camera pans left", "a blue square", "a square, the camera pans up"]
    ref, out = clean(videos, prompts).scores, noisy(videos, prompts).scores
    assert torch.equal(out[[0, 2]], ref[[0, 2]])
    assert not torch.equal(out[[1, 3]], ref[[1, 3]])
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert [d["noisy"] for d in noisy(videos, prompts).details] == [False, True, False, True]


def test_reproducible_and_bad_arguments():
    v, p = torch.rand(2, 3, 3, 16, 16), ["a red circle"] * 2
    a = build_reward("noisy", base="sharpness", std=0.2, fraction=1.0, seed=3)(v, p).scores
    b = build_reward("noisy", base="sharpness", std=0.2, fraction=1.0, seed=3)(v, p).scores
    assert torch.equal(a, b)
    with pytest.raises(VidtuneError, match="std"):
        build_reward("noisy", std=-1.0)
