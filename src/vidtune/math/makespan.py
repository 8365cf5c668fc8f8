"""Reward-stage scheduling: grouped concurrent reward workers under compute quotas (ALGORITHMS.md §9).

Worker w has a measured profile C_w(q), q ∈ Q = {0.1, …, 1.0} (``profile[k-1]`` = C_w(k/10); +inf = cannot run
at that quota). A plan partitions the workers into groups run one after another; a group runs concurrently with
quotas summing to ≤ 1: T(plan) = Σ_g max_{w∈g} C_w(q_w). "Σ q ≤ 1" is checked in integer tenths (exact). Groups are
bitmasks over the workers sorted by name, so every search is deterministic in name order.
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

QUOTA_GRID: tuple[float, ...] = tuple(k / 10 for k in range(1, 11))  # Q


class GroupCost(NamedTuple):
    """T*(g) of one group and its quotas."""
    cost: float  # T*(g); +inf when infeasible
    quotas: tuple[float, ...]  # q_w(T*) per worker, on the grid Q, Σ ≤ 1 when feasible


def group_cost(rows: Sequence[Sequence[float]]) -> GroupCost:
    """ALGORITHMS.md §9 step 1, group cost T*(g), exact on the quota grid.

    ``rows``: |g| profiles [C_w(0.1), …, C_w(1.0)]. For τ in the sorted set {C_w(q)}, q_w(τ) = min{q : C_w(q) ≤ τ};
    T*(g) is the smallest τ where every q_w(τ) exists and Σ q_w ≤ 1 (monotone in τ: binary search). Equals the
    min over quota vectors with Σ ≤ 1 of max_w C_w(q_w). A singleton costs min_q C_w(q); an infeasible group (> 10
    workers, or Σ of minimal finite quotas > 1) costs +inf (minimal quotas reported); the empty group costs 0.
    """
    if not rows:
        return GroupCost(0.0, ())  # the empty group (a worker moved out of a singleton)
    cands = sorted({c for row in rows for c in row if math.isfinite(c)})
    q_of = lambda row, tau: next((k + 1 for k, c in enumerate(row) if c <= tau), None)  # noqa: E731

    def quotas(tau: float) -> tuple[int, ...] | None:
        """(q_w(τ) in tenths) if every q_w(τ) exists and Σ ≤ 10 tenths, else None."""
        ks = [q_of(row, tau) for row in rows]
        return None if None in ks or sum(ks) > 10 else tuple(ks)  # type: ignore[arg-type]

    lo, hi = 0, len(cands)
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if quotas(cands[mid]) is not None else (mid + 1, hi)
    if lo == len(cands):
        return GroupCost(math.inf, tuple((q_of(row, math.inf) or 10) / 10 for row in rows))
    return GroupCost(cands[lo], tuple(k / 10 for k in quotas(cands[lo])))  # type: ignore[union-attr]


class MakespanPlan(NamedTuple):
    """A reward-stage plan: groups run one after another, members of a group run concurrently."""
    groups: tuple[tuple[str, ...], ...]  # worker names, each group in name order, groups by first member
    quotas: tuple[tuple[float, ...], ...]  # q_w aligned with ``groups``
    makespan: float  # predicted T(plan) = Σ_g T*(g)
    serial_makespan: float  # T_serial = Σ_w min_q C_w(q)


class _Instance:
    """Workers in name order, a cached mask → GroupCost table (``entry``), ``cost``/``total`` of groups and plans."""
    def __init__(self, profiles: Mapping[str, Sequence[float]]) -> None:
        self.names = sorted(profiles)
        self.rows = [tuple(float(c) for c in profiles[n]) for n in self.names]
        for name, row in zip(self.names, self.rows, strict=True):
            if len(row) != len(QUOTA_GRID) or any(c != c or c < 0 for c in row) or min(row) == math.inf:
                raise ValueError(f"profile of reward worker {name!r} must hold 10 runtimes >= 0 (no NaN) for "
                                 f"q = 0.1 … 1.0 with at least one finite value; got {list(row)}")
        self.tol = 1e-12 * max([1.0, *(c for row in self.rows for c in row if math.isfinite(c))])
        self.entry = functools.cache(lambda m: group_cost([r for i, r in enumerate(self.rows) if m >> i & 1]))
        self.cost: Callable[[int], float] = lambda m: self.entry(m).cost
        self.total: Callable[[Sequence[int]], float] = lambda masks: sum(self.cost(m) for m in masks)

    def plan(self, masks: Sequence[int]) -> MakespanPlan:
        """The public plan of a list of group masks."""
        masks = _canon(masks)
        groups = tuple(tuple(self.names[i] for i in range(len(self.names)) if m >> i & 1) for m in masks)
        quotas = tuple(self.entry(m).quotas for m in masks)
        serial = self.total([1 << i for i in range(len(self.names))])
        return MakespanPlan(groups, quotas, self.total(masks), serial)


def _canon(masks: Sequence[int]) -> list[int]:
    """Canonical plan: non-empty groups ordered by their first member in name order."""
    return sorted((m for m in masks if m), key=lambda m: m & -m)


def _best_merge(plan: list[int], c: Callable[[int], float], tol: float) -> list[int] | None:
    """§9 step 2(a): apply the merge with the most negative T*(g∪h) − T*(g) − T*(h) (first on ties), or None."""
    cands = [(d, i, j) for i in range(len(plan)) for j in range(i + 1, len(plan))
             if (d := c(plan[i] | plan[j]) - c(plan[i]) - c(plan[j])) < -tol]
    if not cands:
        return None
    _, i, j = min(cands)
    return _canon([m for k, m in enumerate(plan) if k not in (i, j)] + [plan[i] | plan[j]])


def _first_local(plan: list[int], c: Callable[[int], float], tol: float, n: int) -> list[int] | None:
    """§9 step 2(b): apply the first improving single-worker move or pairwise swap (name order), or None."""
    where = {i: gi for gi, m in enumerate(plan) for i in range(n) if m >> i & 1}
    for i in range(n):  # single-worker moves: to another group, then to a new singleton
        g, bit = where[i], 1 << i
        targets = [h for h in range(len(plan)) if h != g] + ([-1] if plan[g] != bit else [])
        for h in targets:
            old, new = (c(plan[h]), c(plan[h] | bit)) if h >= 0 else (0.0, c(bit))
            if c(plan[g] ^ bit) + new - c(plan[g]) - old < -tol:
                out = [m ^ bit if k == g else m | bit if k == h else m for k, m in enumerate(plan)]
                return _canon(out + ([bit] if h < 0 else []))
    for i in range(n):  # pairwise swaps between groups
        for j in range(i + 1, n):
            g, h = where[i], where[j]
            if g != h:
                a, b = plan[g] ^ (1 << i) | (1 << j), plan[h] ^ (1 << j) | (1 << i)
                if c(a) + c(b) - c(plan[g]) - c(plan[h]) < -tol:
                    return _canon([a if k == g else b if k == h else m for k, m in enumerate(plan)])
    return None


def _best_split(g: int, c: Callable[[int], float], tol: float) -> tuple[int, int] | None:
    """§9 step 2(c): the best improving bipartition (A, g∖A) of group g, or None."""
    low, best, arg = g & -g, -tol, None
    sub = rest = g ^ low
    while True:  # every bipartition {A, g∖A} once: A holds g's lowest member, g∖A ≠ ∅
        a = low | sub
        if a != g and (d := c(a) + c(g ^ a) - c(g)) < best:
            best, arg = d, (a, g ^ a)
        if sub == 0:
            return arg
        sub = (sub - 1) & rest


def _improve(plan: list[int], inst: _Instance) -> list[int]:
    """ALGORITHMS.md §9 step 2: (a) greedy merges, (b) first-improving moves/swaps, (c) best bipartitions,
    repeated until a full pass changes nothing."""
    c, tol, n, plan = inst.cost, inst.tol, len(inst.names), _canon(plan)
    while True:
        changed = False
        while (merged := _best_merge(plan, c, tol)) is not None:
            plan, changed = merged, True
        while (moved := _first_local(plan, c, tol, n)) is not None:
            plan, changed = moved, True
        for g in list(plan):
            if (split := _best_split(g, c, tol)) is not None:
                plan, changed = _canon([m for m in plan if m != g] + list(split)), True
        if not changed:
            return plan


def plan_reward_groups(
    profiles: Mapping[str, Sequence[float]], *, n_random_starts: int = 8, seed: int = 0
) -> MakespanPlan:
    """ALGORITHMS.md §9, grouped-parallel reward makespan (TeleBoost §6.1, Eq. 7–9).

    ``profiles``: worker name → [C_w(0.1), …, C_w(1.0)]. Starts: serial (all singletons), single group, and
    ``n_random_starts`` random partitions (``random.Random(seed)``, labels drawn per worker in name order); each is
    improved by step 2 and the cheapest result kept (earliest start on ties). T(plan) ≤ T_serial always; the result
    is deterministic given the names, profiles and seed. No workers gives an empty plan of cost 0.
    """
    inst = _Instance(profiles)
    n = len(inst.names)
    rng, starts = random.Random(seed), [[1 << i for i in range(n)], [(1 << n) - 1]]
    for labels in ([rng.randrange(n) for _ in range(n)] for _ in range(n_random_starts if n else 0)):
        starts.append([sum(1 << i for i in range(n) if labels[i] == lab) for lab in range(n)])
    return inst.plan(min((_improve(s, inst) for s in starts), key=inst.total))


def brute_force_plan(profiles: Mapping[str, Sequence[float]]) -> MakespanPlan:
    """Reference for tests (ALGORITHMS.md §9, property 2): the optimum over all set partitions (Bell(n) of them,
    enumerated explicitly), each group costed by step 1; first optimum on ties. Exponential: use for n ≲ 10."""
    inst = _Instance(profiles)
    return inst.plan(min(_set_partitions(len(inst.names)), key=inst.total))


def _set_partitions(n: int) -> list[list[int]]:
    """All set partitions of workers 0 … n−1 as lists of bitmasks (worker i joins each block or opens one)."""
    parts: list[list[int]] = [[]]
    for bit in (1 << i for i in range(n)):
        parts = [p[:k] + [p[k] | bit] + p[k + 1:] for p in parts for k in range(len(p))] + [p + [bit] for p in parts]
    return parts


def cpu_thread_budget(q: float, n_cores: int) -> int:
    """ALGORITHMS.md §9, CPU quota → thread budget max(1, round(q·n_cores)) (Python round: half to even;
    grid quotas are rounded from exact tenths so 0.3·10 gives 3, never 2.9999…)."""
    if not 0 < q <= 1 or n_cores < 1:
        raise ValueError(f"need 0 < q <= 1 and n_cores >= 1, got q={q}, n_cores={n_cores}")
    k = round(q * 10)
    return max(1, round(k * n_cores / 10 if abs(q * 10 - k) < 1e-9 else q * n_cores))


def mps_percentage(q: float) -> int:
    """ALGORITHMS.md §9, GPU quota → CUDA MPS active-thread percentage ⌈100·q⌉ ∈ [1, 100] (a 1e-9 guard keeps
    q = 3·0.1 → 30 although 100·(3·0.1) = 30.000000000000004 in floating point)."""
    if not 0 < q <= 1:
        raise ValueError(f"quota must satisfy 0 < q <= 1, got {q}")
    return min(100, max(1, math.ceil(100 * q - 1e-9)))


def random_profiles(rng, n: int) -> dict[str, list[float]]:
    """ALGORITHMS.md §9 property 2 generator: C_w(q) = b_w·(o_w + (1 − o_w)·max(1, q_sat/q)^α)·(1 + 3 % noise) on
    Q, made non-increasing in q by a running minimum from q = 0.1 upwards (``rng``: a numpy Generator)."""
    out = {}
    for w in range(n):
        b, o, q_sat, alpha = rng.uniform(0.2, 5.0), rng.uniform(0.0, 0.6), rng.uniform(0.1, 1.0), rng.uniform(0.5, 1.5)
        c = [b * (o + (1 - o) * max(1.0, q_sat / q) ** alpha) * (1 + 0.03 * rng.uniform(-1, 1)) for q in QUOTA_GRID]
        out[f"w{w}"] = [min(c[: k + 1]) for k in range(len(c))]
    return out
