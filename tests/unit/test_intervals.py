"""Evaluation intervals (math/intervals.py) against hand-computed values."""

import math

import pytest
import torch

from vidtune.math.intervals import mean_interval, paired_prompt_difference, seed_interval


def test_mean_interval_by_hand():
    """[1, 2, 3, NaN]: mean 2, s = 1, half-width 1.96/√3 = 1.1316; the NaN is left out."""
    r = mean_interval(torch.tensor([1.0, 2.0, 3.0, float("nan")]))
    assert (r.mean, r.n) == (2.0, 3)
    assert r.high - r.mean == pytest.approx(1.96 / math.sqrt(3))
    assert mean_interval(torch.tensor([5.0])).low == 5.0  # one value: no spread estimate


def test_paired_prompt_difference_pairs_repeats_of_the_same_prompt():
    """k = 2 repeats of N = 2 prompts, repeat-major: prompt 0 is samples 0 and 2 (differences 1, 2 → 1.5), prompt 1
    samples 1 and 3 (2, 3 → 2.5); mean 2, s = √0.5, half-width 1.96·√0.5/√2 = 0.98."""
    a, b = torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([0.0, 0.0, 1.0, 1.0])
    r = paired_prompt_difference(a, b, k=2)
    assert (r.mean, r.n) == (2.0, 2)
    assert r.high - r.mean == pytest.approx(0.98)
    assert paired_prompt_difference(b, a, k=2).mean == -2.0
    with pytest.raises(ValueError, match="k=3"):
        paired_prompt_difference(a, b, k=3)


def test_paired_prompt_difference_skips_undefined_clips():
    """k = 2, N = 3: prompt 0 has differences 1 and NaN → 1; prompt 1 has 2 and 4 → 3; prompt 2 is undefined in both
    repeats and is left out. Mean 2 over n = 2 prompts."""
    nan = float("nan")
    a = torch.tensor([1.0, 2.0, nan, nan, 4.0, nan])
    b = torch.zeros(6)
    r = paired_prompt_difference(a, b, k=2)
    assert (r.mean, r.n) == (2.0, 2)


def test_seed_interval_by_hand():
    """Seeds 1, 2, 3: mean 2, s = 1, half-width t_{0.975, 2}·1/√3 = 4.303/√3 = 2.4843."""
    r = seed_interval([1.0, 2.0, 3.0])
    assert (r.mean, r.n) == (2.0, 3)
    assert r.high - r.mean == pytest.approx(4.303 / math.sqrt(3))
    assert seed_interval([0.5]).low == 0.5
