"""ALGORITHMS.md §5 — self-paced reward curriculum: project rule `competence` and the published `taros`.

Property tests use τ = 0.75 for all j, μ_c = 0 and the defaults otherwise (s_c = 20, sd_0 = 0.02, n_h = 4,
ε_w = 1e-6, δ = 0.05, γ = 1, T_w = 1). Hand arithmetic shared by several tests:
    m = τ − 0.2 = 0.55 → c = sigmoid(−4) = 0.017986;   m = τ + 0.1 = 0.85 → c = sigmoid(2) = 0.880797
    sd = 0.05 → d = 1/(1 + 0.4⁴) = 0.975039;  sd = 0.01 → d = 1/(1 + 2⁴) = 0.058824;  sd = 0.005 → d = 1/257 = 0.003891
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.self_paced import (
    competence_init, competence_step, competence_weights, normalise_affine, percentile_bounds,
)
from vidtune.math.self_paced_taros import hoyer, taros_step

TAU = 0.75
F64 = torch.float64


def weights(m, sd):
    return competence_weights(torch.tensor(m, dtype=F64), torch.tensor(sd, dtype=F64), TAU)


def example_rewards() -> torch.Tensor:
    """One group of G = 16: visual 0.9 ± 0.005, temporal 0.5 ± 0.1, semantic 0.4 ± 0.1 (std_u exactly as stated)."""
    z = torch.linspace(-1, 1, 16, dtype=F64)
    z = (z - z.mean()) / z.std()
    return torch.stack([0.9 + 0.005 * z, 0.5 + 0.1 * z, 0.4 + 0.1 * z], dim=-1)[None]  # [1, 16, 3]


def test_p1_start_focuses_on_first_component():
    """P1: m = (0.55,)*3, sd = (0.05,)*3. u = 1 − (1 − 0.017986)·0.975039 = 0.042498.
    logit_1 = log(1 + 1e-6) + log(1 − 0.042498 + 0.05) + 0.975039 = 0.9825
    logit_2 = log(0.042498 + 1e-6) + 0.007472 + 0.975039 = −2.1758;  logit_3 = log(0.042498² + 1e-6) + … = −5.3335
    w = softmax = (0.9576, 0.0407, 0.0017) ⇒ w_1 ≥ 0.9."""
    out = weights([0.55] * 3, [0.05] * 3)
    torch.testing.assert_close(out.c, torch.full((3,), 0.017986, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.d, torch.full((3,), 0.975039, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.u, torch.full((3,), 0.042498, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logit, torch.tensor([0.9825, -2.1758, -5.3335], dtype=F64), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.w, torch.tensor([0.9576, 0.0407, 0.0017], dtype=F64), atol=1e-4, rtol=0)
    assert out.w[0] >= 0.9 and int(out.phase) == 0


def test_p2_hand_over_to_second_then_third():
    """P2: m_1 = 0.85, sd_1 = 0.01 ⇒ u_1 = 1 − 0.119203·0.058824 = 0.992988; logits (−2.8057, 0.9755, −2.1828)
    ⇒ w = (0.0214, 0.9387, 0.0399), w_2 ≥ 0.9. Then also m_2 = 0.85, sd_2 = 0.01: logits (−2.8057, −2.8127, 0.9684)
    ⇒ w = (0.0220, 0.0218, 0.9562), w_3 ≥ 0.9."""
    first = weights([0.85, 0.55, 0.55], [0.01, 0.05, 0.05])
    torch.testing.assert_close(first.w, torch.tensor([0.0214, 0.9387, 0.0399], dtype=F64), atol=1e-4, rtol=0)
    assert first.w[1] >= 0.9 and int(first.phase) == 1
    second = weights([0.85, 0.85, 0.55], [0.01, 0.01, 0.05])
    torch.testing.assert_close(second.w, torch.tensor([0.0220, 0.0218, 0.9562], dtype=F64), atol=1e-4, rtol=0)
    assert second.w[2] >= 0.9 and int(second.phase) == 2


def test_p3_regression_returns_to_first():
    """P3: second P2 state with m_1 = 0.55, sd_1 = 0.05 ⇒ u_1 = 0.042498 gates the later components:
    logits (0.9825, log(0.042498)+log(1−0.992988+0.05)+0.058824 = −5.9639, −2.1828) ⇒ w = (0.9586, 0.0009, 0.0405)."""
    out = weights([0.55, 0.85, 0.55], [0.05, 0.01, 0.05])
    torch.testing.assert_close(out.w, torch.tensor([0.9586, 0.0009, 0.0405], dtype=F64), atol=1e-4, rtol=0)
    assert out.w[0] >= 0.9 and int(out.phase) == 0


def test_exhausted_component_is_passable():
    """m_1 = 0.55 (far below τ) but sd_1 = 0.005 ⇒ d_1 = 1/257, u_1 = 1 − 0.982014/257 = 0.996179 (done: cannot
    rank samples); logits (−2.9182, 0.9787, −2.1796) ⇒ w = (0.0191, 0.9409, 0.0400), w_2 ≥ 0.9."""
    out = weights([0.55] * 3, [0.005, 0.05, 0.05])
    torch.testing.assert_close(out.u[0], torch.tensor(0.996179, dtype=F64), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.w, torch.tensor([0.0191, 0.9409, 0.0400], dtype=F64), atol=1e-4, rtol=0)
    assert out.w[1] >= 0.9


@settings(max_examples=300, deadline=None)
@given(
    m=st.lists(st.floats(0.0, 1.0), min_size=3, max_size=3),
    sd=st.lists(st.floats(0.0, 0.3), min_size=3, max_size=3),
    j=st.integers(0, 2), sign=st.sampled_from([-1.0, 1.0]),
)
def test_p4_normalised_smooth_and_phase_is_argmax(m, sd, j, sign):
    """P4: Σ w = 1 within 1e-12; a 0.001 change of m_j moves no weight by > 0.01 (|∂logit/∂m| ≤ s_c = 20, so a
    logit moves ≤ 0.02 and a softmax weight ≤ ¼·0.04 = 0.01); the logged phase is argmax w."""
    base = weights(m, sd)
    assert abs(float(base.w.sum()) - 1.0) <= 1e-12
    assert int(base.phase) == int(base.w.argmax())
    m2 = list(m)
    m2[j] += sign * 0.001
    assert float((weights(m2, sd).w - base.w).abs().max()) <= 0.01


def test_no_spread_limit_and_all_done_uniform():
    """d ≡ 1 limit (sd ≫ sd_0): logit_j → log(Π_{i<j} c_i + ε_w) + log(1 − c_j + δ) + γ. All components done
    (m = 1, sd = 0 ⇒ d = 0, u = 1): every logit = log(1 + ε_w) + log(δ) + 0 ⇒ w = (1/3, 1/3, 1/3) exactly."""
    m = torch.tensor([0.8, 0.7, 0.6], dtype=F64)
    out = competence_weights(m, torch.full((3,), 1e3, dtype=F64), TAU)
    c = torch.sigmoid(20 * (m - TAU))
    prefix = torch.stack([torch.tensor(1.0, dtype=F64), c[0], c[0] * c[1]])
    expect = torch.log(prefix + 1e-6) + torch.log(1 - c + 0.05) + 1
    torch.testing.assert_close(out.logit, expect, atol=1e-9, rtol=0)
    done = weights([1.0] * 3, [0.0] * 3)
    torch.testing.assert_close(done.w, torch.full((3,), 1 / 3, dtype=F64), atol=1e-12, rtol=0)


def test_project_rule_on_documented_example():
    """§5 example, G = 16, μ_c = 0, through `competence_step`: m = (0.9, 0.5, 0.4), sd = (0.005, 0.1, 0.1)
    c = (sigmoid(3), sigmoid(−5), sigmoid(−7)) = (0.952574, 0.006693, 0.000911), d = (1/257, 0.998403, 0.998403)
    logits (−2.9882, 1.0391, −3.7492) ⇒ w = (0.0174, 0.9745, 0.0081) ≈ the stated (0.02, 0.97, 0.01); phase 1."""
    out = competence_step(competence_init(3), example_rewards(), momentum=0.0)
    torch.testing.assert_close(out.m, torch.tensor([0.9, 0.5, 0.4], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.sd, torch.tensor([0.005, 0.1, 0.1], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(out.w, torch.tensor([0.0174, 0.9745, 0.0081], dtype=F64), atol=1e-4, rtol=0)
    assert int(out.phase) == 1
    torch.testing.assert_close(out.reward, (example_rewards()[0] * out.w).sum(-1)[None], atol=1e-12, rtol=0)


def test_step_statistics_ema_and_invalid_samples():
    """P = 2, G = 3, J = 1. Step 1: group 0 = (0.2, 0.4, 0.6), group 1 = (0.5, 0.7, NaN) ⇒ m = 2.4/5 = 0.48;
    std_u = (0.2, 0.141421) ⇒ sd = 0.170711 (EMA starts at the first value). Step 2 (μ_c = 0.8): group 0 = (1,1,1),
    group 1 = (0, NaN, NaN) ⇒ m_now = 3/4 = 0.75, sd_now = 0 (only group 0 has ≥ 2 valid, the single-sample group is
    left out) ⇒ m = 0.8·0.48 + 0.2·0.75 = 0.534, sd = 0.8·0.170711 = 0.136569."""
    nan = float("nan")
    r1 = torch.tensor([[0.2, 0.4, 0.6], [0.5, 0.7, nan]], dtype=F64)[..., None]
    s1 = competence_step(competence_init(1, dtype=F64), r1, momentum=0.8)
    torch.testing.assert_close(s1.m, torch.tensor([0.48], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s1.sd, torch.tensor([(0.2 + math.sqrt(0.02)) / 2], dtype=F64), atol=1e-12, rtol=0)
    assert torch.isnan(s1.reward[1, 2]) and not bool(s1.stale.any())
    r2 = torch.tensor([[1.0, 1.0, 1.0], [0.0, nan, nan]], dtype=F64)[..., None]
    s2 = competence_step(s1.state, r2, momentum=0.8)
    torch.testing.assert_close(s2.m, torch.tensor([0.534], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s2.sd, torch.tensor([0.8 * 0.170711], dtype=F64), atol=1e-6, rtol=0)


def test_component_without_valid_scores_keeps_ema_and_is_counted():
    """Component 2 is NaN everywhere in step 2 ⇒ its m, sd stay at step 1's (0.5, 0.141421) and stale = (F, T);
    component 1 updates with μ_c = 0: m = 0.9. A masked-out sample (valid = False) is ignored like a NaN."""
    r1 = torch.tensor([[[0.4, 0.4], [0.6, 0.6]]], dtype=F64)
    s1 = competence_step(competence_init(2, dtype=F64), r1, momentum=0.0)
    r2 = torch.tensor([[[0.9, float("nan")], [0.9, float("nan")], [0.0, 0.0]]], dtype=F64)
    s2 = competence_step(s1.state, r2, torch.tensor([[True, True, False]]), momentum=0.0)
    torch.testing.assert_close(s2.m, torch.tensor([0.9, 0.5], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(s2.sd[1], torch.tensor(math.sqrt(0.02), dtype=F64), atol=1e-12, rtol=0)
    assert s2.stale.tolist() == [False, True]


def test_thresholds_warm_up_then_frozen_quantile():
    """N_w = 2, q = 0.9, J = 3, P = 2 groups per step. Collected R̄ for component 1: (0.6, 0.8, 0.7, 0.9) → sorted
    (0.6, 0.7, 0.8, 0.9), position 0.9·3 = 2.7 ⇒ Q = 0.8 + 0.7·0.1 = 0.87 (inside [0.5, 0.95]); component 2 all 0.1
    ⇒ clipped to 0.5; component 3 all 1.0 ⇒ clipped to 0.95. Steps 1–2 use τ_init = 0.75, step 3 the frozen τ,
    and step 4 keeps it although the new rewards differ."""
    def batch(a: float, b: float) -> torch.Tensor:
        g = torch.tensor([[a, 0.1, 1.0], [b, 0.1, 1.0]], dtype=F64)
        return g[:, None, :].expand(2, 2, 3).clone()

    state = competence_init(3, dtype=F64)
    taus = []
    for a, b in [(0.6, 0.8), (0.7, 0.9), (0.2, 0.2), (0.3, 0.3)]:
        out = competence_step(state, batch(a, b), warmup_steps=2, quantile=0.9)
        taus.append(out.tau)
        state = out.state
    torch.testing.assert_close(taus[0], torch.full((3,), 0.75, dtype=F64))
    torch.testing.assert_close(taus[1], torch.full((3,), 0.75, dtype=F64))
    torch.testing.assert_close(taus[2], torch.tensor([0.87, 0.5, 0.95], dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(taus[3], taus[2])
    assert state.frozen and state.collected.shape == (4, 3)


def test_group_scope_uses_each_groups_statistics():
    """scope group, P = 2: group 0 has (m, sd) = (0.55, 0.05) for every component (⇒ w ≈ P1's (0.9576, …)),
    group 1 has component 1 at (0.85, 0.01) (⇒ w ≈ P2's (0.0214, 0.9387, 0.0399)); r̃_{p,g} = Σ_j w_{p,j} r_{p,g,j}."""
    z = torch.tensor([-1.0, 1.0], dtype=F64) * 0.05 / math.sqrt(2)
    g0 = torch.stack([0.55 + z] * 3, dim=-1)
    g1 = torch.stack([0.85 + z * 0.2, 0.55 + z, 0.55 + z], dim=-1)
    r = torch.stack([g0, g1])  # [2, 2, 3]
    out = competence_step(competence_init(3, dtype=F64), r, scope="group", momentum=0.0)
    assert out.w.shape == (2, 3) and out.phase.tolist() == [0, 1]
    torch.testing.assert_close(out.w[0], weights([0.55] * 3, [0.05] * 3).w, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.w[1], weights([0.85, 0.55, 0.55], [0.01, 0.05, 0.05]).w, atol=1e-12, rtol=0)
    torch.testing.assert_close(out.reward, (r * out.w[:, None, :]).sum(-1), atol=1e-12, rtol=0)


def test_component_normalisation():
    """Affine map with lo = 0, hi = 10: r = (−1, 5, 12) → (0, 0.5, 1) after the clip. Percentile bounds of
    0, 1, …, 100 (linear interpolation): Q_0.01 = 1, Q_0.99 = 99; non-finite scores are ignored."""
    out = normalise_affine(torch.tensor([[-1.0], [5.0], [12.0]]), 0.0, 10.0)
    torch.testing.assert_close(out, torch.tensor([[0.0], [0.5], [1.0]]))
    scores = torch.cat([torch.arange(101, dtype=F64), torch.tensor([float("inf")], dtype=F64)])[:, None]
    lo, hi = percentile_bounds(scores)
    torch.testing.assert_close(lo, torch.tensor([1.0], dtype=F64))
    torch.testing.assert_close(hi, torch.tensor([99.0], dtype=F64))


def test_hoyer_limits_and_hand_value():
    """H(constant) = 0; H(one-hot) = 1; H(1, 1, 0, 0) = (√4 − 2/√2)/(√4 − 1) = 2 − √2 = 0.585786; H of one valid
    entry = 0 (n ≤ 1); masking the two zeros of (1, 1, 0, 0) leaves a constant pair ⇒ 0."""
    assert float(hoyer(torch.full((8,), 0.3))) == pytest.approx(0.0, abs=1e-6)  # fp32 rounding
    assert float(hoyer(torch.tensor([0.0, 0.0, 0.7, 0.0]))) == pytest.approx(1.0, abs=1e-7)
    x = torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64)
    assert float(hoyer(x)) == pytest.approx(2 - math.sqrt(2), abs=1e-12)
    assert float(hoyer(torch.tensor([0.5]))) == 0.0 and float(hoyer(torch.zeros(4))) == 0.0
    assert float(hoyer(x, torch.tensor([True, True, False, False]))) == pytest.approx(0.0, abs=1e-12)


def test_taros_on_documented_example():
    """TaRoS, G = 16, τ = 0.75, β = 0.3: R̄ = (0.9, 0.5, 0.4) ⇒ sigmoid(R̄ − τ) = (0.5374, 0.4378, 0.4134); Hoyer
    ≈ (0.0000, 0.0243, 0.0374) ⇒ g ≈ (0.5301, 0.4339, 0.4246), w ≈ (0.356, 0.323, 0.320) (the stated ≈ (0.35, 0.33,
    0.32)): nearly uniform and w_1 > w_2, i.e. the mastered component gains weight (documented behaviour)."""
    out = taros_step(example_rewards())
    torch.testing.assert_close(out.w[0], torch.tensor([0.356, 0.323, 0.320], dtype=F64), atol=2e-3, rtol=0)
    assert out.w[0, 0] > out.w[0, 1] and int(out.phase[0]) == 0
    h = out.hoyer[0]
    expect_g = torch.sigmoid(out.m[0] - 0.75) + 0.3 * (h - torch.cat([h[1:], h.new_zeros(1)]))
    torch.testing.assert_close(out.g[0], expect_g)
    torch.testing.assert_close(out.reward, (example_rewards() * out.w[:, None, :]).sum(-1))
