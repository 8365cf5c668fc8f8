"""ALGORITHMS.md §4 — ViPO dense advantage maps (map construction, temporal alignment, fallback, dense objective).

Properties 1–2 combine `dense_advantage` with the §2 surrogate and loss of `vidtune.math.grpo_loss`.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vidtune.math.grpo_loss import clipped_surrogate, grpo_loss, likelihood_ratio
from vidtune.math.vipo import (
    align_temporal, alignment_weights, dense_advantage, latent_frame_sets, renorm_map, vipo_map, vipo_map_batch,
)
from vidtune.math.vipo_map import frame_map, gaussian_blur, orient_components, resize_bilinear, structure_scores

F64 = torch.float64


def per_frame(n: int) -> list[list[int]]:
    return [[i] for i in range(n)]


def object_frame(h: int = 8, w: int = 8, d: int = 16, seed: int = 0) -> torch.Tensor:
    """Uniform textured background (one feature vector + 0.1 noise) with a distinct 2×2 object in the centre."""
    g = torch.Generator().manual_seed(seed)
    bg, obj = torch.randn(d, generator=g, dtype=F64), torch.randn(d, generator=g, dtype=F64)
    f = bg + 0.1 * torch.randn(h, w, d, generator=g, dtype=F64)
    f[h // 2 - 1:h // 2 + 1, w // 2 - 1:w // 2 + 1] = obj + 0.1 * torch.randn(2, 2, d, generator=g, dtype=F64)
    return f


# ---- map construction: hand values ------------------------------------------------------------------------------

def test_structure_scores_hand_example_with_sign_fallback():
    """h = w = 2 (< 3 ⇒ orientation from v_j). Patches (1, 0), (−1, 0), (0, 0.1), (0, −0.1) have mean 0.
    SVD: s² = (2, 0.02), v_1 = ±e_1, v_2 = ±e_2; sign of the largest entry of v_j ⇒ v_j = +e_j, so
    z_1 = (1, −1, 0, 0) → z'_1 = (1, 0, 0.5, 0.5); z_2 = (0, 0, 0.1, −0.1) → z'_2 = (0.5, 0.5, 1, 0).
    λ = (2, 0.02)/2.02 = (0.990099, 0.009901) ⇒ S = (0.995050, 0.004950, 0.504950, 0.495050)."""
    f = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 0.1], [0.0, -0.1]]], dtype=F64)
    lam1, lam2 = 2 / 2.02, 0.02 / 2.02
    expect = torch.tensor([[lam1 + 0.5 * lam2, 0.5 * lam2], [0.5 * lam1 + lam2, 0.5 * lam1]], dtype=F64)
    torch.testing.assert_close(structure_scores(f, k=3), expect, atol=1e-12, rtol=0)
    torch.testing.assert_close(expect, torch.tensor([[0.995050, 0.004950], [0.504950, 0.495050]], dtype=F64),
                               atol=1e-6, rtol=0)


def test_border_low_orientation_and_centre_window():
    """4×4 grid, D = 1: value 1 on the inner 2×2 (centre rows/cols ⌊4/4⌋…⌈12/4⌉−1 = 1…2), 0 on the ring. Whatever
    the feature sign, the oriented map is 1 on the centre and 0 on the border (minmax of one component, λ = 1).
    `orient_components` is unchanged when (z_j, v_j) → (−z_j, −v_j); when centre and border means tie, the sign of the
    largest-magnitude entry of v_j decides (first index on ties: v = (−2, 2) ⇒ sign −1)."""
    f = torch.zeros(4, 4, 1, dtype=F64)
    f[1:3, 1:3] = 1.0
    for sign in (1.0, -1.0):
        s = structure_scores(sign * f)
        torch.testing.assert_close(s, f[..., 0])
    z = torch.randn(2, 25, dtype=F64, generator=torch.Generator().manual_seed(1))
    v = torch.randn(2, 7, dtype=F64, generator=torch.Generator().manual_seed(2))
    flip = torch.tensor([[-1.0], [1.0]], dtype=F64)
    torch.testing.assert_close(orient_components(flip * z, flip * v, 5, 5), orient_components(z, v, 5, 5))
    # 3×3: centre rows/cols ⌊3/4⌋…⌈9/4⌉−1 = 0…2 (all patches): mean 9/9 = 1 > ring mean 4/8 = 0.5 ⇒ kept
    peak = torch.tensor([[1.0, 0.0, 1.0, 0.0, 5.0, 0.0, 1.0, 0.0, 1.0]], dtype=F64)
    assert torch.equal(orient_components(peak, torch.tensor([[-0.1, 0.2]], dtype=F64), 3, 3), peak)
    flat = torch.ones(1, 9, dtype=F64)  # centre − border = 0 ≤ 1e-6·range ⇒ sign of v's first largest entry, −2
    assert torch.equal(orient_components(flat, torch.tensor([[-2.0, 2.0]], dtype=F64), 3, 3), -flat)


def test_gaussian_blur_hand_values():
    """σ = 1, radius ⌈3σ⌉ = 3: taps e^{−i²/2}, i = −3…3, sum 2.505950 ⇒ k_0 = 0.399050, k_1 = 0.242036.
    A 9×9 centre impulse becomes k_0² = 0.159241 at the centre (separable). A 1×9 row with the impulse at column 1:
    the reflecting pad mirrors column 1 into column −1, so output[0] = k_1 + k_1 = 0.484072 and output[1] = k_0 + k_2
    (column −1 is reached at offset −2) = 0.399050 + 0.054006 = 0.453056.
    A constant map stays constant; a 1-patch axis is left alone."""
    imp = torch.zeros(9, 9, dtype=F64)
    imp[4, 4] = 1.0
    out = gaussian_blur(imp, 1.0)
    assert float(out[4, 4]) == pytest.approx(0.399050**2, abs=1e-6)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-12)
    row = torch.zeros(1, 9, dtype=F64)
    row[0, 1] = 1.0
    r = gaussian_blur(row, 1.0)
    assert float(r[0, 0]) == pytest.approx(0.484072, abs=1e-6) and float(r[0, 1]) == pytest.approx(0.453056, abs=1e-6)
    flat = torch.full((5, 4), 0.3, dtype=F64)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)


def test_resize_antialiases_only_when_shrinking():
    """Rows (0, 0, 1, 1), 4×4 → 2×2 antialiased: triangle filter of half-width 2 input pixels around input coordinate
    1.0 weighs pixels 0, 1, 2 by (0.75, 0.75, 0.25) ⇒ out = 0.25/1.75 = 1/7 and 6/7 (plain bilinear would give 0 and 1).
    Up-sizing (0, 1) → 4 columns is plain bilinear with align_corners=False: (0, 0.25, 0.75, 1)."""
    x = torch.tensor([[0.0, 0.0, 1.0, 1.0]] * 4, dtype=F64)
    torch.testing.assert_close(resize_bilinear(x, (2, 2)), torch.tensor([[1 / 7, 6 / 7]] * 2, dtype=F64))
    y = torch.tensor([[0.0, 1.0]] * 2, dtype=F64)
    torch.testing.assert_close(resize_bilinear(y, (4, 4)), torch.tensor([[0.0, 0.25, 0.75, 1.0]] * 4, dtype=F64))


def test_constant_frame_becomes_ones():
    """Identical patch features: rank 0 ⇒ S ≡ 0 ⇒ constant after blur and resize ⇒ all ones, counted constant."""
    out = frame_map(torch.full((4, 5, 3), 2.0), (6, 7))
    assert out.constant and torch.equal(out.map, torch.ones(6, 7))


# ---- temporal alignment ---------------------------------------------------------------------------------------

def test_latent_frame_sets():
    """causal s_T = 4: 𝒯_0 = {0}, 𝒯_1 = {1…4}, 𝒯_2 = {5…8}; 21 latents cover 81 frames (𝒯_20 = {77…80});
    non-causal: {0…3}, {4…7}; pixel: {k}."""
    assert [list(r) for r in latent_frame_sets(3, 4, "causal")] == [[0], [1, 2, 3, 4], [5, 6, 7, 8]]
    wan = latent_frame_sets(21, 4, "causal")
    assert list(wan[-1]) == [77, 78, 79, 80] and sum(len(r) for r in wan) == 81
    assert [list(r) for r in latent_frame_sets(2, 4, "noncausal")] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [list(r) for r in latent_frame_sets(3, 4, "pixel")] == [[0], [1], [2]]
    with pytest.raises(ValueError, match="causal"):
        latent_frame_sets(3, 4, "sideways")  # type: ignore[arg-type]


def test_p7_causal_stride_4_averages_pixel_frames():
    """P7: one feature map per pixel frame (9 frames), causal s_T = 4, before the final minmax: M[0] = S_0 and
    M[k] = mean(S_{4k−3}, …, S_{4k}) for k ≥ 1."""
    s = torch.rand(9, 3, 5, dtype=F64, generator=torch.Generator().manual_seed(0))
    m = align_temporal(s, alignment_weights(per_frame(9), latent_frame_sets(3, 4, "causal")))
    torch.testing.assert_close(m[0], s[0])
    torch.testing.assert_close(m[1], s[1:5].mean(0))
    torch.testing.assert_close(m[2], s[5:9].mean(0))


def test_alignment_weights_by_intersection_size():
    """Feature index τ covering pixel frames {2τ, 2τ+1} (9 frames ⇒ τ_4 = {8}); causal s_T = 4.
    𝒯_0 = {0}: τ_0 ∩ = 1 ⇒ M[0] = S_0. 𝒯_1 = {1…4}: |τ_0 ∩| = 1, |τ_1 ∩| = 2, |τ_2 ∩| = 1 ⇒ (S_0 + 2S_1 + S_2)/4.
    𝒯_2 = {5…8}: (S_2 + 2S_3 + S_4)/4."""
    frames = [[0, 1], [2, 3], [4, 5], [6, 7], [8]]
    w = alignment_weights(frames, latent_frame_sets(3, 4, "causal"))
    assert w.tolist() == [[1, 0, 0, 0, 0], [1, 2, 1, 0, 0], [0, 0, 1, 2, 1]]
    s = torch.rand(5, 2, 2, dtype=F64, generator=torch.Generator().manual_seed(1))
    m = align_temporal(s, w)
    torch.testing.assert_close(m[1], (s[0] + 2 * s[1] + s[2]) / 4)
    torch.testing.assert_close(m[2], (s[2] + 2 * s[3] + s[4]) / 4)


# ---- whole-sample map: properties 3–6 -----------------------------------------------------------------------------

@settings(max_examples=30, deadline=None)
@given(ff=st.integers(1, 5), h=st.integers(1, 6), w=st.integers(1, 6), d=st.integers(1, 8),
       hw=st.tuples(st.integers(1, 9), st.integers(1, 9)), seed=st.integers(0, 2**16),
       scale=st.sampled_from([0.0, 1.0]), vae=st.sampled_from(["pixel", "noncausal"]))
def test_p3_map_range_or_exact_ones(ff, h, w, d, hw, seed, scale, vae):
    """P3: M ∈ [0, 1] with min 0 and max 1, or exactly all ones with a fallback reason (scale 0 ⇒ constant features).
    Non-causal stride 2 averages pairs of frame maps, so only the final volume minmax restores min 0 / max 1."""
    g = torch.Generator().manual_seed(seed)
    feats = 1.0 + scale * torch.randn(ff, h, w, d, generator=g)
    nf = ff if vae == "pixel" else (ff + 1) // 2
    out = vipo_map(feats, per_frame(ff), (nf, *hw), vae=vae, stride=2)
    assert out.map.shape == (nf, *hw) and out.map.dtype == torch.float32
    if out.fallback is None:
        assert float(out.map.min()) == 0.0 and float(out.map.max()) == 1.0
    else:
        assert out.fallback == "range" and torch.equal(out.map, torch.ones(nf, *hw))


def test_p4_invariances():
    """P4: the map is unchanged when feature dimensions are permuted, when a constant vector is added to every patch,
    and when the features are scaled by a positive factor (SVD subspaces, centring and minmax are insensitive); SVD
    sign flips are covered by `orient_components` (test_border_low_orientation_and_centre_window)."""
    g = torch.Generator().manual_seed(3)
    feats = torch.randn(5, 6, 7, 12, generator=g, dtype=F64)
    frames, shape = per_frame(5), (2, 9, 11)
    base = vipo_map(feats, frames, shape, stride=4).map
    perm = torch.randperm(12, generator=g)
    shift = 10.0 * torch.randn(12, generator=g, dtype=F64)
    for variant in (feats[..., perm], feats + shift, 7.3 * feats, 1e-3 * feats):
        torch.testing.assert_close(vipo_map(variant, frames, shape, stride=4).map, base, atol=1e-9, rtol=0)


def test_p5_centre_object_scores_above_border():
    """P5: a distinct 2×2 object in the centre of an 8×8 textured background: on a 16×16 latent grid every centre
    value (the object's 4×4 footprint) exceeds the border mean, and the centre mean exceeds the border max."""
    f = object_frame()[None]
    m = vipo_map(f, [[0]], (1, 16, 16), vae="pixel").map[0]
    ring = torch.ones(16, 16, dtype=torch.bool)
    ring[1:-1, 1:-1] = False
    centre = m[6:10, 6:10]
    assert float(centre.min()) > float(m[ring].mean()) and float(centre.mean()) > float(m[ring].max())
    flipped = vipo_map(-f, [[0]], (1, 16, 16), vae="pixel").map[0]  # feature sign does not matter with a clear centre
    torch.testing.assert_close(flipped, m)


def test_p6_fallbacks_give_ones_with_reason():
    """P6: constant features ⇒ every frame map constant (const_frames = 3) ⇒ final range 0 ⇒ M ≡ 1, reason "range";
    a NaN/inf ⇒ "non_finite"; features None (extractor failed) ⇒ "extractor"; wrong rank, a length mismatch with the
    frame list, or a latent frame no feature frame covers ⇒ "shape". Each map is exactly ones of the latent shape."""
    shape = (2, 4, 4)
    cases = {
        "range": (torch.full((3, 4, 4, 8), 0.5), per_frame(3)),
        "non_finite": (torch.randn(3, 4, 4, 8).index_put_((torch.tensor([1]),), torch.tensor(float("nan"))),
                       per_frame(3)),
        "extractor": (None, per_frame(3)),
        "shape": (torch.randn(3, 4, 8), per_frame(3)),
    }
    for reason, (feats, frames) in cases.items():
        out = vipo_map(feats, frames, shape, vae="pixel")
        assert out.fallback == reason and torch.equal(out.map, torch.ones(shape))
    assert vipo_map(torch.full((3, 4, 4, 8), 0.5), per_frame(3), shape, vae="pixel").const_frames == 3
    inf = torch.randn(3, 4, 4, 8)
    inf[0, 0, 0, 0] = float("inf")
    assert vipo_map(inf, per_frame(3), shape, vae="pixel").fallback == "non_finite"
    assert vipo_map(torch.randn(2, 4, 4, 8), per_frame(3), shape, vae="pixel").fallback == "shape"
    uncovered = vipo_map(torch.randn(1, 4, 4, 8), per_frame(1), (2, 4, 4), stride=4)  # 𝒯_1 = {1…4}: no feature frame
    assert uncovered.fallback == "shape"


def test_batch_helper_and_dtype():
    """`vipo_map_batch` stacks per-sample maps [B, F, H, W] and keeps per-sample reasons and counts; fp64 features
    give an fp64 map, bf16 features an fp32 map."""
    good = torch.randn(5, 4, 4, 6, dtype=F64)
    out = vipo_map_batch([good, None, torch.zeros(5, 4, 4, 6, dtype=F64)], per_frame(5), (2, 3, 3))
    assert out.map.shape == (3, 2, 3, 3) and out.map.dtype == F64
    assert out.fallback == (None, "extractor", "range") and out.const_frames == (0, 0, 5)
    torch.testing.assert_close(out.map[0], vipo_map(good, per_frame(5), (2, 3, 3)).map)
    assert vipo_map(good.to(torch.bfloat16), per_frame(5), (2, 3, 3)).map.dtype == torch.float32


# ---- dense objective: properties 1, 2, 8 ---------------------------------------------------------------------------

def toy_logdensity(theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Element-wise Gaussian log-density ℓ_e = −(x − θ)²/2 − ½log 2π, [B, S, C, F, H, W] (unit std)."""
    return -(x - theta) ** 2 / 2 - 0.5 * math.log(2 * math.pi)


def test_p1_ones_map_scalar_reduction_equals_scalar_grpo():
    """P1: M ≡ 1, reduction scalar (ratio from L_scalar = mean_e ℓ_e broadcast over positions), θ ≠ θ_old so the
    clip acts on some terms: loss and gradients equal scalar GRPO's (fp64, to rounding of the mean over ν)."""
    g = torch.Generator().manual_seed(0)
    b, s, c, f, h, w = 4, 3, 2, 2, 3, 3
    x = torch.randn(b, s, c, f, h, w, generator=g, dtype=F64)
    theta0 = torch.randn(b, s, c, f, h, w, generator=g, dtype=F64)
    adv = torch.randn(b, generator=g, dtype=F64)
    valid = torch.tensor([True, True, False, True])
    l_old = toy_logdensity(theta0, x).flatten(2).mean(2)
    grads = []
    for dense in (False, True):
        theta = (theta0 + 1e-3 * torch.randn(theta0.shape, generator=torch.Generator().manual_seed(1), dtype=F64))
        theta.requires_grad_(True)
        l_new = toy_logdensity(theta, x).flatten(2).mean(2)  # [B, S]
        if dense:
            ratio = likelihood_ratio(l_new, l_old).ratio[..., None, None, None].expand(b, s, f, h, w)
            a_nu = dense_advantage(torch.ones(b, f, h, w, dtype=F64), adv)
            loss = grpo_loss(clipped_surrogate(a_nu, ratio, clip_range=1e-4), valid)
        else:
            loss = grpo_loss(clipped_surrogate(adv, likelihood_ratio(l_new, l_old).ratio, clip_range=1e-4), valid)
        loss.backward()
        grads.append((loss.detach(), theta.grad))
    torch.testing.assert_close(grads[1][0], grads[0][0], atol=1e-15, rtol=1e-12)
    torch.testing.assert_close(grads[1][1], grads[0][1], atol=1e-18, rtol=1e-12)


def test_p2_ones_map_channel_sum_gradient_is_c_times_scalar():
    """P2: M ≡ 1, reduction channel_sum (L_ν = Σ_c ℓ_{c,ν}), θ = θ_old (ρ ≡ 1, clip inactive): ∇L_dense = −Σ_b A_b
    mean_ν ∇L_ν/(S·B_valid) = C·(−Σ_b A_b ∇ mean_e ℓ_e/(S·B_valid)) = C·∇L_scalar, C = 3 here (|𝒫|·C = D)."""
    g = torch.Generator().manual_seed(2)
    b, s, c, f, h, w = 3, 2, 3, 2, 2, 4
    x = torch.randn(b, s, c, f, h, w, generator=g, dtype=F64)
    theta0 = torch.randn(b, s, c, f, h, w, generator=g, dtype=F64)
    adv = torch.randn(b, generator=g, dtype=F64)
    valid = torch.ones(b, dtype=torch.bool)
    grads = {}
    for mode in ("scalar", "channel_sum"):
        theta = theta0.clone().requires_grad_(True)
        ell = toy_logdensity(theta, x)
        if mode == "scalar":
            l_new, l_old, a = ell.flatten(2).mean(2), toy_logdensity(theta0, x).flatten(2).mean(2), adv
        else:
            l_new, l_old = ell.sum(2), toy_logdensity(theta0, x).sum(2)
            a = dense_advantage(torch.ones(b, f, h, w, dtype=F64), adv)
        ratio = likelihood_ratio(l_new, l_old).ratio
        assert torch.equal(ratio, torch.ones_like(ratio))
        grpo_loss(clipped_surrogate(a, ratio), valid).backward()
        grads[mode] = theta.grad
    torch.testing.assert_close(grads["channel_sum"], c * grads["scalar"], atol=1e-15, rtol=1e-12)


def test_p8_renorm_and_bpgo_scale():
    """P8: renorm ⇒ mean_𝒫(M) = 1 per sample (M = (0, 1, 0.5, 0.5) / 0.5 = (0, 2, 1, 1)); `vipo_map(renorm=True)` too.
    With BPGO the dense advantage of A after the RAS weight w is M·w·A: M = (0, 1, 0.5, 0.5), w = 1.5, A = −2 ⇒
    (0, −3, −1.5, −1.5). M ≡ 1 gives A broadcast exactly."""
    m = torch.tensor([0.0, 1.0, 0.5, 0.5]).reshape(1, 1, 2, 2)
    torch.testing.assert_close(renorm_map(m), torch.tensor([0.0, 2.0, 1.0, 1.0]).reshape(1, 1, 2, 2))
    feats = torch.randn(2, 5, 5, 6, generator=torch.Generator().manual_seed(4))
    out = vipo_map(feats, per_frame(2), (2, 4, 4), vae="pixel", renorm=True)
    assert out.fallback is None and float(out.map.mean()) == pytest.approx(1.0, abs=1e-6)
    a_ras = torch.tensor([1.5 * -2.0])
    torch.testing.assert_close(dense_advantage(m, a_ras), torch.tensor([0.0, -3.0, -1.5, -1.5]).reshape(1, 1, 2, 2))
    adv = torch.tensor([0.3, -1.2])
    assert torch.equal(dense_advantage(torch.ones(2, 3, 2, 2), adv), adv.reshape(2, 1, 1, 1).expand(2, 3, 2, 2))
