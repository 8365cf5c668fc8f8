"""GSB (Good / Same / Bad) study statistics (ALGORITHMS.md §10.1; TeleBoost §7.1; Wilson 1927).

Counts n_G (ours better), n_S (same), n_B (baseline better), N = n_G + n_S + n_B. WinRate ignores ties,
Preference counts a tie as half a win, Margin = (n_G − n_B)/N; Preference = (1 + Margin)/2 identically.
Intervals: Wilson for WinRate, a prompt-level bootstrap for all three, and an i.i.d. normal Margin interval that is
only reported alongside. Significance: exact two-sided sign test. All arithmetic is fp64 / exact integers.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import NamedTuple

import numpy as np

_NAN = float("nan")


class GSBStats(NamedTuple):
    """Point statistics of §10.1; undefined ones are NaN and named in ``undefined``."""

    win_rate: float  # n_G / (n_G + n_B)
    preference: float  # (n_G + 0.5·n_S) / N
    margin: float  # (n_G − n_B) / N
    n: int  # N
    undefined: tuple[str, ...]  # e.g. ("win_rate",) when n_G + n_B = 0


def gsb_stats(n_g: int, n_s: int, n_b: int) -> GSBStats:
    """ALGORITHMS.md §10.1, WinRate / Preference / Margin from counts (n_G, n_S, n_B).

    WinRate is NaN (flagged) when n_G + n_B = 0; all three are NaN when N = 0. Example (34, 48, 18):
    WinRate 34/52 = 0.6538, Preference (34 + 24)/100 = 0.58, Margin 16/100 = 0.16.
    """
    if min(n_g, n_s, n_b) < 0:
        raise ValueError(f"GSB counts must be >= 0, got ({n_g}, {n_s}, {n_b})")
    n = n_g + n_s + n_b
    undefined = [] if n_g + n_b else ["win_rate"]
    if n == 0:
        undefined += ["preference", "margin"]
    return GSBStats(
        win_rate=n_g / (n_g + n_b) if n_g + n_b else _NAN,
        preference=(n_g + 0.5 * n_s) / n if n else _NAN,
        margin=(n_g - n_b) / n if n else _NAN,
        n=n,
        undefined=tuple(undefined),
    )


class Interval(NamedTuple):
    """A two-sided confidence interval (NaN bounds when undefined)."""

    low: float
    high: float


def wilson_interval(k: int, n: int, z: float = 1.96) -> Interval:
    """ALGORITHMS.md §10.1, Wilson score interval for WinRate: k = n_G, n = n_G + n_B, p̂ = k/n,
    (p̂ + z²/2n ± z·√(p̂(1−p̂)/n + z²/4n²)) / (1 + z²/n). Always inside [0, 1] and contains p̂; n = 0 gives NaN.
    Example k = 34, n = 52: [0.5180, 0.7685]."""
    if n == 0:
        return Interval(_NAN, _NAN)
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    p, z2 = k / n, z * z
    centre = p + z2 / (2 * n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    d = 1 + z2 / n  # the clamps only undo rounding: exactly, 0 ≤ low ≤ p̂ ≤ high ≤ 1 (equalities at p̂ ∈ {0, 1})
    return Interval(max(0.0, min(p, (centre - half) / d)), min(1.0, max(p, (centre + half) / d)))


def sign_test(k: int, n: int) -> float:
    """ALGORITHMS.md §10.1, exact two-sided sign test of k = n_G successes in n = n_G + n_B trials at p = 0.5:
    p = min(1, 2·min(P[X ≤ k], P[X ≥ k])), X ~ Bin(n, ½), computed with exact integers. n = 0 gives 1.
    Example k = 34, n = 52: p = 0.0365."""
    if not 0 <= k <= n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    tail = min(sum(math.comb(n, i) for i in range(k + 1)), sum(math.comb(n, i) for i in range(k, n + 1)))
    return min(1.0, 2 * tail / 2**n)


def margin_normal_interval(n_g: int, n_s: int, n_b: int, z: float = 1.96) -> Interval:
    """ALGORITHMS.md §10.1, i.i.d. normal Margin interval Margin ± z·√((p_G + p_B − (p_G − p_B)²)/N),
    p_G = n_G/N, p_B = n_B/N (reported only alongside the bootstrap: it ignores the clustering of judgments by
    prompt). N = 0 gives NaN."""
    n = n_g + n_s + n_b
    if n == 0:
        return Interval(_NAN, _NAN)
    pg, pb = n_g / n, n_b / n
    half = z * math.sqrt(max(0.0, pg + pb - (pg - pb) ** 2) / n)
    return Interval(pg - pb - half, pg - pb + half)


class GSBBootstrap(NamedTuple):
    """Prompt-level bootstrap intervals of §10.1."""

    win_rate: Interval  # over resamples where WinRate is defined
    preference: Interval
    margin: Interval
    n_prompts: int
    n_undefined_win_rate: int  # resamples with n_G + n_B = 0 (left out of the WinRate percentiles)


def gsb_bootstrap(
    outcomes: Sequence[str] | np.ndarray,
    prompt_ids: Sequence[Hashable] | np.ndarray,
    n_resamples: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> GSBBootstrap:
    """ALGORITHMS.md §10.1, bootstrap over prompts: resample the P prompts with replacement, all judgments of a
    prompt (raters, seeds, aspects) moving together; percentiles (1−level)/2 and (1+level)/2 (2.5/97.5) of each
    statistic over ``n_resamples`` resamples drawn by ``np.random.default_rng(seed)`` (reproducible under the seed).

    ``outcomes``: [J] in {"G", "S", "B"}; ``prompt_ids``: [J] any hashable ids. No judgment gives NaN intervals.
    """
    out = np.asarray(outcomes, dtype=object).reshape(-1)
    ids = list(prompt_ids)
    if len(ids) != out.size:
        raise ValueError(f"got {out.size} outcomes but {len(ids)} prompt ids; one id per judgment is required")
    bad = sorted({str(o) for o in out if o not in ("G", "S", "B")})
    if bad:
        raise ValueError(f"GSB outcomes must be 'G', 'S' or 'B'; found {bad[:5]}")
    index = {p: i for i, p in enumerate(dict.fromkeys(ids))}
    n_p = len(index)
    if n_p == 0:
        nan = Interval(_NAN, _NAN)
        return GSBBootstrap(nan, nan, nan, 0, 0)
    counts = np.zeros((n_p, 3))  # per prompt: n_G, n_S, n_B
    for o, p in zip(out, ids, strict=True):
        counts[index[p], "GSB".index(o)] += 1
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_p, size=(n_resamples, n_p))
    mult = np.zeros((n_resamples, n_p))
    np.add.at(mult, (np.arange(n_resamples)[:, None], draws), 1.0)
    g, s, b = (mult @ counts).T
    n = g + s + b
    with np.errstate(invalid="ignore", divide="ignore"):
        win = g / (g + b)
    pct = [50 * (1 - level), 50 * (1 + level)]

    def interval(x: np.ndarray) -> Interval:
        """Percentile interval over the resamples where the statistic is defined."""
        x = x[np.isfinite(x)]
        return Interval(*map(float, np.percentile(x, pct))) if x.size else Interval(_NAN, _NAN)

    return GSBBootstrap(
        interval(win), interval((g + 0.5 * s) / n), interval((g - b) / n), n_p, int((~np.isfinite(win)).sum())
    )
