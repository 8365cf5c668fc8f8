"""Tests of ALGORITHMS.md §2.1 (group advantages) and the invalid-reward rules of §0."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from vidtune.math.advantages import advantage_push, group_advantages, group_stats

EPS = 1e-4
FAST = settings(max_examples=60, deadline=None)


def _groups(min_g: int = 2, max_g: int = 8, max_p: int = 4, lo: float = -100.0, hi: float = 100.0):
    """(G, rewards [P*G] as fp64) with rewards on a 1/8 grid so ties are common."""
    return st.integers(min_g, max_g).flatmap(
        lambda g: st.tuples(
            st.just(g),
            st.integers(1, max_p).flatmap(
                lambda p: st.lists(st.integers(int(lo * 8), int(hi * 8)), min_size=p * g, max_size=p * g)
            ),
        )
    ).map(lambda gr: (gr[0], torch.tensor(gr[1], dtype=torch.float64) / 8))


def test_hand_computed_zscore():
    """r = [1, 2, 3, 4]: R̄ = 2.5, deviations ±0.5, ±1.5, Σdev² = 5, std_u = √(5/3) = 1.2909944;
    A = dev / (1.2909944 + 1e-4) = [−1.161805, −0.387268, 0.387268, 1.161805]."""
    out = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64), 4)
    expected = torch.tensor([-1.161805010833055, -0.3872683369443517, 0.3872683369443517, 1.161805010833055],
                            dtype=torch.float64)
    torch.testing.assert_close(out.advantages, expected, rtol=1e-12, atol=0)
    assert out.group_mean.item() == 2.5
    assert out.invalid_count == 0 and out.degenerate_groups == 0 and out.clipped_fraction == 0.0


def test_invalid_rewards_are_excluded_and_get_zero():
    """Group [1, NaN, 3, +inf]: valid {1, 3}, R̄ = 2, std_u = √2 = 1.4142136, A = ±1/(1.4142136 + 1e-4) = ±0.7070568;
    the NaN and inf samples get A = 0 and are counted invalid. Group 2 [5, 5, 7, 9] is unaffected."""
    r = torch.tensor([1.0, math.nan, 3.0, math.inf, 5.0, 5.0, 7.0, 9.0], dtype=torch.float64)
    out = group_advantages(r, 4)
    a = out.advantages
    assert a[0].item() == pytest.approx(-0.7070567847218314, rel=1e-12)
    assert a[2].item() == pytest.approx(0.7070567847218314, rel=1e-12)
    assert a[1].item() == 0.0 and a[3].item() == 0.0
    assert out.invalid_count == 2
    assert out.valid.tolist() == [True, False, True, False, True, True, True, True]
    torch.testing.assert_close(a[4:], group_advantages(r[4:], 4).advantages)


def test_group_with_fewer_than_two_valid_samples_is_zero():
    """[NaN, 3, NaN, NaN] has 1 valid sample (std_u undefined) → all A = 0, one degenerate group;
    [NaN]*4 has none → also 0; the third group [0, 1, 0, 1] is normal."""
    nan = math.nan
    r = torch.tensor([nan, 3.0, nan, nan, nan, nan, nan, nan, 0.0, 1.0, 0.0, 1.0])
    out = group_advantages(r, 4)
    assert torch.all(out.advantages[:8] == 0)
    assert torch.all(out.advantages[8:] != 0)
    assert out.degenerate_groups == 2 and out.invalid_count == 7
    assert torch.isfinite(out.advantages).all()


def test_extra_valid_mask_acts_like_invalid_reward():
    """A caller mask (e.g. a gate) removes a sample from the statistics exactly like a NaN reward would."""
    r = torch.tensor([1.0, 2.0, 4.0, 8.0])
    masked = group_advantages(r, 4, valid=torch.tensor([True, True, False, True]))
    as_nan = group_advantages(torch.tensor([1.0, 2.0, math.nan, 8.0]), 4)
    torch.testing.assert_close(masked.advantages, as_nan.advantages, rtol=0, atol=0)
    assert masked.invalid_count == 1


@FAST
@given(_groups())
def test_group_means_are_zero(gr):
    """Property 1: each group's advantages sum to 0 (valid samples; exactly 0 for degenerate groups)."""
    g, r = gr
    a = group_advantages(r, g).advantages.view(-1, g)
    torch.testing.assert_close(a.sum(1), torch.zeros(a.shape[0], dtype=a.dtype), atol=1e-9, rtol=0)


@FAST
@given(_groups(max_p=1, lo=0.0, hi=1.0), _groups(max_p=1, lo=-1000.0, hi=1000.0))
def test_two_prompts_of_different_scale_equal_each_alone(g1, g2):
    """Property 1: a batch of a [0, 1]-scale prompt and a [−1000, 1000]-scale prompt gives the same advantages as
    each prompt alone (statistics are per prompt, never batch-wide)."""
    g = g1[0]
    r1, r2 = g1[1], g2[1][:g] if g2[1].numel() >= g else g2[1].repeat(g)[:g]
    both = group_advantages(torch.cat([r1, r2]), g).advantages
    alone = torch.cat([group_advantages(r1, g).advantages, group_advantages(r2, g).advantages])
    assert torch.equal(both, alone)


def test_identical_rewards_give_exactly_zero():
    """Property 2: 0.1 repeated 3× has a float mean 0.30000000000000004/3 ≠ 0.1, yet A must be exactly 0."""
    for dtype in (torch.float32, torch.float64):
        out = group_advantages(torch.full((3,), 0.1, dtype=dtype), 3)
        assert torch.equal(out.advantages, torch.zeros(3, dtype=dtype))
        assert out.degenerate_groups == 1


def test_std_floor_zeroes_only_that_group():
    """Property 2: group 1 [0, 0.01] has std_u = 0.00707 < floor 0.05 → A = 0; group 2 [0, 1] (std 0.707) keeps
    deviations ±0.5 and A = ±0.5/(0.70711 + 1e-4) = ±0.70701, equal to its no-floor value."""
    r = torch.tensor([0.0, 0.01, 0.0, 1.0], dtype=torch.float64)
    out = group_advantages(r, 2, std_floor=0.05)
    assert torch.equal(out.advantages[:2], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(out.advantages[2:], group_advantages(r[2:], 2).advantages, rtol=0, atol=0)
    assert out.advantages[3].item() == pytest.approx(0.5 / (0.5**0.5 + 1e-4), rel=1e-12)
    assert out.floored_groups == 1 and out.degenerate_groups == 1
    assert torch.all(group_advantages(r, 2).advantages[:2] != 0)  # without the floor the group is not zeroed


@FAST
@given(_groups(max_g=30))
def test_abs_advantage_bound(gr):
    """Property 3: with unbiased std |A| ≤ (G−1)/√G for any rewards (2.47 for G = 8)."""
    g, r = gr
    a = group_advantages(r, g, adv_clip=math.inf).advantages
    assert a.abs().max().item() <= (g - 1) / math.sqrt(g) + 1e-12


@FAST
@given(_groups(max_g=26))
def test_clip_is_inert_for_small_groups(gr):
    """Property 3: for G ≤ 26 the bound (G−1)/√G ≤ 4.9 < A_max = 5, so clipping changes nothing."""
    g, r = gr
    clipped = group_advantages(r, g)
    assert torch.equal(clipped.advantages, group_advantages(r, g, adv_clip=math.inf).advantages)
    assert clipped.clipped_fraction == 0.0


def test_clip_binds_for_large_group():
    """One outlier in G = 30: A = (G−1)/√G/(1 + ε/std) ≈ 29/√30 = 5.295 > 5 → clipped to 5; 1/30 clipped."""
    r = torch.zeros(30, dtype=torch.float64)
    r[0] = 1.0
    out = group_advantages(r, 30)
    assert out.advantages[0].item() == 5.0
    assert out.clipped_fraction == pytest.approx(1 / 30)


@FAST
@given(_groups(), st.floats(0.5, 100.0), st.floats(-1000.0, 1000.0))
def test_affine_invariance(gr, a, b):
    """Property 3: A(a·r + b) = A(r) for a > 0 up to the ε_A effect; with std_u ≥ 0.5 and a ≥ 0.5 the relative
    ε_A effect is ≤ 1e-4/0.25, so |ΔA| ≤ 2.5·4e-4 = 1e-3."""
    g, r = gr
    s = group_stats(r.view(-1, g)).std
    assume(bool((s >= 0.5).all()))
    torch.testing.assert_close(group_advantages(a * r + b, g).advantages, group_advantages(r, g).advantages,
                               atol=1e-3, rtol=0)


@FAST
@given(_groups())
def test_mean_baseline_equals_zscore_times_std(gr):
    """Property 7: A_mean_baseline = A_zscore · (std_u + ε_A), group by group (no clip)."""
    g, r = gr
    z = group_advantages(r, g, adv_clip=math.inf)
    mb = group_advantages(r, g, mode="mean_baseline", adv_clip=math.inf).advantages
    scale = (z.group_std + EPS).repeat_interleave(g)
    torch.testing.assert_close(mb, z.advantages * scale, atol=1e-9, rtol=1e-9)


def test_mean_baseline_hand_value():
    """r = [1, 2, 3, 4] → A = r − 2.5 = [−1.5, −0.5, 0.5, 1.5] (reward units)."""
    out = group_advantages(torch.tensor([1.0, 2.0, 3.0, 4.0]), 4, mode="mean_baseline")
    assert out.advantages.tolist() == [-1.5, -0.5, 0.5, 1.5]


def test_dtypes():
    """fp64 stays fp64 (never downcast); bf16 is computed and returned in fp32."""
    r = torch.tensor([1.0, 2.0, 3.0, 5.0])
    assert group_advantages(r.double(), 2).advantages.dtype == torch.float64
    out = group_advantages(r.bfloat16(), 2)
    assert out.advantages.dtype == torch.float32
    torch.testing.assert_close(out.advantages, group_advantages(r, 2).advantages)


def test_prompt_major_layout_and_2d_input():
    """[B] ↔ [P, G] is a row-major reshape: rows p·G … p·G+G−1 belong to prompt p; a [P, G] input is accepted."""
    r = torch.tensor([[0.0, 1.0, 2.0], [10.0, 10.0, 40.0]])
    flat = group_advantages(r.reshape(-1), 3)
    assert torch.equal(group_advantages(r, 3).advantages, flat.advantages)
    torch.testing.assert_close(flat.group_mean, torch.tensor([1.0, 20.0]))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="group_size"):
        group_advantages(torch.zeros(4), 1)
    with pytest.raises(ValueError, match="multiple of group_size=4"):
        group_advantages(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="advantage mode"):
        group_advantages(torch.zeros(4), 2, mode="batch")  # type: ignore[arg-type]


def test_advantage_push_by_hand():
    """Σ A·(f − f̄_group) / Σ|A| over finite f: group 1 gives 1·(3 − 2) + (−1)·(1 − 2) = 2; in group 2 only the first
    sample has a feature (f̄ = 10, contribution 0); Σ|A| over those three samples = 2.5 → 0.8."""
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    feat = torch.tensor([3.0, 1.0, 10.0, float("nan")])
    assert advantage_push(adv, feat, 2) == pytest.approx(0.8)
    assert advantage_push(-adv, feat, 2) == pytest.approx(-0.8)  # the opposite step pushes the other way
    assert math.isnan(advantage_push(torch.zeros(4), feat, 2))
