"""The embedded generator: protocol, save/load, I2V conditioning, sampling."""

import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.models.policy import VideoPolicy
from vidtune.models.tiny import load_tiny
from vidtune.sampling.ode import generate, sample_ode, seeded_noise


def test_implements_protocol_and_latent_round_trip(tiny_policy):
    assert isinstance(tiny_policy, VideoPolicy)
    video = torch.rand(2, 4, 3, 16, 16)
    lat = tiny_policy.encode_video(video)
    assert lat.shape == (2, 3, 4, 16, 16) == (2, *tiny_policy.latent_shape(4, 16, 16))
    assert torch.allclose(tiny_policy.decode(lat), video, atol=1e-6)


def test_save_load_gives_identical_outputs(tiny_policy, tmp_path):
    x = torch.randn(2, 3, 4, 16, 16)
    cond = tiny_policy.encode_prompts(["a red circle", "two small blue squares fall"])
    t = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_()  # zero-initialised output layer would hide a bad load
        ref = tiny_policy.velocity(x, t, cond)
        loaded = load_tiny(tiny_policy.save_pretrained(tmp_path / "m"))
        assert torch.equal(loaded.velocity(x, t, cond), ref)


def test_i2v_condition_changes_output_only_when_masked_in(tiny_policy):
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_()
        x = torch.randn(2, 3, 4, 16, 16)
        img = torch.rand(2, 3, 16, 16)
        t = torch.tensor([0.5, 0.5])
        base = tiny_policy.velocity(x, t, tiny_policy.encode_prompts(["a red circle"] * 2))
        on = tiny_policy.velocity(x, t, tiny_policy.encode_prompts(["a red circle"] * 2, images=img))
        off = tiny_policy.velocity(x, t, tiny_policy.encode_prompts(["a red circle"] * 2, images=img,
                                                                    image_mask=torch.zeros(2)))
    assert not torch.allclose(on, base) and torch.equal(off, base)


def test_sampling_is_per_sample_seeded(tiny_policy):
    """A sample's video depends on its seed only, not on the batch it is generated in."""
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.1)
    a = generate(tiny_policy, ["a red circle"] * 3, [1, 2, 3], steps=3, shift=1.0, guidance=2.0, batch_size=3)
    b = generate(tiny_policy, ["a red circle"], [2], steps=3, shift=1.0, guidance=2.0, batch_size=1)
    assert a.shape == (3, 4, 3, 16, 16) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.allclose(a[1], b[0], atol=1e-5)


def test_x_prediction_and_ode_sampler_land_on_predicted_clip(tiny_policy):
    """The output layer is zero-initialised, so x̂_0 ≡ 0 and v = x_t / t. Euler steps give
    x_{s+1} = x_s·(1 + Δt/t_s) = x_s·t_{s+1}/t_s, so the sampler ends exactly at x̂_0 = 0 (last step t = 1/4 → 0)."""
    noise = seeded_noise([0, 1], (3, 4, 16, 16))
    cond = tiny_policy.encode_prompts(["a red circle"] * 2)
    t = torch.full((2,), 0.5)
    with torch.no_grad():
        assert torch.allclose(tiny_policy.velocity(noise, t, cond), noise / 0.5)
    assert torch.allclose(sample_ode(tiny_policy, cond, None, noise, steps=4), torch.zeros_like(noise), atol=1e-6)


def test_bad_checkpoint_folders(tmp_path):
    with pytest.raises(VidtuneError, match="not found"):
        load_tiny(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(VidtuneError, match="no config.json"):
        load_tiny(tmp_path / "empty")
    with pytest.raises(VidtuneError, match="unknown builtin"):
        load_tiny("builtin:nope")


def test_unknown_prompt_word_is_named(tiny_policy):
    with pytest.raises(VidtuneError, match="'dragon'"):
        tiny_policy.encode_prompts(["a red dragon"])


def test_refiner_grows_without_changing_outputs_then_learns_and_round_trips(tiny_policy, tmp_path):
    x = torch.randn(2, 3, 4, 16, 16)
    cond = tiny_policy.encode_prompts(["a red circle", "two small blue squares fall"], images=torch.rand(2, 3, 16, 16))
    t = torch.tensor([0.3, 0.9])
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_()
        before = tiny_policy.velocity(x, t, cond)
        tiny_policy.attach_refiner(8)
        assert torch.equal(tiny_policy.velocity(x, t, cond), before)  # zero-initialised conv₃ and FiLM
    assert tiny_policy.config.refiner == 8 and tiny_policy.net.refiner in tiny_policy.net.decoder_modules()
    loss = tiny_policy.velocity(x, t, cond).square().mean()
    loss.backward()
    assert tiny_policy.net.refiner.conv3.weight.grad.abs().sum() > 0  # the zero layer receives gradient
    with torch.no_grad():
        tiny_policy.net.refiner.conv3.weight.normal_()
        changed = tiny_policy.velocity(x, t, cond)
        assert not torch.allclose(changed, before)
        loaded = load_tiny(tiny_policy.save_pretrained(tmp_path / "m"))
        assert loaded.config.refiner == 8 and torch.equal(loaded.velocity(x, t, cond), changed)
    with pytest.raises(VidtuneError, match="already has a refiner"):
        tiny_policy.attach_refiner(8)


def test_pretrain_grows_a_refiner_on_its_init_and_refuses_a_mismatch(tiny_policy, tmp_path):
    from vidtune.config import load_recipe
    from vidtune.stages.pretrain import build_model

    plain = tiny_policy.save_pretrained(tmp_path / "plain")
    grown = build_model(load_recipe(None, [f"model.init={plain}", "model.refiner=8"]))
    assert grown.config.refiner == 8
    assert build_model(load_recipe(None, [f"model.init={plain}"])).config.refiner == 0
    again = grown.save_pretrained(tmp_path / "grown")
    assert build_model(load_recipe(None, [f"model.init={again}"])).config.refiner == 8
    with pytest.raises(VidtuneError, match="model.refiner=16"):
        build_model(load_recipe(None, [f"model.init={again}", "model.refiner=16"]))


def test_shipped_text_encoder_is_nearly_order_blind_and_the_position_boost_is_not():
    """The shipped base pools "moves left, then moves right" and its reverse to within 2 % (a word change moves the
    pooled text by > 30 %): its positions are 50× smaller than its word embeddings. A grown position table leaves
    the encoder unchanged at zero and, once non-zero, separates the two orders."""
    from vidtune.models.tiny import load_tiny

    base = load_tiny("builtin:base").eval()
    a, b = base.encode_prompts(["one red circle moves left, then moves right",
                                "one red circle moves right, then moves left"]).values()

    def pooled_gap(policy, i: int, j: int) -> float:
        with torch.no_grad():
            pooled = policy.net.text(a, b)[1]
        return float((pooled[i] - pooled[j]).norm() / pooled[i].norm())

    order_gap = pooled_gap(base, 0, 1)
    word = base.encode_prompts(["one red circle moves left, then moves right", "one red circle falls"])
    with torch.no_grad():
        pooled = base.net.text(word["tokens"], word["mask"])[1]
    assert order_gap < 0.02 and float((pooled[0] - pooled[1]).norm() / pooled[0].norm()) > 0.3
    with torch.no_grad():
        before = base.net.text(a, b)[0]
        base.attach_text_positions(30.0)
        assert torch.equal(base.net.text(a, b)[0], before) and base.config.text_pos_gain == 30.0
        base.net.text.pos_boost.normal_(std=0.02)  # what ≈ 200 Adam steps at lr 1e-4 can reach
    assert pooled_gap(base, 0, 1) > 3 * order_gap  # measured: 0.052 vs 0.013


def test_sft_grows_text_positions_that_save_and_reload(tiny_policy, tmp_path):
    from vidtune.config import load_recipe
    from vidtune.models.tiny import load_tiny
    from vidtune.stages.sft import trainable_policy

    plain = tiny_policy.save_pretrained(tmp_path / "plain")
    grown = trainable_policy(load_recipe(None, [f"model.init={plain}", "sft.text_pos_gain=10"]))
    assert grown.config.text_pos_gain == 10 and grown.net.text.pos_boost.requires_grad
    again = load_tiny(grown.save_pretrained(tmp_path / "grown"))
    assert again.config.text_pos_gain == 10 and torch.equal(again.net.text.pos_boost, grown.net.text.pos_boost)
    with pytest.raises(VidtuneError, match="text_pos_gain=3"):
        trainable_policy(load_recipe(None, [f"model.init={tmp_path / 'grown'}", "sft.text_pos_gain=3"]))


@pytest.mark.parametrize("name, patch", [("base", (1, 8, 8)), ("base_p244", (2, 4, 4)),
                                         ("base_p244_pan", (2, 4, 4))])
def test_shipped_bases_load_and_denoise_on_their_grids(name, patch):
    """Each shipped base loads with its patch grid and denoises: for a rendered clip noised to t = 0.5, the squared
    error of its x̂_0 is under 10 % of the noisy input's (the 8×8 base: 3.7 %; a random network of its size: 28 %)."""
    from vidtune.config import load_recipe
    from vidtune.math.flow_matching import interpolate, x0_from_velocity
    from vidtune.world.dataset import examples
    from vidtune.world.grammar import caption

    policy = load_tiny(f"builtin:{name}")
    assert policy.config.patch == patch
    world = load_recipe(None).world
    ex = examples(1, 0, world)[0]
    x0 = policy.encode_video(torch.from_numpy(ex.render(world).video).permute(0, 3, 1, 2)[None])
    t = torch.full((1,), 0.5)
    xt = interpolate(x0, torch.randn(x0.shape, generator=torch.Generator().manual_seed(0)), t)
    with torch.no_grad():
        pred = x0_from_velocity(xt, policy.velocity(xt, t, policy.encode_prompts([caption(ex.scene)])), t)
    assert float((pred - x0).pow(2).mean()) < 0.1 * float((xt - x0).pow(2).mean())
