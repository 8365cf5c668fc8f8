"""Flow-based temporal and physics critics (rewards/temporal.py): hand-computed kinematics, limits of the VBench
formulas, detection of reversed / frozen clips, flagged NaN samples and named errors."""

import os

import cv2
import numpy as np
import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.preference.synthetic import temporal_negative
from vidtune.rewards.base import Reward, build_reward
from vidtune.rewards.temporal import TemporalCritic, bounce_atoms, fall_atoms
from vidtune.world.dataset import to_tensor
from vidtune.world.grammar import parse
from vidtune.world.render import InfeasibleScene, render

cv2.setNumThreads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))
NAMES = ("motion_smoothness", "dynamic_degree", "freeze", "flicker", "gravity")
UNIT = 32 / 256  # min(H, W)/256 px at 32 px


def clip(prompt: str, seed: int = 0) -> torch.Tensor:
    """The rendered clip of the first seed ≥ ``seed`` whose scene fits the canvas (deterministic)."""
    for s in range(seed, seed + 100):
        try:
            return to_tensor(render(parse(prompt), s).video)
        except InfeasibleScene:
            continue
    raise AssertionError(f"no feasible seed for {prompt!r}")


def texture(size: int = 32, shift: float = 0.0) -> np.ndarray:
    """A smooth periodic RGB texture [H, W, 3] in [0.2, 0.8], shifted right by ``shift`` px."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    g = 0.5 + 0.15 * np.sin(2 * np.pi * (xx - shift) / 16) + 0.15 * np.cos(2 * np.pi * yy / 11)
    return np.repeat(g[..., None], 3, -1).astype(np.float32)


def translating(speed: float, frames: int = 8) -> torch.Tensor:
    return torch.from_numpy(np.stack([texture(shift=speed * t) for t in range(frames)])).permute(0, 3, 1, 2)


def test_registry_builds_every_critic_with_unit_range():
    for name in NAMES:
        r = build_reward(name)
        assert isinstance(r, Reward) and r.name == name and r.range == (0.0, 1.0)


def test_fall_atoms_hand_computed():
    """v = (0.6, 1.2, 1.8, 2.4) px/frame (g = 0.6, from rest): mean 1.5 > 0.125 (down), LS slope 0.6 > 0.0625
    (accelerates). Reversed, v' = −(2.4, 1.8, 1.2, 0.6): mean −1.5 fails ``down``; its slope is still +0.6 (a body
    thrown up decelerates: acceleration is time-symmetric), so only ``down`` catches the reversal."""
    v = np.array([0.6, 1.2, 1.8, 2.4])
    assert fall_atoms(v, UNIT) == {"down": True, "accelerates": True}
    assert fall_atoms(-v[::-1], UNIT) == {"down": False, "accelerates": True}
    assert fall_atoms(np.full(4, 1.5), UNIT) == {"down": True, "accelerates": False}  # constant speed: no gravity


def test_bounce_energy_hand_computed():
    """Rendered bounce (g = 1.2): v = (0.6, 1.8, 2.44, −2.09, −0.89, 0.31, 1.51). First rise at j = 3, last descent
    before it j = 2; a = (1.2, 0.64, −4.53, 1.2, 1.2, 1.2), free-flight a = {1.2, 0.64, 1.2, 1.2, 1.2} → g = 1.2.
    y = (0, .6, 2.4, 4.84, 2.75, 1.86, 2.17, 3.68), ȳ = (.3, 1.5, 3.62, 3.795, 2.305, 2.015, 2.925);
    E = ½v² − gȳ: before (j < 2) −0.18, −0.18; after (j > 3) −2.37, −2.37, −2.37 → dissipative.
    Reversed, v' = −(1.51, 0.31, −0.89, −2.09, 2.44, 1.8, 0.6): E before 2.05, after 4.24 → energy gained → fails."""
    v = np.array([0.6, 1.8, 2.44, -2.09, -0.89, 0.31, 1.51])
    assert bounce_atoms(v, UNIT) == {"accelerates": True, "dissipative": True}
    assert bounce_atoms(-v[::-1], UNIT) == {"accelerates": True, "dissipative": False}
    assert bounce_atoms(np.array([0.6, 1.8, 3.0]), UNIT) == {"accelerates": True}  # no impact seen: not checked


@pytest.mark.parametrize("prompt,seed", [
    ("one small red circle falls", 0), ("one large blue square falls, camera pans left", 1),
    ("one small green triangle moves right, then falls", 2), ("one small yellow circle bounces", 3),
    ("two small cyan squares bounce, camera pans up", 4), ("magenta particles pour", 5),
    ("red particles pour, camera pans right", 6)])
def test_gravity_passes_rendered_physics_and_fails_its_reversal(prompt, seed):
    video = clip(prompt, seed)
    out = build_reward("gravity")(torch.stack([video, video.flip(0)]), [prompt, prompt])
    assert out.scores[0] == 1.0 and out.components["passed"][0] == 1.0, out.details[0]
    assert out.components["passed"][1] == 0.0 and out.scores[1] <= 0.5, out.details[1]


def test_gravity_not_applicable_and_missing_foreground():
    """A prompt without fall/bounce/pour scores ``not_applicable`` (NaN by default); a falling prompt over a clip
    without its colour has no foreground and fails every atom (score 0)."""
    mover, faller = "one small red circle moves right", "one small red circle falls"
    videos = torch.stack([clip(mover), clip("one small blue circle falls")])
    out = build_reward("gravity")(videos, [mover, faller])
    assert torch.isnan(out.scores[0]) and out.components["applicable"].tolist() == [0.0, 1.0]
    assert out.scores[1] == 0.0
    assert build_reward("gravity", not_applicable=1.0)(videos[:1], [mover]).scores.item() == 1.0


def test_freeze_detects_frozen_and_stalled_copies():
    """A moving clip has no duplicate pair (score 1). A one-frame hold makes one exact duplicate pair, s_f = 0, so
    with 7 pairs the score is at most 6/7 and ``frozen_pairs`` ≥ 1. A static clip scores 1 (nothing to freeze)."""
    video = clip("one large red square moves right", 1)
    g = torch.Generator().manual_seed(0)
    negs = [temporal_negative(video, k, g, min_diff=1e-6).video for k in ("freeze", "stall")]
    still = clip("one small red circle stays still")
    out = build_reward("freeze")(torch.stack([video, *negs, still]), ["x"] * 4)
    assert out.scores[0] == 1.0 and out.components["frozen_pairs"][0] == 0
    assert (out.scores[1:3] <= 6 / 7 + 1e-6).all() and (out.components["frozen_pairs"][1:3] >= 1).all()
    assert out.scores[3] == 1.0 and out.components["moving"][3] == 0.0


def test_dynamic_degree_threshold_and_limits():
    """thr = 6·max(1, 8/8)·32/256 = 0.75 px. A texture translating 2 px/frame exceeds it on all 7 pairs (score 1,
    dynamic); 0.25 px/frame exceeds it on none (score 0); a constant clip has zero flow (score 0)."""
    videos = torch.stack([translating(2.0), translating(0.25), translating(0.0)])
    out = build_reward("dynamic_degree")(videos, ["x"] * 3)
    assert out.scores.tolist() == [1.0, 0.0, 0.0]
    assert out.components["dynamic"].tolist() == [1.0, 0.0, 0.0]
    assert out.components["top5"][0] == pytest.approx(2.0, abs=0.3)


def test_smoothness_and_flicker_limits():
    """Constant clip: flow 0, interpolation and warp are exact → motion smoothness 1 and flicker 1. Frames
    alternating 0/1: any warp of a constant frame is that frame, so MAE = 255 and flicker = (255 − 255)/255 = 0."""
    const = translating(0.0)
    alt = torch.stack([torch.full((3, 32, 32), float(t % 2)) for t in range(8)])
    assert build_reward("motion_smoothness")(const[None], ["x"]).scores.item() == pytest.approx(1.0, abs=1e-6)
    flick = build_reward("flicker")(torch.stack([const, alt]), ["x", "x"]).scores
    assert flick[0] == pytest.approx(1.0, abs=1e-6) and flick[1] == pytest.approx(0.0, abs=1e-6)


def test_shuffle_lowers_motion_smoothness_and_brightness_flicker_lowers_flicker():
    video = translating(1.5)
    shuffled = video[torch.tensor([0, 3, 1, 6, 2, 5, 4, 7])]
    ms = build_reward("motion_smoothness")(torch.stack([video, shuffled]), ["x", "x"]).scores
    assert ms[0] > 0.99 and ms[0] - ms[1] > 0.01
    flickering = (video * torch.tensor([1.0, 0.8] * 4)[:, None, None, None]).clamp(0, 1)
    fl = build_reward("flicker")(torch.stack([video, flickering]), ["x", "x"]).scores
    assert fl[0] - fl[1] > 0.05


def test_nan_sample_is_flagged_and_bad_inputs_are_named():
    videos = torch.stack([clip("one small red circle falls"), clip("one small red circle falls", 1)])
    videos[1, 2, 0, 5, 5] = float("nan")
    for name in NAMES:
        out = build_reward(name)(videos, ["one small red circle falls"] * 2)
        assert torch.isfinite(out.scores[0]) and torch.isnan(out.scores[1]), name
        assert out.details[1]["invalid"] == "non-finite pixels"
    r = build_reward("freeze")
    with pytest.raises(VidtuneError, match="shape"):
        r(videos[0], ["x"])
    with pytest.raises(VidtuneError, match=r"\[0, 1\]"):
        r(videos[:1].nan_to_num() * 255, ["x"])
    with pytest.raises(VidtuneError, match="1 videos but 2 prompts"):
        r(videos[:1], ["x", "y"])
    with pytest.raises(VidtuneError, match="has no argument"):
        build_reward("flicker", mode="vbench")
    with pytest.raises(VidtuneError, match="need estimator dis/farneback.*got 'raft'"):
        TemporalCritic("freeze", estimator="raft")
    with pytest.raises(VidtuneError, match="ratio > 0.*'ratio': 0.0"):
        build_reward("freeze", ratio=0.0)
    with pytest.raises(VidtuneError, match="unknown word"):
        build_reward("gravity")(videos[:1].nan_to_num(), ["one small red blob falls"])
