"""ALGORITHMS.md §8.2 synthetic temporal negatives; §8 property test 7."""

from __future__ import annotations

import math

import pytest
import torch

from vidtune.preference.synthetic import RejectedNegative, temporal_negative, temporal_negative_index

F, H, W = 16, 6, 5


def _clip(n_frames: int = F, seed: int = 0) -> torch.Tensor:
    """A dynamic clip: every frame is a different random image in [0, 1] (frame-to-frame mean |Δ| ≈ 1/3)."""
    return torch.rand(n_frames, 3, H, W, generator=torch.Generator().manual_seed(seed))


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _windows(src: torch.Tensor, start: int, size: int = 4):
    return [(a, min(a + size, len(src))) for a in range(start, len(src), size)]


def test_property7_reverse_twice_is_identity():
    """§8 property 7: reverse∘reverse = identity; y_l[f] = y_w[F − 1 − f]."""
    y = _clip()
    once = temporal_negative(y, "reverse", _gen(0)).video
    assert torch.equal(once, y.flip(0))
    assert torch.equal(temporal_negative(once, "reverse", _gen(0)).video, y)


@pytest.mark.parametrize("i2v", [False, True])
def test_property7_shuffle_is_non_identity_permutation_within_windows(i2v):
    """§8 property 7: over 200 seeds, src is a permutation that maps each window of L = 4 frames onto itself
    (windows start at frame 0 for T2V, 1 for I2V), each changed window is a non-identity permutation, and at least
    one window changes. With 4 windows chosen with prob. ½ each, both 'one' and 'several' changed windows occur."""
    y = _clip()
    n_changed_seen = set()
    for seed in range(200):
        out = temporal_negative(y, "shuffle", _gen(seed), i2v=i2v)
        src = out.source_index
        assert sorted(src.tolist()) == list(range(F))
        assert torch.equal(out.video, y[src])
        changed = 0
        for a, b in _windows(src, 1 if i2v else 0):
            assert sorted(src[a:b].tolist()) == list(range(a, b))
            changed += int(not torch.equal(src[a:b], torch.arange(a, b)))
        assert changed >= 1
        n_changed_seen.add(changed)
        if i2v:
            assert int(src[0]) == 0 and torch.equal(out.video[0], y[0])
    assert 1 in n_changed_seen and max(n_changed_seen) >= 3


def test_freeze_hand_example():
    """F = 16 ⇒ n_fr = ⌈0.25·16⌉ = 4, f_0 ∈ {1, …, 12}. Positions f_0 … f_0+3 show frame f_0, then the clip continues
    at f_0 + 4: src = [0, …, f_0, f_0, f_0, f_0, f_0+4, …, 15]."""
    for seed in range(50):
        src = temporal_negative_index(F, "freeze", _gen(seed))
        f0 = int((src != torch.arange(F)).nonzero()[0]) - 1  # the first changed position is f_0 + 1
        expected = list(range(f0)) + [f0] * 4 + list(range(f0 + 4, F))
        assert 1 <= f0 <= 12 and src.tolist() == expected


def test_stall_hand_example():
    """F = 16, n_fr = 4: positions f_0 … f_0+3 show f_0, then continue from f_0 + 1 (src[f] = f − 3), the tail cut at
    16 frames: src = [0, …, f_0, f_0, f_0, f_0, f_0+1, …, 12]."""
    for seed in range(50):
        src = temporal_negative_index(F, "stall", _gen(seed))
        f0 = int((src[1:] == src[:-1]).nonzero()[0])
        expected = list(range(f0)) + [f0] * 4 + list(range(f0 + 1, F - 3))
        assert 1 <= f0 <= 12 and src.tolist() == expected


@pytest.mark.parametrize("kind", ["freeze", "stall"])
def test_property7_freeze_and_stall_contain_duplicated_frames(kind):
    """§8 property 7: the negative has n_fr = 4 consecutive identical frames (the clip itself has none)."""
    y = _clip()
    for seed in range(20):
        neg = temporal_negative(y, kind, _gen(seed)).video
        same = [bool(torch.equal(neg[f], neg[f + 1])) for f in range(F - 1)]
        assert sum(same) == 3 and "TTT" in "".join("T" if s else "F" for s in same)


@pytest.mark.parametrize("kind", ["reverse", "shuffle", "freeze", "stall"])
def test_property7_shape_dtype_and_determinism(kind):
    """§8 property 7: every kind preserves shape and dtype; the same generator seed gives the same negative."""
    y = _clip(n_frames=13).double()
    a = temporal_negative(y, kind, _gen(5))
    b = temporal_negative(y, kind, _gen(5))
    assert a.video.shape == y.shape and a.video.dtype == y.dtype
    assert torch.equal(a.video, b.video) and a.mean_abs_diff >= 2 / 255


@pytest.mark.parametrize("kind", ["shuffle", "freeze", "stall"])
def test_property7_i2v_keeps_frame_zero(kind):
    """§8 property 7: for I2V the conditioning frame 0 stays in place (100 seeds)."""
    y = _clip()
    for seed in range(100):
        out = temporal_negative(y, kind, _gen(seed), i2v=True)
        assert int(out.source_index[0]) == 0 and torch.equal(out.video[0], y[0])


def test_reverse_refused_for_i2v():
    """§8.2: ``reverse`` is T2V-only (it would move the conditioning frame)."""
    with pytest.raises(ValueError, match="T2V-only"):
        temporal_negative(_clip(), "reverse", _gen(0), i2v=True)


@pytest.mark.parametrize("kind", ["reverse", "shuffle", "freeze", "stall"])
def test_property7_static_clips_are_rejected(kind):
    """§8 property 7: a static clip (16 identical frames) gives y_l = y_w, mean |Δ| = 0 < 2/255 ⇒ rejected; a
    near-static clip whose frames differ by ≤ 1/255 per element gives mean |Δ| ≤ 1/255 < 2/255 ⇒ rejected too."""
    static = _clip(1).expand(F, 3, H, W).clone()
    with pytest.raises(RejectedNegative) as info:
        temporal_negative(static, kind, _gen(0))
    assert info.value.mean_abs_diff == 0.0
    ramp = static + torch.arange(F).reshape(F, 1, 1, 1) / (255.0 * F)  # frames differ by < 1/255 in total
    with pytest.raises(RejectedNegative):
        temporal_negative(ramp, kind, _gen(0))


def test_rejection_threshold_is_two_levels():
    """A clip alternating between two images that differ by exactly 3/255 everywhere: reverse of an even-length
    alternating clip swaps every frame ⇒ mean |Δ| = 3/255 ≥ 2/255 ⇒ kept; with min_diff = 4/255 ⇒ rejected."""
    base = torch.full((3, H, W), 0.5)
    y = torch.stack([base + (3 / 255) * (f % 2) for f in range(8)])
    out = temporal_negative(y, "reverse", _gen(0))
    assert out.mean_abs_diff == pytest.approx(3 / 255)
    with pytest.raises(RejectedNegative):
        temporal_negative(y, "reverse", _gen(0), min_diff=4 / 255)


def test_too_short_clips_are_errors():
    """F = 4 ⇒ n_fr = ⌈1⌉ = 1: a one-frame hold duplicates nothing ⇒ ValueError; shuffle of a 2-frame I2V clip has a
    single permutable frame ⇒ ValueError."""
    assert math.ceil(0.25 * 4) == 1
    with pytest.raises(ValueError):
        temporal_negative_index(4, "freeze", _gen(0))
    with pytest.raises(ValueError):
        temporal_negative_index(2, "shuffle", _gen(0), i2v=True)
