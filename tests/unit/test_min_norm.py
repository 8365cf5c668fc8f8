"""ALGORITHMS.md §6.1–6.3 — min-norm balancing of reward heads at the advantage level.

Properties 6 (gates) and 7 (combine loss vs advantage gradients) need the gate and loss code and live with them.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch

from vidtune.math.min_norm import joint_advantage, mgda_sample
from vidtune.math.min_norm_solver import best_pair, pairwise_frank_wolfe

F64 = torch.float64


def exact_min(m: np.ndarray) -> float:
    """Exact min_{c∈Δ} cᵀMc by enumerating every support I: solve the KKT system [[M_I, 1], [1ᵀ, 0]]·(c_I, −λ) =
    (0, 1) — for invertible M_I this is c_I ∝ M_I⁻¹·1 — and keep feasible solutions (c_I ≥ 0, residual ≈ 0). Least
    squares also covers singular systems (B < N, duplicate heads): when the optimum's support carries a null direction
    of M, the same objective is attained on a smaller support, which the enumeration visits too."""
    n, best = m.shape[0], np.inf
    for k in range(1, n + 1):
        for sup in itertools.combinations(range(n), k):
            kkt = np.ones((k + 1, k + 1))
            kkt[:k, :k] = m[np.ix_(sup, sup)]
            kkt[k, k] = 0.0
            rhs = np.zeros(k + 1)
            rhs[k] = 1.0
            try:
                x = np.linalg.solve(kkt, rhs)
            except np.linalg.LinAlgError:
                x = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
            if not np.abs(kkt @ x - rhs).max() <= 1e-9 * (np.abs(kkt).max() * np.abs(x).max() + 1.0):
                x = np.linalg.lstsq(kkt, rhs, rcond=None)[0]  # near-singular: least-squares solution
                if np.abs(kkt @ x - rhs).max() > 1e-9 * (np.abs(kkt).max() * np.abs(x).max() + 1.0):
                    continue
            c = x[:k]
            if c.min() >= -1e-12:
                best = min(best, float(c @ m[np.ix_(sup, sup)] @ c))
    return best


def test_n1_is_plain_grpo():
    """P1: N = 1 ⇒ c = (1) and A = A_1 bit for bit (so the GRPO loss and its gradients are unchanged)."""
    a = torch.randn(12, 1, generator=torch.Generator().manual_seed(0))
    out = joint_advantage(a, a_max=None)
    assert torch.equal(out.advantage, a[:, 0]) and out.c.tolist() == [1.0] and out.iterations == 0


def test_n2_closed_form_hand_value_grid_and_frank_wolfe():
    """P2. Hand: A_1 = (1, 0), A_2 = (0, 2) ⇒ v11 = 1, v12 = 0, v22 = 4, γ* = (4 − 0)/(1 + 4) = 0.8, c = (0.8, 0.2),
    A = (0.8, 0.4), cᵀMc = 0.64 + 0.16 = 0.8. Random cases: the closed form's objective equals the minimum over a
    10⁴-point grid of γ within 1e-6·mean diag M (relative to the scale of M, since the minimum itself can be ≈ 0) and
    the Frank–Wolfe result started from (0.5, 0.5)."""
    out = joint_advantage(torch.tensor([[1.0, 0.0], [0.0, 2.0]], dtype=F64))
    torch.testing.assert_close(out.c, torch.tensor([0.8, 0.2], dtype=F64))
    torch.testing.assert_close(out.advantage, torch.tensor([0.8, 0.4], dtype=F64))
    assert float(out.objective) == 0.8 or abs(float(out.objective) - 0.8) < 1e-15
    gen = torch.Generator().manual_seed(1)
    grid = torch.linspace(0, 1, 10_001, dtype=F64)
    for case in range(50):
        a = torch.randn(16, 2, generator=gen, dtype=F64)
        if case % 2:
            a[:, 1] = 0.8 * a[:, 0] + 0.3 * a[:, 1]  # correlated heads
        m = a.T @ a
        res = joint_advantage(a, a_max=None)
        grid_obj = (grid**2 * m[0, 0] + 2 * grid * (1 - grid) * m[0, 1] + (1 - grid) ** 2 * m[1, 1]).min()
        scale = float(m.diagonal().mean())
        assert abs(float(res.objective) - float(grid_obj)) <= 1e-6 * scale
        assert float(res.objective) <= float(grid_obj) + 1e-12 * scale
        c_fw, _ = pairwise_frank_wolfe(m, torch.tensor([0.5, 0.5], dtype=F64))
        assert abs(float(c_fw @ m @ c_fw) - float(res.objective)) <= 1e-9 * scale


def test_frank_wolfe_hand_iterations_orthonormal_heads():
    """N = 3 orthonormal heads, M = I, plain pairwise steps (correct=False): best pair (0.5, 0.5, 0) with objective
    0.5. Step 1: g = (0.5, 0.5, 0), t = 3, a = 1 (first of the tie), γ = (0.5 − 0)/(1 + 1 − 0) = 0.25 ⇒ c = (0.25,
    0.5, 0.25). Step 2: g = c, t = 1, a = 2, γ = 0.25/2 = 0.125 ⇒ c = (0.375, 0.375, 0.25). It converges to (1/3, 1/3,
    1/3), objective 1/3. With the face correction (default) step 1 lands on supp = {1, 2, 3}, whose affine minimiser
    M⁻¹1/1ᵀM⁻¹1 = (1/3, 1/3, 1/3) is feasible, so the solver is exact after 1 iteration."""
    m = torch.eye(3, dtype=F64)
    torch.testing.assert_close(best_pair(m), torch.tensor([0.5, 0.5, 0.0], dtype=F64))
    c1, it1 = pairwise_frank_wolfe(m, max_iter=1, correct=False)
    torch.testing.assert_close(c1, torch.tensor([0.25, 0.5, 0.25], dtype=F64))
    c2, it2 = pairwise_frank_wolfe(m, max_iter=2, correct=False)
    torch.testing.assert_close(c2, torch.tensor([0.375, 0.375, 0.25], dtype=F64))
    c, it = pairwise_frank_wolfe(m, correct=False)
    assert (it1, it2) == (1, 2) and 2 < it <= 250
    torch.testing.assert_close(c, torch.full((3,), 1 / 3, dtype=F64), atol=1e-5, rtol=0)
    assert float(c @ m @ c) - 1 / 3 <= 1e-10  # stop rule: duality gap ≤ 1e-10·mean diag bounds the objective gap
    cc, itc = pairwise_frank_wolfe(m)
    assert itc == 1
    torch.testing.assert_close(cc, torch.full((3,), 1 / 3, dtype=F64), atol=1e-15, rtol=0)


def test_face_correction_needed_for_correlated_heads():
    """Project choice (§6.2 solver): heads A_i = k_i·base + 0.05·noise with k = (1, −0.5, 2), B = 8 (cond M ≈ 10⁴).
    Plain pairwise steps stop at the 250-iteration cap ≈ 1.5e-5·mean diag M above the exact minimum — outside the
    1e-5 bound of property 3 — while the corrected solver is exact (≤ 1e-12) after one step."""
    g = torch.Generator().manual_seed(19)
    base = torch.randn(8, 1, generator=g, dtype=F64)
    a = base * torch.tensor([[1.0, -0.5, 2.0]], dtype=F64) + 0.05 * torch.randn(8, 3, generator=g, dtype=F64)
    m = a.T @ a
    scale, exact = float(m.diagonal().mean()), exact_min(m.numpy())
    plain, it_plain = pairwise_frank_wolfe(m, correct=False)
    fixed, it_fixed = pairwise_frank_wolfe(m)
    assert it_plain == 250 and float(plain @ m @ plain) - exact > 1e-5 * scale
    assert it_fixed <= 3 and abs(float(fixed @ m @ fixed) - exact) <= 1e-12 * scale


def test_solver_matches_exact_support_enumeration():
    """P3: 1200 random problems, N ∈ {2,…,5}, B ∈ [2, 64], half with correlated heads (shared factor plus noise,
    some heads near-duplicates or sign-flipped): objective − exact minimum ≤ 1e-5·mean diag M (and ≥ −1e-9·mean
    diag M: nothing beats the exact optimum); c lies on the simplex. Needs < 10 s of CPU time (≈ 2 s here; CPU
    rather than wall time so a loaded machine does not fail it)."""
    rng = np.random.default_rng(3)
    start, worst = time.process_time(), 0.0
    for case in range(1200):
        n, b = int(rng.integers(2, 6)), int(rng.integers(2, 65))
        if case % 2:
            base = rng.normal(size=(b, 1))
            a = base * rng.normal(size=(1, n)) + rng.uniform(0.0, 1.0) * rng.normal(size=(b, n))
        else:
            a = rng.normal(size=(b, n)) * rng.uniform(0.1, 3.0, size=(1, n))
        at = torch.from_numpy(a)
        res = joint_advantage(at, a_max=None)
        m = a.T @ a
        scale = float(np.diag(m).mean())
        gap = float(res.objective) - exact_min(m)
        worst = max(worst, gap / scale)
        assert -1e-9 * scale <= gap <= 1e-5 * scale, (case, n, b, gap / scale)
        assert float(res.c.min()) >= 0.0 and abs(float(res.c.sum()) - 1.0) < 1e-12
        assert float((res.advantage - (at * res.c).sum(1)).abs().max()) <= 1e-12 * (1.0 + float(at.abs().max()))
    assert worst <= 1e-5 and time.process_time() - start < 10.0


def test_identical_opposite_and_scaled_heads():
    """P4: identical heads ⇒ denominator 0 ⇒ γ* = 0.5 and A = A_1 (N = 2; also N = 3 via Frank–Wolfe);
    A_2 = −A_1 ⇒ v12 = −v11, γ* = 2v/4v = 0.5 ⇒ A = 0; scaling every head by 2, 3.7 or 1e-3 leaves c unchanged
    (every tolerance is relative to mean diag M) up to rounding, 1e-9."""
    gen = torch.Generator().manual_seed(4)
    a1 = torch.randn(10, generator=gen, dtype=F64)
    same = joint_advantage(torch.stack([a1, a1], 1), a_max=None)
    torch.testing.assert_close(same.advantage, a1, atol=1e-14, rtol=0)
    assert same.c.tolist() == [0.5, 0.5]  # the stated tie rule (any c gives A = A_1 here)
    same3 = joint_advantage(torch.stack([a1, a1, a1], 1), a_max=None)
    torch.testing.assert_close(same3.advantage, a1, atol=1e-12, rtol=0)
    opp = joint_advantage(torch.stack([a1, -a1], 1), a_max=None)
    assert float(opp.advantage.abs().max()) <= 1e-14 and float(opp.norm) <= 1e-13
    for n in (2, 4):
        a = torch.randn(20, n, generator=gen, dtype=F64)
        c = joint_advantage(a).c
        for factor in (2.0, 3.7, 1e-3):
            torch.testing.assert_close(joint_advantage(factor * a).c, c, atol=1e-9, rtol=0)


def test_mgda_sample_closed_form_and_frank_wolfe():
    """P5. Hand: a = (0.5, 2.0) ⇒ no sign change, A = 0.5, c = (1, 0); a = (−1, 3) ⇒ A = 0, c = (3, 1)/4 (so
    0.75·(−1) + 0.25·3 = 0); a = (−2, −0.3, −1) ⇒ A = −0.3, c = e_2; a = (0.4, 0, −1) ⇒ A = 0, c = e_2 (first zero).
    Random: per sample A_b equals the Frank–Wolfe solution of the rank-1 problem M = a·aᵀ (|A_FW| = √(cᵀMc))."""
    a = torch.tensor([[0.5, 2.0, 9.0], [-1.0, 3.0, 7.0], [-2.0, -0.3, -1.0], [0.4, 0.0, -1.0]], dtype=F64)
    c, adv = mgda_sample(a)
    torch.testing.assert_close(adv, torch.tensor([0.5, 0.0, -0.3, 0.0], dtype=F64))
    torch.testing.assert_close(c, torch.tensor([[1, 0, 0], [0.75, 0.25, 0], [0, 1, 0], [0, 1, 0]], dtype=F64))
    torch.testing.assert_close((c * a).sum(1), adv)
    gen = torch.Generator().manual_seed(5)
    for n in (2, 3, 5):
        x = torch.randn(40, n, generator=gen, dtype=F64) + 0.5
        out = joint_advantage(x, mode="mgda_sample", a_max=None)
        for b in range(40):
            cf, _ = pairwise_frank_wolfe(torch.outer(x[b], x[b]))
            fw = float(cf @ x[b])
            assert abs(fw - float(out.advantage[b])) <= 1e-4 * float(x[b].abs().max())
        assert torch.allclose((out.c * x).sum(1), out.advantage, atol=1e-12)


def test_degenerate_excluded_invalid_fixed_and_clip():
    """§6.3 edge cases. M = 0 ⇒ c = (1/3, 1/3, 1/3), A = 0, degenerate flag. A NaN in head 2 on a valid sample ⇒
    head excluded, c_2 = 0, and c equals the solution without that head. Invalid samples (valid = False) are left out
    of M and get A = 0: changing their values (even to NaN) changes nothing. fixed w = (1, 3) ⇒ (0.25, 0.75).
    Clip: A = (10, −10) with A_max = 5 ⇒ (5, −5), while ‖A‖ reports the pre-clip norm √200 = 14.142136."""
    zero = joint_advantage(torch.zeros(6, 3))
    assert zero.degenerate and torch.equal(zero.advantage, torch.zeros(6))
    torch.testing.assert_close(zero.c, torch.full((3,), 1 / 3))
    gen = torch.Generator().manual_seed(6)
    a = torch.randn(16, 3, generator=gen, dtype=F64)
    bad = a.clone()
    bad[5, 1] = float("nan")
    out = joint_advantage(bad)
    ref = joint_advantage(a[:, [0, 2]])
    assert out.excluded.tolist() == [False, True, False] and float(out.c[1]) == 0.0
    torch.testing.assert_close(out.c[[0, 2]], ref.c)
    torch.testing.assert_close(out.advantage, ref.advantage)
    valid = torch.ones(16, dtype=torch.bool)
    valid[:4] = False
    junk = a.clone()
    junk[:4] = float("nan")
    v1, v2 = joint_advantage(a, valid), joint_advantage(junk, valid)
    torch.testing.assert_close(v1.c, v2.c)
    assert torch.equal(v2.advantage[:4], torch.zeros(4, dtype=F64)) and not bool(v2.excluded.any())
    torch.testing.assert_close(v1.c, joint_advantage(a[4:]).c)
    fixed = joint_advantage(a[:, :2], mode="fixed", weights=torch.tensor([1.0, 3.0]))
    torch.testing.assert_close(fixed.c, torch.tensor([0.25, 0.75], dtype=F64))
    torch.testing.assert_close(fixed.advantage, 0.25 * a[:, 0] + 0.75 * a[:, 1])
    clip = joint_advantage(torch.tensor([[10.0], [-10.0]]))
    assert clip.advantage.tolist() == [5.0, -5.0] and abs(float(clip.norm) - 200**0.5) < 1e-5


# ---------------------------------------------------------------------------------------------- combine: loss (§6.1)
def test_weighted_head_advantages_by_hand():
    from vidtune.math.min_norm import weighted_head_advantages

    adv = torch.tensor([[1.0, -7.0], [2.0, float("nan")], [3.0, 4.0]])
    c = torch.tensor([0.25, 0.75])
    out = weighted_head_advantages(adv, c, torch.tensor([True, True, False]), a_max=5.0)
    # row 0: (0.25·1, 0.75·clip(−7)=−3.75); row 1: NaN → 0; row 2 invalid → 0
    assert torch.equal(out, torch.tensor([[0.25, -3.75], [0.5, 0.0], [0.0, 0.0]]))
    per_sample = weighted_head_advantages(adv[:1], torch.tensor([[1.0, 0.0]]), a_max=None)
    assert torch.equal(per_sample, torch.tensor([[1.0, -0.0]]))


@pytest.mark.parametrize("mode", ["mgda_batch", "mgda_sample", "fixed"])
def test_combine_loss_equals_combine_advantage_at_theta_old(mode):
    """Property 7: combine `loss` and `advantage` give equal gradients at θ = θ_old."""
    from vidtune.math.grpo_loss import grpo_objective
    from vidtune.math.min_norm import joint_advantage, weighted_head_advantages

    g = torch.Generator().manual_seed(3)
    b, n, s = 12, 3, 4
    heads = torch.randn(b, n, generator=g, dtype=torch.float64)
    valid = torch.ones(b, dtype=torch.bool)
    valid[5] = False
    ja = joint_advantage(heads, valid, mode=mode, weights=torch.tensor([1.0, 2.0, 3.0]), a_max=None)
    theta = torch.randn(b, s, generator=g, dtype=torch.float64, requires_grad=True)
    grads = []
    for adv, kw in ((ja.advantage, {}), (weighted_head_advantages(heads, ja.c, valid, a_max=None), {"heads": True})):
        theta.grad = None
        obj = grpo_objective(theta * 1.0, theta.detach(), adv, valid, clip_range=0.2, **kw)
        obj.loss.backward()
        grads.append(theta.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-12)
    assert grads[0].abs().sum() > 0


def test_combine_loss_differs_where_clipping_acts():
    """Away from θ_old the forms differ: each head is clipped on its own (§6.1)."""
    from vidtune.math.grpo_loss import grpo_objective

    adv_heads = torch.tensor([[1.0, -1.0]])
    logp_old = torch.zeros(1, 1)
    logp_new = torch.full((1, 1), 0.5)  # ρ = e^0.5, far outside 1 ± 0.1
    combined = grpo_objective(logp_new, logp_old, adv_heads.sum(1), torch.tensor([True]), clip_range=0.1).loss
    per_head = grpo_objective(logp_new, logp_old, adv_heads, torch.tensor([True]), clip_range=0.1, heads=True).loss
    # combined A = 0 → ℓ = 0; per head: max(−ρ, −1.1) + max(ρ, 0.9) = −1.1 + e^0.5
    assert float(combined) == 0.0
    assert float(per_head) == pytest.approx(-1.1 + 2.718281828 ** 0.5)
