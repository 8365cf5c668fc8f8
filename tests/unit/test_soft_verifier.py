"""Soft verifier (rewards/soft_verifier.py): hand-computed grades, agreement with the pass/fail verifier on ground
truth, and a grade between pass and fail for a clip that is part of the way there."""

import dataclasses
import random

import numpy as np
import pytest
import torch

from vidtune.config import WorldConfig
from vidtune.rewards.base import build_reward
from vidtune.rewards.soft_verifier import (DIRECTIONS, camera_progress, segment_progress, share, signed_pan,
                                           signed_segment)
from vidtune.world.corrupt import CORRUPTIBLE, corrupt
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import DIRECTIONAL_MOTIONS, Scene, caption
from vidtune.world.render import CAMERA_SPEED, MOVE_SPEED, render


def test_grades_by_hand():
    """At 32 px (scale 1) a 4-transition 'right' segment should travel 4·1.5 = 6 px: 3 px right is half-way, 3 px
    left is 0, 9 px is capped at 1. 'still': |D|/6 = 1/3 is half-way down the ramp (1/6 → 1, 1/2 → 0). Camera
    'left': the background moves right at c = 1 px per transition."""
    n, v = 4, MOVE_SPEED * 4
    assert segment_progress("right", np.array([3.0, 0.0]), n, 1.0, False) == pytest.approx(0.5)
    assert segment_progress("right", np.array([-3.0, 0.0]), n, 1.0, False) == 0.0
    assert segment_progress("up", np.array([0.0, -9.0]), n, 1.0, False) == 1.0
    assert segment_progress("still", np.array([v / 3, 0.0]), n, 1.0, False) == pytest.approx(0.5)
    assert segment_progress("bounce", np.zeros(2), n, 1.0, True) == 1.0
    assert camera_progress("left", np.array([0.5 * CAMERA_SPEED, 0.0]), 1.0) == pytest.approx(0.5)
    assert camera_progress("static", np.array([0.4 * CAMERA_SPEED, 0.0]), 1.0) == pytest.approx(0.5)
    assert share({"circle": 3, "square": 1}, "circle") == 0.75 and share(None, "circle") == 0.0


@pytest.fixture(scope="module")
def gt():
    exs = examples(40, 11, WorldConfig(p_then=0.5, p_camera=0.5, p_pour=0.1), "any")
    return [(e.scene, to_tensor(e.render(WorldConfig()).video)) for e in exs]


def test_ground_truth_scores_high_and_corruptions_lower(gt):
    """On rendered clips the soft score is high (≥ 0.9 on average) and, as the verifier, lower for a prompt with one
    atom changed in ≥ 80 % of the cases (a soft grade may keep partial credit, so no 0.5 bound)."""
    soft = build_reward("soft_verifier")
    videos = torch.stack([v for _, v in gt])
    true = soft(videos, [caption(s) for s, _ in gt]).scores
    assert float(true.mean()) >= 0.9
    rng, lower = random.Random(0), []
    for (scene, video), t in zip(gt, true):
        for a in CORRUPTIBLE:
            c = corrupt(scene, a, rng)
            if c is not None:
                lower.append(float(soft(video[None], [caption(c)]).scores[0]) < float(t))
    assert len(lower) >= 40 and np.mean(lower) >= 0.8, np.mean(lower)


def test_partial_motion_gets_partial_credit():
    """A 'right' clip whose frames after the middle are frozen travels about half the distance: its motion grade
    lies strictly between the frozen clip's and the full clip's, where the pass/fail verifier can only say 0 or 1."""
    soft = build_reward("soft_verifier")
    scene = Scene(colour="red", shape="circle", size="large", count=1, motions=("right",), camera="static",
                  pour=False)
    video = to_tensor(render(scene, seed=3).video)
    half = video.clone()
    half[4:] = video[4]
    frozen = video[:1].expand_as(video).clone()
    grades = [float(soft(x[None], [caption(scene)]).components["motion"][0]) for x in (frozen, half, video)]
    assert grades[0] < grades[1] < grades[2], grades


def test_pan_progress_scores_the_asked_pan_above_its_opposite():
    """By hand: background flow +c (camera left) is progress 1 for 'left', −1 for 'right', clipped beyond. On a
    rendered 'camera pans left' clip the reward is near clean·1; the same clip played backwards pans right and scores
    near 0; a prompt without a pan scores NaN."""
    assert signed_pan("left", np.array([CAMERA_SPEED, 0.0]), 1.0) == pytest.approx(1.0)
    assert signed_pan("right", np.array([0.5 * CAMERA_SPEED, 0.3]), 1.0) == pytest.approx(-0.5)
    assert signed_pan("up", np.array([0.0, 3.0 * CAMERA_SPEED]), 1.0) == 1.0
    scene = Scene(colour="blue", shape="square", size="large", count=1, motions=("still",), camera="left",
                  pour=False)
    video = to_tensor(render(scene, seed=5, contrast=3.0).video)
    reward = build_reward("pan_progress")
    r = reward(torch.stack([video, video.flip(0)]), [caption(scene)] * 2)
    assert float(r.scores[0]) > 0.7 and float(r.scores[1]) < 0.3, r.scores
    assert r.components["camera"].tolist() == [1.0, 0.0]
    still = Scene(colour="blue", shape="square", size="large", count=1, motions=("still",), camera="static",
                  pour=False)
    assert torch.isnan(reward(video[None], [caption(still)]).scores).all()


def test_motion_progress_scores_the_asked_motion_above_its_opposite():
    """By hand: at 32 px a 4-transition 'right' segment should travel 6 px: +3 px is progress 0.5, −3 px −0.5, +9 px
    capped at 1. On a rendered 'moves right, then moves up' clip the reward is near clean·1, on a frozen one near 1/2,
    on a rendered 'left, then down' clip near 0; a prompt whose motion is not directional ('bounces') scores NaN."""
    assert signed_segment("right", np.array([3.0, 0.0]), 4, 1.0) == pytest.approx(0.5)
    assert signed_segment("right", np.array([-3.0, 0.0]), 4, 1.0) == pytest.approx(-0.5)
    assert signed_segment("down", np.array([0.0, 9.0]), 4, 1.0) == 1.0
    assert set(DIRECTIONS) == set(DIRECTIONAL_MOTIONS)  # the prompts benchmarks/i2v_prompts.py --directional writes
    scene = Scene(colour="red", shape="circle", size="large", count=1, motions=("right", "up"), camera="static",
                  pour=False)
    video = to_tensor(render(scene, seed=2).video)
    opposite = to_tensor(render(dataclasses.replace(scene, motions=("left", "down")), seed=2).video)
    frozen = video[:1].expand_as(video).clone()
    reward = build_reward("motion_progress")
    r = reward(torch.stack([video, frozen, opposite]), [caption(scene)] * 3)
    assert float(r.scores[0]) > 0.8 and 0.4 < float(r.scores[1]) < 0.6 and float(r.scores[2]) < 0.2, r.scores
    bounce = Scene(colour="red", shape="circle", size="large", count=1, motions=("bounce",), camera="static",
                   pour=False)
    assert torch.isnan(reward(video[None], [caption(bounce)]).scores).all()
