"""Min-norm point of the simplex hull of reward-head advantages: min_{c∈Δ^N} cᵀMc (ALGORITHMS.md §6.2 solvers).

The N×N quadratic programme is solved on the host in float64: N is small (a handful of reward heads), and a device
round-trip per Frank–Wolfe iteration would cost more than the arithmetic. `vidtune.math.min_norm` uses it.
"""

from __future__ import annotations

import math
from itertools import combinations

import torch
from torch import Tensor

FW_TOL = 1e-10  # duality-gap tolerance relative to mean diag M
FW_ITERS = 250


def _pair(v11: float, v12: float, v22: float) -> float:
    """γ* of min_γ ‖γ·a1 + (1−γ)·a2‖² (ALGORITHMS.md §6.2, N = 2): clip((v22−v12)/(v11+v22−2v12), 0, 1); 0.5 when
    the denominator ≤ 1e-12·(v11 + v22) (identical heads, or both zero)."""
    den = v11 + v22 - 2.0 * v12
    if den <= 1e-12 * (v11 + v22):
        return 0.5
    return min(max((v22 - v12) / den, 0.0), 1.0)


def _quad(m: list[list[float]], c: list[float]) -> float:
    return sum(c[i] * m[i][j] * c[j] for i in range(len(c)) for j in range(len(c)))


def best_pair(gram: Tensor) -> Tensor:
    """Best two-head solution over all pairs (i < j), the Frank–Wolfe start of ALGORITHMS.md §6.2.

    gram: M, [N, N] with N ≥ 2. Each pair uses the N = 2 closed form; the lowest cᵀMc wins (first pair on ties).
    Returns c, [N] float64, supported on at most two heads. For N = 2 this is the closed form itself.
    """
    m = gram.detach().double().cpu().tolist()
    n, best, best_c = len(m), float("inf"), None
    for i, j in combinations(range(n), 2):
        g = _pair(m[i][i], m[i][j], m[j][j])
        c = [0.0] * n
        c[i], c[j] = g, 1.0 - g
        obj = _quad(m, c)
        if obj < best:
            best, best_c = obj, c
    return torch.tensor(best_c, dtype=torch.float64)


def face_correction(m: list[list[float]], c: list[float]) -> list[float]:
    """Minimise cᵀMc over the face spanned by supp(c) (Wolfe's 1976 minor cycle; the "fully corrective" step).

    m: M as nested lists [N][N]; c: a point of Δ^N. Repeatedly solve the KKT system [[M_I, 1], [1ᵀ, 0]]·(y, −λ) =
    (0, 1) on I = supp(c) (M scaled by 1/mean diag; least squares, so singular M_I is fine); if y ≥ 0 take it,
    else move from c towards y until the first coordinate reaches 0 and drop it. At most N passes; the result is
    kept only if it does not increase the objective. Returns the corrected c (a new list).
    """
    n, x = len(c), list(c)
    scale = sum(m[i][i] for i in range(n)) / n or 1.0  # M/mean diag: the border of ones stays commensurate
    for _ in range(n):
        sup = [i for i in range(n) if x[i] > 0]
        k = len(sup)
        kkt = torch.ones(k + 1, k + 1, dtype=torch.float64)
        kkt[:k, :k] = torch.tensor([[m[i][j] / scale for j in sup] for i in sup], dtype=torch.float64)
        kkt[k, k] = 0.0
        rhs = torch.zeros(k + 1, 1, dtype=torch.float64)
        rhs[k] = 1.0
        y = torch.linalg.lstsq(kkt, rhs, driver="gelsd").solution[:k, 0].tolist()
        total = sum(y)
        if not all(math.isfinite(v) for v in y) or abs(total - 1.0) > 1e-6:
            break  # numerically unusable system: keep the current point
        y = [v / total for v in y]
        if min(y) >= 0:
            for i, v in zip(sup, y):
                x[i] = v
            break
        alpha, drop = min((x[i] / (x[i] - v), i) for i, v in zip(sup, y) if v < 0)
        for i, v in zip(sup, y):
            x[i] = max(x[i] + alpha * (v - x[i]), 0.0)
        x[drop] = 0.0
    return x if _quad(m, x) <= _quad(m, c) else list(c)


def pairwise_frank_wolfe(gram: Tensor, c0: Tensor | None = None, *, tol: float = FW_TOL, max_iter: int = FW_ITERS,
                         correct: bool = True) -> tuple[Tensor, int]:
    """min_{c∈Δ^N} cᵀMc by pairwise Frank–Wolfe (ALGORITHMS.md §6.2, N > 2; Lacoste-Julien & Jaggi 2015).

    gram: M, [N, N] symmetric PSD; c0: start on the simplex (default `best_pair`). Each iteration: g = M·c;
    t = argmin_i g_i; a = argmax_{i: c_i>0} g_i (first index on ties); stop if cᵀg − g_t ≤ tol·mean diag M;
    else move γ = clip((g_a − g_t)/(M_tt + M_aa − 2M_ta), 0, c_a) of mass from a to t (γ = c_a if the denominator
    ≤ 0). correct=True (project choice) follows each step with `face_correction`, which makes the method finite:
    plain pairwise steps converge only linearly and, for strongly correlated heads (cond M ≳ 10³), stay ≈ 1e-4·mean
    diag M above the minimum after 250 iterations. Returns (c [N] float64, iterations = steps taken, ≤ max_iter).
    """
    m = gram.detach().double().cpu().tolist()
    n = len(m)
    c = (best_pair(gram) if c0 is None else c0.detach().double().cpu()).tolist()
    stop = tol * sum(m[i][i] for i in range(n)) / n
    it = 0
    while it < max_iter:
        g = [sum(m[i][j] * c[j] for j in range(n)) for i in range(n)]
        t = min(range(n), key=g.__getitem__)
        a = max((i for i in range(n) if c[i] > 0), key=g.__getitem__)
        if sum(ci * gi for ci, gi in zip(c, g)) - g[t] <= stop:
            break
        den = m[t][t] + m[a][a] - 2.0 * m[t][a]
        gamma = c[a] if den <= 0 else min(max((g[a] - g[t]) / den, 0.0), c[a])
        c[a] -= gamma
        c[t] += gamma
        it += 1
        if correct:
            c = face_correction(m, c)
    return torch.tensor(c, dtype=torch.float64), it


def solve_min_norm(gram: Tensor) -> tuple[Tensor, int]:
    """c* = argmin_{c∈Δ^N} cᵀMc (ALGORITHMS.md §6.2): N = 1 → (1); N = 2 → closed form; N > 2 → `pairwise_frank_wolfe`
    from the best pair, with face corrections. gram: M, [N, N]. Returns (c [N] float64, iterations; 0 for N ≤ 2)."""
    n = gram.shape[0]
    if n == 1:
        return torch.ones(1, dtype=torch.float64), 0
    if n == 2:
        return best_pair(gram), 0
    return pairwise_frank_wolfe(gram)
