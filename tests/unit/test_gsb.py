"""ALGORITHMS.md §10.1 GSB statistics: the test vector, identities, Wilson, sign test, bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.gsb import gsb_bootstrap, gsb_stats, margin_normal_interval, sign_test, wilson_interval


def test_gsb_test_vector():
    """(n_G, n_S, n_B) = (34, 48, 18), N = 100: WinRate 34/52 = 0.6538, Preference (34 + 24)/100 = 0.5800,
    Margin 16/100 = 0.1600, Wilson 95 % [0.5180, 0.7685], sign test P = 2·P[X ≥ 34 | Bin(52, ½)] = 0.0365."""
    s = gsb_stats(34, 48, 18)
    assert (round(s.win_rate, 4), round(s.preference, 4), round(s.margin, 4)) == (0.6538, 0.58, 0.16)
    assert s.n == 100 and s.undefined == ()
    lo, hi = wilson_interval(34, 52)
    assert (round(lo, 4), round(hi, 4)) == (0.5180, 0.7685)
    assert round(sign_test(34, 52), 4) == 0.0365


def test_margin_normal_interval_hand():
    """(34, 48, 18): p_G = 0.34, p_B = 0.18; var = (0.52 − 0.16²)/100 = 0.004944, se = 0.070314, half = 1.96·se =
    0.137815 ⇒ [0.0222, 0.2978]."""
    lo, hi = margin_normal_interval(34, 48, 18)
    assert (lo, hi) == pytest.approx((0.16 - 0.1378154, 0.16 + 0.1378154), abs=1e-6)


@settings(deadline=None, max_examples=200)
@given(st.integers(0, 500), st.integers(0, 500), st.integers(0, 500))
def test_identities_on_random_counts(n_g, n_s, n_b):
    """Preference = (1 + Margin)/2 and Margin = (2·WinRate − 1)(1 − n_S/N) whenever defined."""
    s = gsb_stats(n_g, n_s, n_b)
    if s.n == 0:
        assert math.isnan(s.preference) and math.isnan(s.margin)
        assert set(s.undefined) == {"win_rate", "preference", "margin"}
        return
    assert s.preference == pytest.approx((1 + s.margin) / 2, abs=1e-12)
    if n_g + n_b:
        assert s.margin == pytest.approx((2 * s.win_rate - 1) * (1 - n_s / s.n), abs=1e-12)


def test_win_rate_undefined_flag():
    """(0, 5, 0): n_G + n_B = 0 ⇒ WinRate NaN flagged; Preference 2.5/5 = 0.5, Margin 0."""
    s = gsb_stats(0, 5, 0)
    assert math.isnan(s.win_rate) and s.undefined == ("win_rate",)
    assert (s.preference, s.margin) == (0.5, 0.0)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


@settings(deadline=None, max_examples=300)
@given(st.integers(1, 2000), st.data())
def test_wilson_inside_unit_interval_and_contains_phat(n, data):
    """Wilson bounds lie in [0, 1] and contain p̂ = k/n for every k ∈ {0, …, n}."""
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_sign_test_small_cases():
    """n = 5, k = 0: 2·(1/32) = 0.0625; k = 5 the same by symmetry; n = 4, k = 2 (the centre) ⇒ 1; n = 0 ⇒ 1.
    n = 10, k = 8: P[X ≥ 8] = (45 + 10 + 1)/1024 = 56/1024 ⇒ p = 0.109375."""
    assert sign_test(0, 5) == pytest.approx(0.0625) and sign_test(5, 5) == pytest.approx(0.0625)
    assert sign_test(2, 4) == 1.0 and sign_test(0, 0) == 1.0
    assert sign_test(8, 10) == pytest.approx(0.109375)


def _study(seed: int, n_prompts: int = 30, per_prompt: int = 4):
    rng = np.random.default_rng(seed)
    outcomes = rng.choice(["G", "S", "B"], size=n_prompts * per_prompt, p=[0.4, 0.35, 0.25])
    return list(outcomes), [f"p{i // per_prompt}" for i in range(n_prompts * per_prompt)]


def test_bootstrap_reproducible_under_seed():
    """Same seed ⇒ identical intervals; another seed ⇒ different ones; intervals bracket the point estimates."""
    outcomes, ids = _study(0)
    a, b = gsb_bootstrap(outcomes, ids, seed=11), gsb_bootstrap(outcomes, ids, seed=11)
    c = gsb_bootstrap(outcomes, ids, seed=12)
    assert a == b and a != c and a.n_prompts == 30
    s = gsb_stats(outcomes.count("G"), outcomes.count("S"), outcomes.count("B"))
    for (lo, hi), point in [(a.win_rate, s.win_rate), (a.preference, s.preference), (a.margin, s.margin)]:
        assert lo < point < hi


def test_bootstrap_resamples_prompts_not_judgments():
    """Judgments of one prompt move together: replicating every prompt's judgments 3 times (same prompt id) scales
    each resample's counts by 3, leaving all ratio statistics — hence the intervals — unchanged. A judgment-level
    bootstrap would draw 3× as many indices and give different intervals."""
    outcomes, ids = _study(1)
    a = gsb_bootstrap(outcomes, ids, seed=5)
    b = gsb_bootstrap(outcomes * 3, ids * 3, seed=5)
    for x, y in zip(a[:3], b[:3]):
        assert x == pytest.approx(y, abs=1e-12)


def test_bootstrap_degenerate_and_errors():
    """All judgments 'S' ⇒ WinRate undefined in all 2000 resamples (NaN interval), Margin ≡ 0, Preference ≡ 0.5."""
    r = gsb_bootstrap(["S"] * 6, [1, 1, 2, 2, 3, 3])
    assert math.isnan(r.win_rate.low) and r.n_undefined_win_rate == 2000
    assert r.margin == (0.0, 0.0) and r.preference == (0.5, 0.5)
    with pytest.raises(ValueError, match="'X'"):
        gsb_bootstrap(["G", "X"], [0, 1])
    with pytest.raises(ValueError, match="prompt ids"):
        gsb_bootstrap(["G", "B"], [0])
