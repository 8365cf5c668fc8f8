"""Perceptual gates (sharpness, noise, saturation) and the safety block-list gate: hand-computed statistics, the
score ↔ pass-predicate map, clean clips pass and degraded ones fail, fail-closed behaviour and named errors."""

import os

import cv2
import numpy as np
import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.rewards.base import build_reward
from vidtune.rewards.perceptual import clipped_fraction, laplacian_variance, noise_sigma
from vidtune.world.dataset import to_tensor
from vidtune.world.grammar import parse
from vidtune.world.render import render

cv2.setNumThreads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))
RED, BLUE = "one small red circle moves right", "one large blue square stays still"


@pytest.fixture(scope="module")
def clean():
    return torch.stack([to_tensor(render(parse(p), s).video) for p, s in ((RED, 0), (BLUE, 1))])


def test_laplacian_variance_of_one_bright_pixel():
    """5×5 grey frame, one interior pixel at 255: ∇² is −4·255 = −1020 there and +255 at its 4 neighbours, 0
    elsewhere, so the mean is 0 and Var = (1020² + 4·255²)/25 = 1300500/25 = 52020."""
    frame = np.zeros((1, 5, 5, 3), np.float32)
    frame[0, 2, 2] = 1.0
    assert laplacian_variance(frame) == pytest.approx(52020.0, rel=1e-4)


def test_noise_sigma_calibrated_and_blind_to_planes():
    """For white Gaussian noise, I ∗ N ~ N(0, 36σ²) (ΣN² = 1+4+1+4+16+4+1+4+1 = 36), so median|I ∗ N|/(6·0.6745)
    → σ. N sums to 0 with zero first moments, so a constant or a linear ramp gives exactly 0."""
    rng = np.random.default_rng(0)
    noisy = np.clip(0.5 + rng.normal(0, 0.05, (4, 64, 64, 3)), 0, 1).astype(np.float32)
    assert noise_sigma(noisy) == pytest.approx(0.05, rel=0.05)
    yy, xx = np.mgrid[0:16, 0:16].astype(np.float32)
    ramp = np.repeat(((0.2 + 0.02 * xx + 0.01 * yy)[None, ..., None]), 3, -1)
    assert noise_sigma(ramp) == pytest.approx(0.0, abs=1e-6)


def test_clipped_fraction_hand_computed():
    """Values (0, 0.003, 0.5, 0.9999): 0 ≤ 1/255, 0.003 ≤ 1/255 = 0.00392, 0.9999 ≥ 254/255 → 3/4 clipped."""
    assert clipped_fraction(np.array([0.0, 0.003, 0.5, 0.9999])) == 0.75


def test_score_is_one_half_at_the_threshold_and_decides_the_gate():
    """A clip with a quarter of its values at 1.0 (q = 0.25): max_fraction 0.25 → score 1/(1 + 1) = 0.5, passes;
    max_fraction 0.2 → 1/(1 + 1.25) = 0.444, fails."""
    video = torch.full((1, 4, 3, 8, 8), 0.5)
    video[:, :, :, :2] = 1.0
    at = build_reward("saturation", max_fraction=0.25)(video, ["x"])
    below = build_reward("saturation", max_fraction=0.2)(video, ["x"])
    assert at.scores.item() == pytest.approx(0.5) and not at.gate_failed.item()
    assert below.scores.item() == pytest.approx(1 / 2.25) and below.gate_failed.item()


def test_clean_clips_pass_and_degraded_clips_fail(clean):
    g = torch.Generator().manual_seed(0)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=g)).clamp(0, 1)
    blank = clean.mean(dim=(1, 3, 4), keepdim=True).expand_as(clean).contiguous()
    blown = ((clean - 0.5) * 4 + 0.5).clamp(0, 1)
    for name in ("sharpness", "noise", "saturation"):
        out = build_reward(name)(clean, [RED, BLUE])
        assert not out.gate_failed.any() and (out.scores > 0.8).all(), (name, out.scores)
    assert build_reward("noise")(noisy, [RED, BLUE]).gate_failed.all()
    assert build_reward("sharpness")(blank, [RED, BLUE]).gate_failed.all()
    assert build_reward("saturation")(blown, [RED, BLUE]).gate_failed.all()


def test_perceptual_nan_sample_fails_and_bad_thresholds_are_named(clean):
    videos = clean.clone()
    videos[1, 0, 0, 0, 0] = float("inf")
    out = build_reward("noise")(videos, [RED, BLUE])
    assert out.gate_failed.tolist() == [False, True] and torch.isnan(out.scores[1])
    with pytest.raises(VidtuneError, match="noise: threshold must be a positive number, got -0.1"):
        build_reward("noise", max_sigma=-0.1)
    with pytest.raises(VidtuneError, match="has no argument"):
        build_reward("sharpness", threshold=3.0)


def test_safety_block_lists(clean):
    """Prompt colour, prompt word, parsed shape and palette colour seen in the video each block; others pass."""
    prompts = [RED, BLUE]
    assert not build_reward("safety")(clean, ["a cat on a skateboard", "x"]).gate_failed.any()  # empty lists
    red = build_reward("safety", colours=["red"])(clean, prompts)
    assert red.scores.tolist() == [0.0, 1.0] and red.gate_failed.tolist() == [True, False]
    assert red.details[0]["blocked"][0] == "prompt colour 'red'"
    assert "video colour 'red'" in red.details[0]["blocked"][1]
    lying = build_reward("safety", colours=["red"])(clean[:1], ["one small blue circle moves right"])
    assert lying.gate_failed.item() and "video colour 'red'" in lying.details[0]["blocked"][0]
    prompt_only = build_reward("safety", colours=["red"], video_colours=[])(clean[:1], [BLUE])
    assert not prompt_only.gate_failed.item()
    assert build_reward("safety", shapes=["square"])(clean, prompts).gate_failed.tolist() == [False, True]
    assert build_reward("safety", words=["still"])(clean, prompts).gate_failed.tolist() == [False, True]


def test_safety_fails_closed_and_names_bad_config(clean):
    """An unparseable prompt cannot be checked for colours → blocked; a non-finite sample → blocked."""
    videos = clean.clone()
    videos[1, 0, 0, 0, 0] = float("nan")
    out = build_reward("safety", colours=["green"])(videos, ["a cat on a skateboard", BLUE])
    assert out.gate_failed.tolist() == [True, True]
    assert out.details[0]["blocked"][0].startswith("error: VidtuneError: unknown word")
    with pytest.raises(VidtuneError, match="unknown colour 'rde' in colours \\(did you mean 'red'\\?\\)"):
        build_reward("safety", colours=["rde"])
    with pytest.raises(VidtuneError, match="must be a list"):
        build_reward("safety", words="cat")
    with pytest.raises(VidtuneError, match="min_share"):
        build_reward("safety", min_share=0.0)
