"""Mixed-resolution preference gradients: the clip view (math/clip_view.py) and the tiny model on reduced clips."""

import torch

from vidtune.math.clip_view import clip_view, window_starts
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy


def test_identity_when_nothing_is_reduced():
    x = torch.randn(3, 2, 8, 4, 4)
    assert torch.equal(clip_view(x, torch.zeros(3, dtype=torch.long), None, 1), x)
    assert torch.equal(window_starts(3, 8, None, torch.Generator()), torch.zeros(3, dtype=torch.long))


def test_window_and_pooling_by_hand():
    x = torch.arange(2 * 1 * 4 * 2 * 2, dtype=torch.float32).view(2, 1, 4, 2, 2)
    out = clip_view(x, torch.tensor([1, 2]), 2, 2)
    assert out.shape == (2, 1, 2, 1, 1)
    # row 0 frames 1,2: means of [4..7] = 5.5 and [8..11] = 9.5; row 1 frames 2,3 (offset 16): 25.5, 29.5
    assert out.flatten().tolist() == [5.5, 9.5, 25.5, 29.5]


def test_starts_stay_inside_the_clip():
    s = window_starts(1000, 8, 3, torch.Generator().manual_seed(0))
    assert int(s.min()) == 0 and int(s.max()) == 5


def test_tiny_model_scores_reduced_clips_and_full_size_is_unchanged():
    torch.manual_seed(0)
    policy = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 4, 4), hidden=32, depth=1, heads=2))
    torch.nn.init.normal_(policy.net.final.weight, std=0.02)
    cond = policy.encode_prompts(["a red circle"] * 2, images=torch.rand(2, 3, 16, 16))
    x = torch.randn(2, 3, 4, 16, 16)
    t = torch.full((2,), 0.5)
    full = policy.velocity(x, t, cond)
    small = policy.velocity(clip_view(x, torch.tensor([0, 1]), 2, 2), t, cond)
    assert full.shape == x.shape and small.shape == (2, 3, 2, 8, 8)
    assert torch.isfinite(small).all()
    # the training grid path uses the learned tables unchanged
    assert torch.equal(policy.net.positions(policy.net.grid), policy.net.pos_t + policy.net.pos_s)
