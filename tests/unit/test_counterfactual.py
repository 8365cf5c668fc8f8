"""Counterfactual contrastive SFT (ALGORITHMS.md §7.1, ``sft.contrastive_lambda``): the negatives' rule and
rendering, the contrastive errors by hand, and the term's wiring into the flow-matching step."""

import random

import numpy as np
import pytest
import torch

from vidtune.config import WorldConfig, load_recipe
from vidtune.errors import ConfigError
from vidtune.math.flow_matching import contrastive_errors
from vidtune.stages.fm_step import Negatives, draw_batch, fm_loss
from vidtune.world.counterfactual import counterfactual_bank, counterfactual_motions
from vidtune.world.dataset import Example, render_bank
from vidtune.world.grammar import MOTIONS, parse
from vidtune.world.render import render


def test_contrastive_errors_by_hand():
    """e − λ·n·e⁻: e = [1, 1], e⁻ = [4, 4], λ = 0.25, n = [1, 0] → [0, 1]; λ = 0 is the plain errors."""
    e, neg, has = torch.tensor([1.0, 1.0]), torch.tensor([4.0, 4.0]), torch.tensor([True, False])
    assert torch.equal(contrastive_errors(e, neg, 0.25, has), torch.tensor([0.0, 1.0]))
    assert torch.equal(contrastive_errors(e, neg, 0.0, has), e)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        contrastive_errors(e, neg, 1.0, has)


def test_contrastive_minimiser_is_the_target_pushed_away_from_the_negative():
    """The per-element minimiser of (v − v⁺)² − λ·(v − v⁻)² is (v⁺ − λ·v⁻)/(1 − λ): the gradient vanishes there."""
    vp, vn, lam = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.3, 1.0, -2.0]), 0.2
    v = ((vp - lam * vn) / (1 - lam)).requires_grad_(True)
    loss = contrastive_errors((v - vp).pow(2).sum(0, keepdim=True), (v - vn).pow(2).sum(0, keepdim=True), lam,
                              torch.tensor([True]))
    loss.sum().backward()
    assert torch.allclose(v.grad, torch.zeros(3), atol=1e-6)
    assert v[0].item() == pytest.approx(0.3)  # where target and negative agree, the target is unchanged


def test_counterfactual_motions_reverse_an_order_and_replace_a_single_motion():
    rng = random.Random(0)
    assert counterfactual_motions(("left", "fall"), rng) == ("fall", "left")
    assert counterfactual_motions(None, rng) is None and counterfactual_motions((), rng) is None
    drawn = {counterfactual_motions(("still",), rng) for _ in range(200)}
    assert drawn == {(m,) for m in MOTIONS if m != "still"}  # every other motion, never the clip's own
    mixed = {counterfactual_motions(("left", "fall"), rng, "mixed") for _ in range(100)}
    assert mixed == {("fall", "left"), ("left", "left"), ("fall", "fall")}  # reversed, first only, second only
    palindrome = counterfactual_motions(("up", "down", "up"), rng)
    assert palindrome[1:] == ("down", "up") and palindrome[0] != "up"


def test_counterfactual_render_keeps_the_first_frame_and_moves_the_objects_otherwise():
    scene = parse("one small red circle moves right, camera pans up")
    clip = render(scene, 5)
    cf = render(scene, 5, shown_motions=("left",))
    assert np.array_equal(cf.video[0], clip.video[0])  # same background, camera, start positions
    assert not np.array_equal(cf.video[-1], clip.video[-1])
    dx_true = clip.tracks[-1, 0, 0] - clip.tracks[0, 0, 0]
    dx_cf = cf.tracks[-1, 0, 0] - cf.tracks[0, 0, 0]
    assert dx_true > 2 and dx_cf < -2 and dx_cf == pytest.approx(-dx_true)
    assert np.array_equal(render(scene, 5, shown_motions=("right",)).video, clip.video)  # its own motion: itself
    with pytest.raises(Exception, match="pour"):
        render(parse("red particles pour"), 5, shown_motions=("left",))


def test_counterfactual_bank_marks_the_clips_that_have_one():
    world = WorldConfig()
    exs = [Example(parse("one small blue square moves up, then moves left"), 3),
           Example(parse("green particles pour"), 4), Example(parse("two small red circles stay still"), 5)]
    bank, has = counterfactual_bank(exs, world, seed=1)
    real = render_bank(exs, world, progress=False)
    assert has.tolist() == [True, False, True]
    assert bank.shape == real.shape and bank.dtype == torch.uint8
    assert torch.equal(bank[has][:, 0], real[has][:, 0]) and not torch.equal(bank[0], real[0])
    assert not bank[1].any()
    assert torch.equal(counterfactual_bank(exs, world, seed=1)[0], bank)  # deterministic in the seed


def test_fm_loss_subtracts_lambda_times_the_counterfactual_error(tiny_policy):
    c = tiny_policy.config
    g = torch.Generator().manual_seed(0)
    video, negative = (torch.rand(2, c.frames, 3, c.size, c.size, generator=g) for _ in range(2))
    mask = torch.tensor([True, False])
    with torch.no_grad():
        plain = fm_loss(tiny_policy, video, ["a red circle"] * 2, draw_batch(0, 0, 2, 2, 0.0, 0.0, "logit_normal"))
        out = fm_loss(tiny_policy, video, ["a red circle"] * 2, draw_batch(0, 0, 2, 2, 0.0, 0.0, "logit_normal"),
                      negatives=Negatives(negative, mask, 0.3))
    assert torch.equal(out.errors, plain.errors) and out.neg_errors is not None
    assert out.loss.item() == pytest.approx((plain.errors - 0.3 * mask * out.neg_errors).mean().item(), rel=1e-6)
    assert out.neg_errors[0] != out.errors[0]


def test_contrastive_t_min_keeps_the_term_on_high_noise_rows_only(tiny_policy):
    c = tiny_policy.config
    g = torch.Generator().manual_seed(1)
    video, negative = (torch.rand(4, c.frames, 3, c.size, c.size, generator=g) for _ in range(2))
    mask = torch.tensor([True, True, True, False])

    def fb():  # a fresh generator each call
        return draw_batch(3, 0, 4, 4, 0.0, 0.0, "uniform")

    t = fb().t
    t_min = float(t[:3].median())  # splits the rows with a negative
    with torch.no_grad():
        out = fm_loss(tiny_policy, video, ["a red circle"] * 4, fb(), negatives=Negatives(negative, mask, 0.3, t_min))
    kept = mask & (t >= t_min)
    assert 0 < int(kept.sum()) < 3
    assert out.neg_errors is not None
    assert out.loss.item() == pytest.approx((out.errors - 0.3 * kept * out.neg_errors).mean().item(), rel=1e-6)
    assert out.loss.item() != pytest.approx((out.errors - 0.3 * mask * out.neg_errors).mean().item(), rel=1e-6)


def test_contrastive_lambda_is_validated():
    assert load_recipe(None, ["sft.contrastive_lambda=0.2"]).sft.contrastive_lambda == 0.2
    with pytest.raises(ConfigError, match="contrastive_lambda"):
        load_recipe(None, ["sft.contrastive_lambda=1.0"])
    with pytest.raises(ConfigError, match="contrastive_lambda"):
        load_recipe(None, ["sft.contrastive_lambda=0.2", "sft.data.source=video_folder", "sft.data.path=x.jsonl"])
    assert load_recipe(None, ["sft.contrastive_lambda=0.2", "sft.contrastive_t_min=0.7"]).sft.contrastive_t_min == 0.7
    with pytest.raises(ConfigError, match="contrastive_t_min"):
        load_recipe(None, ["sft.contrastive_t_min=0.7"])
