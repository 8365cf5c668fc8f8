"""ALGORITHMS.md §9 reward-stage scheduling: all three property tests, hand examples and the quota helpers."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

from vidtune.math import makespan
from vidtune.math.makespan import (
    QUOTA_GRID,
    brute_force_plan,
    cpu_thread_budget,
    group_cost,
    mps_percentage,
    plan_reward_groups,
    random_profiles,
)


def _profile(base: float, sat: float) -> list[float]:
    """C(q) = base·max(1, sat/q): linear speed-up until the worker saturates at quota ``sat``."""
    return [base * max(1.0, sat / q) for q in QUOTA_GRID]


def _exhaustive_group_cost(rows) -> float:
    """Oracle for §9 property 3: min over all quota vectors on the grid with Σq ≤ 1 of max_w C_w(q_w)."""
    best = math.inf
    for ks in itertools.product(range(1, 11), repeat=len(rows)):
        if sum(ks) <= 10:
            best = min(best, max(row[k - 1] for row, k in zip(rows, ks)))
    return best


def _check_plan(plan, profiles):
    """Groups partition the workers, quotas lie on the grid and sum to ≤ 1 per group, makespan = Σ_g max C_w(q_w)."""
    assert sorted(n for g in plan.groups for n in g) == sorted(profiles)
    total = 0.0
    for g, qs in zip(plan.groups, plan.quotas, strict=True):
        assert all(any(abs(q - x) < 1e-12 for x in QUOTA_GRID) for q in qs)
        assert round(sum(qs) * 10) <= 10
        total += max(profiles[w][round(q * 10) - 1] for w, q in zip(g, qs))
    assert plan.makespan == pytest.approx(total)


def test_group_cost_hand_example():
    """A, B saturate at q = 0.3: C = [3, 1.5, 1, 1, …] (C(0.1) = 0.3/0.1 = 3, C(0.2) = 1.5). Candidates τ ∈ {1, 1.5, 3}:
    τ = 1 needs q = 0.3 + 0.3 = 0.6 ≤ 1 ⇒ T*({A, B}) = 1 with quotas (0.3, 0.3); singletons cost min C = 1 at q = 0.3.
    Serial T = 2, the grouped plan halves it."""
    p = {"a": _profile(1.0, 0.3), "b": _profile(1.0, 0.3)}
    gc = group_cost([p["a"], p["b"]])
    assert gc.cost == pytest.approx(1.0) and gc.quotas == pytest.approx((0.3, 0.3))
    single = group_cost([p["a"]])
    assert single.cost == pytest.approx(1.0) and single.quotas == pytest.approx((0.3,))
    plan = plan_reward_groups(p)
    assert plan.groups == (("a", "b"),) and plan.makespan == pytest.approx(1.0) and plan.serial_makespan == 2.0


def test_group_cost_trades_quota_between_members():
    """A: C = 1/q (1 at q = 1, 2 at 0.5, 4 at 0.25…); B: C = 0.5/q. Together Σq ≤ 1: τ = 1/q_A = 0.5/q_B ⇒ q_A = 2q_B,
    on the grid q = (0.6, 0.3) gives max(1/0.6, 0.5/0.3) = 1.667, (0.7, 0.3) gives max(1.43, 1.67) = 1.667: T* = 5/3.
    Serial is 1 + 0.5 = 1.5 < 5/3, so the plan keeps them apart."""
    a, b = [1 / q for q in QUOTA_GRID], [0.5 / q for q in QUOTA_GRID]
    assert group_cost([a, b]).cost == pytest.approx(5 / 3)
    plan = plan_reward_groups({"a": a, "b": b})
    assert plan.groups == (("a",), ("b",)) and plan.makespan == pytest.approx(1.5)


def test_five_light_workers_fit_one_group():
    """§9 step 3 example: five workers with C = 2 at q = 0.1 and 1 from q = 0.2 on. Any pair merged costs
    max(1, 1) = 1 vs 2 serial, so greedy merging gets there too; the optimum is one group at 0.2 each: T = 1 vs
    T_serial = 5."""
    p = {f"w{i}": [2.0] + [1.0] * 9 for i in range(5)}
    plan = plan_reward_groups(p)
    assert plan.makespan == pytest.approx(1.0) and plan.serial_makespan == pytest.approx(5.0)
    assert len(plan.groups) == 1 and plan.quotas[0] == pytest.approx((0.2,) * 5)


def test_empty_group_and_moves_out_of_singletons():
    """The empty group costs 0, so step 2(b) scores moving a singleton's only worker into another group correctly:
    on the hand example {a}, {b} (T = 1 + 1) → {a, b} (T = 0 + 1) improves by 1 and is the first move found."""
    assert group_cost([]) == (0.0, ())
    inst = makespan._Instance({"a": _profile(1.0, 0.3), "b": _profile(1.0, 0.3)})
    assert makespan._first_local([0b01, 0b10], inst.cost, inst.tol, 2) == [0b11]


def test_infeasible_groups_cost_infinity():
    """11 workers need at least 11 × 0.1 > 1 ⇒ +inf; a worker that cannot run below q = 0.6 (C = inf there) and
    another needing q ≥ 0.5 cannot share: 0.6 + 0.5 > 1 ⇒ +inf."""
    assert group_cost([[1.0] * 10] * 11).cost == math.inf
    heavy = [math.inf] * 5 + [1.0] * 5
    other = [math.inf] * 4 + [1.0] * 6
    assert group_cost([heavy, other]).cost == math.inf
    plan = plan_reward_groups({"h": heavy, "o": other})
    assert plan.makespan == pytest.approx(2.0) and len(plan.groups) == 2


def test_property3_group_cost_equals_exhaustive_search():
    """§9 property 3: T*(g) from step 1 equals the exhaustive search over quota vectors for |g| ≤ 3, on monotone
    profiles and on raw non-monotone measurements (300 random groups)."""
    rng = np.random.default_rng(7)
    for trial in range(300):
        k = 1 + trial % 3
        rows = [list(rng.uniform(0.5, 5.0, size=10)) for _ in range(k)]
        if trial % 2:
            rows = [list(np.minimum.accumulate(r)) for r in rows]
        gc = group_cost(rows)
        assert gc.cost == pytest.approx(_exhaustive_group_cost(rows), rel=0, abs=0)
        assert round(sum(gc.quotas) * 10) <= 10
        assert max(r[round(q * 10) - 1] for r, q in zip(rows, gc.quotas)) == gc.cost


def test_properties_1_2_3_against_brute_force():
    """§9 properties 1–3 on 600 random instances with 2–6 workers: T(plan) ≤ T_serial, T(plan) ≤ 1.05·brute-force
    optimum (all set partitions), every group's quotas on the grid with Σ ≤ 1. Budget: well under 15 s."""
    rng = np.random.default_rng(2024)
    start, worst = time.perf_counter(), 0.0
    for i in range(600):
        profiles = random_profiles(rng, 2 + i % 5)
        plan, best = plan_reward_groups(profiles), brute_force_plan(profiles)
        assert plan.makespan <= plan.serial_makespan + 1e-12
        assert best.makespan <= plan.makespan + 1e-12
        worst = max(worst, plan.makespan / best.makespan)
        _check_plan(plan, profiles)
    assert worst <= 1.05, f"worst ratio to the optimum {worst:.4f}"
    assert time.perf_counter() - start < 15.0


def test_search_can_fail_where_it_should_find_more_than_greedy():
    """Guard that the test above can fail: the serial plan (a valid but poor plan) is > 5 % above the optimum on the
    five-light-workers instance (5 vs 1), so a search stuck at the start would be caught."""
    p = {f"w{i}": [2.0] + [1.0] * 9 for i in range(5)}
    assert brute_force_plan(p).makespan * 1.05 < plan_reward_groups(p).serial_makespan


def test_deterministic_in_name_order():
    """The plan depends on names and profiles only: the same instance given in reversed insertion order yields the
    identical plan, groups listed in name order."""
    profiles = random_profiles(np.random.default_rng(3), 6)
    a = plan_reward_groups(profiles)
    b = plan_reward_groups(dict(reversed(list(profiles.items()))))
    assert a == b
    assert all(list(g) == sorted(g) for g in a.groups)


def test_bad_profiles_name_the_worker():
    """A profile must have one runtime per grid quota (10)."""
    with pytest.raises(ValueError, match="'judge'"):
        plan_reward_groups({"judge": [1.0, 2.0]})


def test_cpu_thread_budget():
    """max(1, round(q·n)): 0.3·10 = 3; 0.1·4 = 0.4 → 0 → 1; 1.0·8 = 8; 0.5·5 = 2.5 → 2 (half to even); 0.7·10 = 7;
    (3·0.1)·5 = 1.5 exactly (from tenths) → 2 (half to even)."""
    cases = [(0.3, 10), (0.1, 4), (1.0, 8), (0.5, 5), (0.7, 10), (3 * 0.1, 5)]
    assert [cpu_thread_budget(q, n) for q, n in cases] == [3, 1, 8, 2, 7, 2]


def test_mps_percentage():
    """⌈100q⌉: 3·0.1 → 30 (not 31 from 100·0.30000000000000004 = 30.000000000000004), 6·0.1 → 60, 0.07 → 7
    (100·0.07 = 7.000000000000001), 0.25 → 25, 0.001 → 1, 1 → 100; 0.301 → 31 (a genuine fraction rounds up)."""
    qs = (3 * 0.1, 6 * 0.1, 0.07, 0.25, 0.001, 1.0)
    assert [mps_percentage(q) for q in qs] == [30, 60, 7, 25, 1, 100]
    assert mps_percentage(0.301) == 31
