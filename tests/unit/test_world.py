"""ShapeWorld: grammar round trip, deterministic rendering, exact optical flow, splits."""

import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vidtune.config import WorldConfig
from vidtune.errors import VidtuneError
from vidtune.world.dataset import captions, examples, with_pan_contrast
from vidtune.world.corrupt import corrupt
from vidtune.world.grammar import HELDOUT_COMPOSITIONS, Scene, caption, loose, parse, random_scene, vocabulary
from vidtune.world.render import PALETTE, InfeasibleScene, render


def test_round_trip_instruction_and_loose_captions():
    """parse(caption(s)) == s for 2000 random full scenes and their loose views."""
    rng = random.Random(0)
    for _ in range(2000):
        s = random_scene(rng, heldout=None, p_pour=0.1)
        assert parse(caption(s)) == s, caption(s)
        lo = loose(s, with_motion=rng.random() < 0.5, with_camera=rng.random() < 0.5, with_order=rng.random() < 0.5)
        assert parse(caption(lo)) == lo, caption(lo)


def test_parse_examples_and_errors():
    s = parse("two small red circles move right, then fall, camera pans left")
    assert s == Scene("red", "circle", "small", 2, ("right", "fall"), "left")
    assert parse("a red circle falls") == Scene("red", "circle", None, 1, ("fall",), None, loose=True)
    assert parse("red circles fall") == Scene("red", "circle", None, None, ("fall",), None, loose=True)
    # a loose caption may name the pan; "a" keeps it loose, "one" makes it an instruction
    assert parse("a red circle, camera pans up") == Scene("red", "circle", None, 1, None, "up", loose=True)
    assert caption(parse("a red circle, camera pans up")) == "a red circle, camera pans up"
    assert parse("one red circle, camera pans up") == Scene("red", "circle", None, 1, None, "up")
    with pytest.raises(VidtuneError, match="does not agree"):
        parse("red circle falls")
    with pytest.raises(VidtuneError, match="'dragon'"):
        parse("a red dragon")
    with pytest.raises(VidtuneError, match="did you mean 'circle'"):
        parse("a red circel")
    with pytest.raises(VidtuneError, match="does not agree"):
        parse("two red circle")


def test_vocabulary_covers_every_generated_caption():
    vocab = set(vocabulary())
    rng = random.Random(1)
    for _ in range(500):
        words = caption(random_scene(rng, heldout=None, p_pour=0.1)).replace(",", " , ").split()
        assert set(words) <= vocab


def test_render_is_deterministic_and_in_range():
    s = parse("two small blue squares move left, camera pans up")
    a, b = render(s, 7), render(s, 7)
    assert np.array_equal(a.video, b.video) and np.array_equal(a.flow, b.flow)
    assert a.video.shape == (8, 32, 32, 3) and a.video.min() >= 0 and a.video.max() <= 1
    assert a.masks.shape == (8, 2, 32, 32) and a.flow.shape == (7, 2, 32, 32)
    assert not np.array_equal(render(s, 8).video, a.video)


def _warp_error(clip) -> float:
    """Backward-warp frame t+1 with the ground-truth flow of frame t: I_t(p) ≈ I_{t+1}(p + F_t(p)).
    Error on non-occluded pixels: target inside the canvas, same owner (object k or background) at both ends, and
    away from anti-aliased object edges (coverage strictly 0 or 1 there)."""
    video = torch.from_numpy(clip.video).permute(0, 3, 1, 2)
    t, _, h, w = video.shape
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    owner = np.full((t, h, w), -1)
    for k in range(clip.masks.shape[1]):
        owner[clip.masks[:, k]] = k
    errs = []
    for i in range(t - 1):
        fl = torch.from_numpy(clip.flow[i])
        tx, ty = xx + fl[0], yy + fl[1]
        grid = torch.stack([tx / (w - 1) * 2 - 1, ty / (h - 1) * 2 - 1], -1)[None]
        warped = F.grid_sample(video[i + 1][None], grid, align_corners=True, mode="bilinear")[0]
        tgt_owner = owner[i + 1][np.clip(ty.round().long().numpy(), 0, h - 1), np.clip(tx.round().long().numpy(),
                                                                                       0, w - 1)]
        inside = ((tx >= 0) & (tx <= w - 1) & (ty >= 0) & (ty <= h - 1)).numpy()
        obj = torch.from_numpy(owner[i] >= 0).float()[None, None]
        # a 5x5 neighbourhood that mixes object and background pixels: anti-aliased edges live there
        near_edge = (F.max_pool2d(obj, 5, 1, 2) != -F.max_pool2d(-obj, 5, 1, 2))[0, 0]
        valid = inside & (tgt_owner == owner[i]) & ~near_edge.numpy()
        err = (warped - video[i]).abs().mean(0).numpy()
        errs.append(err[valid])
    return float(np.concatenate(errs).mean())


@pytest.mark.parametrize("prompt", [
    "one large red circle moves right, camera pans left",
    "two small green squares fall, camera pans down",
    "one large yellow triangle bounces",
    "cyan particles pour, camera pans right",
    "three small magenta circles stay still, camera pans up",
])
def test_ground_truth_flow_warps_frame_onto_next(prompt):
    """Mean absolute warp error on non-occluded pixels < 0.01 (pixel values in [0, 1])."""
    clip = render(parse(prompt), 3)
    assert _warp_error(clip) < 0.01


def test_flow_is_not_trivially_zero():
    """Zero flow must fail the warp test for a moving scene, so the test above can fail."""
    clip = render(parse("one large red circle moves right, camera pans left"), 3)
    wrong = clip.__class__(clip.scene, clip.video, clip.masks, clip.tracks, np.zeros_like(clip.flow), clip.camera)
    assert _warp_error(wrong) > 0.01


def test_physics_ground_truth():
    """Falling bodies accelerate downwards; a bounce reverses vertical velocity once."""
    fall = render(parse("one small red circle falls"), 1).tracks[:, 0, 1]
    vy = np.diff(fall)
    assert (vy > 0).all() and (np.diff(vy) > 0).all()
    bounce = render(parse("one small red circle bounces"), 1).tracks[:, 0, 1]
    signs = np.sign(np.diff(bounce))
    assert signs[0] > 0 and (signs < 0).any()


def test_heldout_split_never_in_train():
    world = WorldConfig()
    train = examples(300, 0, world, "train")
    held = examples(50, 0, world, "heldout")
    assert not any((e.scene.colour, e.scene.shape) in HELDOUT_COMPOSITIONS for e in train)
    assert all((e.scene.colour, e.scene.shape) in HELDOUT_COMPOSITIONS for e in held)
    caps = captions(train[:50], "loose", 0, 0.5)
    for e, c in zip(train[:50], caps):  # loose: one object or several, the exact count and the camera open
        if "particles" not in c:
            assert parse(c).count == (1 if e.scene.count == 1 else None) and parse(c).camera is None, c


def test_loose_captions_name_the_pan_and_the_order_at_the_requested_rate_without_changing_the_rest():
    """p_camera = 1 names every pan (never a static camera) and leaves the motion draws of p_camera = 0 as they were;
    p_order = 1 names the whole motion sequence wherever the first motion is named; pans get the requested
    background contrast, static clips keep the world's."""
    exs = [e for e in examples(400, 1, WorldConfig()) if not e.scene.pour]  # a pour caption is always whole
    plain, named = captions(exs, "loose", 0, 0.5), captions(exs, "loose", 0, 0.5, p_camera=1.0)
    pans = [e.scene.camera not in (None, "static") for e in exs]  # spelled out: Scene.pans is under test here
    assert 60 < sum(pans) < 140  # p_camera 0.25 of the world
    for e, p, n, pan in zip(exs, plain, named, pans):
        assert n == (p + f", camera pans {e.scene.camera}" if pan else p)
        assert parse(n).camera == (e.scene.camera if pan else None)
    ordered = captions(exs, "loose", 0, 0.5, p_order=1.0)  # the whole sequence wherever the first motion is named
    for e, p, o in zip(exs, plain, ordered):
        named_motion = parse(p).motions is not None
        assert parse(o).motions == (e.scene.motions if named_motion else None), (p, o)
    assert any(", then " in o for o in ordered) and not any(", then " in p for p in plain)
    half = captions(exs, "loose", 0, 0.5, p_camera=0.5)
    assert 0.3 < sum("camera pans" in c for c in half) / sum(pans) < 0.7
    contrasted = with_pan_contrast(exs, 3.0)
    assert [e.contrast for e in contrasted] == [3.0 if pan else 1.0 for pan in pans]
    assert [e.scene for e in contrasted] == [e.scene for e in exs]


def test_infeasible_scene_raises_named_error():
    with pytest.raises(InfeasibleScene):
        for seed in range(200):  # three large objects moving with the camera do not always fit 16 px
            render(parse("three large red squares move right, camera pans left"), seed, size=16)


def test_background_contrast_scales_only_the_texture():
    """contrast = 2 doubles every background pixel's deviation from the texture's tint (the same random draws; the
    texture stays well inside [0, 1]) and leaves objects, masks and flow unchanged."""
    scene = parse("one large red circle stays still, camera pans left")
    a, b = render(scene, 3), render(scene, 3, contrast=2.0)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.flow, b.flow)
    bg = ~a.masks.any(1)  # [T, H, W]
    ref = render(scene, 3, contrast=1e-9).video  # the tint alone
    da, db = (a.video - ref)[bg], (b.video - ref)[bg]
    assert np.abs(da).max() > 0.05 and np.allclose(db, 2 * da, atol=1e-5)
    inside = np.all(np.isclose(a.video, np.array(PALETTE["red"], np.float32)), -1)  # fully covered pixels
    assert inside.sum() > 50 and np.array_equal(a.video[inside], b.video[inside])


def test_camera_corruption_of_a_loose_scene_names_another_pan():
    """A loose caption never states a static camera, so the camera negative of "a red circle, camera pans left" is
    another pan (a static one would caption as "a red circle", which is true of the clip)."""
    scene = parse("a red circle, camera pans left")
    rng = random.Random(0)
    got = {corrupt(scene, "camera", rng).camera for _ in range(200)}
    assert got == {"right", "up", "down"}
    assert "static" in {corrupt(parse("one red circle, camera pans left"), "camera", rng).camera for _ in range(200)}


def test_motion_prompts_with_frames_pairs_each_caption_with_its_first_frame():
    from vidtune.world.dataset import motion_prompts_with_frames

    prompts, frames = motion_prompts_with_frames(5, 3, WorldConfig())
    assert len(prompts) == 5 and frames.shape == (5, 3, 32, 32)
    assert all(parse(p).motions and not parse(p).is_heldout for p in prompts)
    from vidtune.world.render import PALETTE

    for p, f in zip(prompts, frames):  # the frame shows the caption's colour (its objects)
        colour = torch.tensor(PALETTE[parse(p).colour], dtype=f.dtype)[:, None, None]
        assert ((f - colour).abs().amax(0) < 0.05).sum() >= 4
    again, frames_again = motion_prompts_with_frames(5, 3, WorldConfig())
    assert again == prompts and torch.equal(frames, frames_again)
    with pytest.raises(VidtuneError, match="motion prompts"):
        motion_prompts_with_frames(2, 3, WorldConfig(p_pour=1.0))
    directional, _ = motion_prompts_with_frames(40, 3, WorldConfig(), directional=True)
    assert all(set(parse(p).motions) <= {"left", "right", "up", "down", "fall"} for p in directional)
    assert not all(set(parse(p).motions) <= {"left", "right", "up", "down", "fall"}
                   for p in motion_prompts_with_frames(40, 3, WorldConfig())[0])
