"""WanVideoPolicy on tiny random diffusers components (2 layers, 9 frames, 16×16 → latents 16×3×2×2; ENVIRONMENT.md
§3a): protocol shapes, parity with diffusers' pipelines, one SFT / GRPO (± ViPO) / DPO step that moves only the
LoRA weights, LoRA save → diffusers load → identical outputs, and clear errors for bad input (DESIGN.md §4)."""

from __future__ import annotations

import json

import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.models.wan import WanConfig, WanVideoPolicy
from vidtune.models.wan_io import LORA_WEIGHTS, LORA_WEIGHTS_2, load_lora_files, tiny_wan_components

CFG = WanConfig(frames=9, height=16, width=16, max_sequence_length=16)
PROMPTS = ["a red ball rolls left", "a cat jumps"]


def make(seed=0, config=CFG, **kw) -> WanVideoPolicy:
    return WanVideoPolicy.from_components(config, **tiny_wan_components(seed, **kw))


def lora_policy(seed=0, perturb=True, **kw) -> WanVideoPolicy:
    """LoRA r=4 on to_q/to_k/to_v/to_out.0; with ``perturb`` lora_B ≠ 0 so the adapters change the output."""
    p = make(seed, **kw).add_lora(4, alpha=8)
    if perturb:
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for n, q in p.named_parameters():
                if "lora_B" in n:
                    q.copy_(0.1 * torch.randn(q.shape, generator=g))
    return p


def split_params(policy):
    base = {n: q.detach().clone() for n, q in policy.named_parameters() if "lora_" not in n}
    lora = {n: q.detach().clone() for n, q in policy.named_parameters() if "lora_" in n}
    return base, lora


def assert_only_lora_moved(policy, base, lora):
    """Base weights bitwise equal, at least one LoRA tensor changed."""
    for n, q in policy.named_parameters():
        if "lora_" not in n:
            assert torch.equal(q, base[n]), f"base weight {n} changed"
    assert any(not torch.equal(q, lora[n]) for n, q in policy.named_parameters() if "lora_" in n)


def clips(n, seed=0):
    return torch.rand(n, 9, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


# ------------------------------------------------------------------------------------------------ protocol


def test_protocol_shapes_cache_and_frame_mapping():
    from vidtune.models.policy import VideoPolicy

    p = make()
    assert isinstance(p, VideoPolicy) and p.kind == "t2v"
    assert p.latent_shape(9, 16, 16) == (16, 3, 2, 2) and p.latent_shape(81, 480, 832) == (16, 21, 60, 104)
    c = p.encode_prompts(PROMPTS + [""])
    assert c["prompt_embeds"].shape == (3, 16, 32) and len(p._text_cache) == 3
    assert torch.equal(p.encode_prompts(PROMPTS[::-1])["prompt_embeds"], c["prompt_embeds"][[1, 0]])  # cache hit
    z = p.encode_video(clips(2))
    assert z.shape == (2, 16, 3, 2, 2)
    v = p.decode(z)
    assert v.shape == (2, 9, 3, 16, 16) and float(v.min()) >= 0 and float(v.max()) <= 1
    out = p.velocity(torch.randn(3, 16, 3, 2, 2), torch.tensor([0.9, 0.5, 0.1]), c)
    assert out.shape == (3, 16, 3, 2, 2) and out.dtype == torch.float32
    c1, x1 = p.encode_prompts(PROMPTS[:1]), torch.randn(1, 16, 3, 2, 2)
    assert torch.equal(p.velocity(x1, torch.tensor(0.5), c1), p.velocity(x1, torch.tensor([0.5]), c1))  # scalar t


def test_latents_are_normalised_like_the_pipeline():
    """x = (z − μ)/σ with the VAE's latents_mean/std, decode = pipeline decode of x·σ + μ."""
    p = make()
    video = clips(1)
    raw = p.vae.encode(video.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
    mean = torch.tensor(p.vae.config.latents_mean).view(1, 16, 1, 1, 1)
    std = torch.tensor(p.vae.config.latents_std).view(1, 16, 1, 1, 1)
    assert torch.allclose(p.encode_video(video), (raw - mean) / std, atol=1e-6)


def test_velocity_equals_diffusers_pipeline_t2v():
    """Our Euler loop x ← x + (σ' − σ)·v on the scheduler's σ grid reproduces WanPipeline(output_type='latent')
    exactly: v is the scheduler's model output at timestep 1000·t, no sign flip."""
    p = lora_policy()
    lat = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    ref = p.pipe(prompt=PROMPTS[0], num_inference_steps=4, guidance_scale=1.0, height=16, width=16, num_frames=9,
                 max_sequence_length=16, output_type="latent", latents=lat.clone()).frames
    p.pipe.scheduler.set_timesteps(4)
    sig, x, c = p.pipe.scheduler.sigmas, lat.clone(), p.encode_prompts(PROMPTS[:1])
    with torch.no_grad():
        for i in range(4):
            x = x + (sig[i + 1] - sig[i]) * p.velocity(x, sig[i].expand(1), c)
    assert torch.allclose(ref, x, atol=1e-6)


def test_velocity_equals_diffusers_pipeline_i2v():
    """Wan2.1-I2V layout (36 channels + CLIP image embeddings): condition = [first-frame mask, latents of
    (image, zeros…)] as in WanImageToVideoPipeline.prepare_latents; a PIL first frame gives the same latents."""
    from PIL import Image

    p = make(i2v=True)
    assert p.kind == "i2v"
    u8 = (torch.rand(16, 16, 3, generator=torch.Generator().manual_seed(4)) * 255).round().byte()
    img = u8.permute(2, 0, 1)[None].float() / 255
    lat = torch.randn(1, 16, 3, 2, 2, generator=torch.Generator().manual_seed(5))
    ref = p.pipe(image=Image.fromarray(u8.numpy()), prompt=PROMPTS[0], num_inference_steps=3, guidance_scale=1.0,
                 height=16, width=16, num_frames=9, max_sequence_length=16, output_type="latent",
                 latents=lat.clone()).frames
    c = p.encode_prompts(PROMPTS[:1], images=img)
    assert c["condition"].shape == (1, 20, 3, 2, 2) and c["image_embeds"].shape == (1, 17, 4)
    p.pipe.scheduler.set_timesteps(3)
    sig, x = p.pipe.scheduler.sigmas, lat.clone()
    with torch.no_grad():
        for i in range(3):
            x = x + (sig[i + 1] - sig[i]) * p.velocity(x, sig[i].expand(1), c)
    assert torch.allclose(ref, x, atol=1e-5)
    masked = p.encode_prompts(PROMPTS, images=img.expand(2, -1, -1, -1), image_mask=torch.tensor([1, 0]))
    assert float(masked["condition"][1].abs().max()) == 0 and float(masked["condition"][0, :4, 0].min()) == 1


def test_two_experts_route_rows_by_boundary():
    """Wan2.2 A14B: rows with 1000·t ≥ 875 use `transformer`, the others `transformer_2`, in one call."""
    p = make(two_experts=True)
    x, t = torch.randn(2, 16, 3, 2, 2), torch.tensor([0.95, 0.2])
    c = p.encode_prompts(PROMPTS)
    v = p.velocity(x, t, c)
    kw = dict(encoder_hidden_states=c["prompt_embeds"], return_dict=False)
    with torch.no_grad():
        hi = p.transformer(hidden_states=x, timestep=t * 1000, **kw)[0]
        lo = p.transformer_2(hidden_states=x, timestep=t * 1000, **kw)[0]
    assert torch.allclose(v[0], hi[0], atol=1e-6) and torch.allclose(v[1], lo[1], atol=1e-6)
    assert not torch.allclose(hi[1], lo[1])


# ------------------------------------------------------------------------------------------------ training steps


def test_sft_step_moves_only_lora():
    """One flow-matching step (stages/fm_step.fm_loss: L = mean_b (1/D)·Σ(v_θ(x_t) − (ε − x_0))²) with AdamW."""
    from vidtune.stages.fm_step import draw_batch, fm_loss

    p = lora_policy(perturb=False).train()
    base, lora = split_params(p)
    opt = torch.optim.AdamW(p.trainable_parameters(), lr=1e-2)
    fb = draw_batch(0, 0, 4, 2, p_drop=0.5, p_i2v=0.0, t_sampler="logit_normal")
    out = fm_loss(p, clips(2), PROMPTS, fb)
    out.loss.backward()
    opt.step()
    assert torch.isfinite(out.loss) and out.errors.shape == (2,)
    assert_only_lora_moved(p, base, lora)


def test_sft_step_i2v_two_experts_bf16_checkpointed():
    """The same step on a Wan2.2-style I2V pair of experts with bf16 base weights, fp32 adapters, fp32 loss and
    gradient checkpointing: LoRA of both experts trainable, base untouched."""
    from vidtune.stages.fm_step import draw_batch, fm_loss

    cfg = WanConfig(frames=9, height=16, width=16, max_sequence_length=16, dtype="bfloat16",
                    gradient_checkpointing=True)
    p = WanVideoPolicy.from_components(cfg, **tiny_wan_components(0, i2v=True, two_experts=True)).add_lora(4)
    p.train()
    assert p.dtype == torch.bfloat16 and all(q.dtype == torch.float32 for q in p.trainable_parameters())
    assert p.transformer.gradient_checkpointing and p.transformer_2.gradient_checkpointing
    base, lora = split_params(p)
    opt = torch.optim.AdamW(p.trainable_parameters(), lr=1e-2)
    fb = draw_batch(1, 0, 4, 2, p_drop=0.0, p_i2v=1.0, t_sampler="logit_normal")
    out = fm_loss(p, clips(2), PROMPTS, fb)
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    opt.step()
    assert_only_lora_moved(p, base, lora)


def test_gradient_checkpointing_gives_the_same_gradient():
    grads = []
    for ckpt in (False, True):
        p = WanVideoPolicy.from_components(WanConfig(**{**CFG.__dict__, "gradient_checkpointing": ckpt}),
                                           **tiny_wan_components(0)).add_lora(4)
        p.train()
        x = torch.randn(2, 16, 3, 2, 2, generator=torch.Generator().manual_seed(0))
        p.velocity(x, torch.tensor([0.7, 0.3]), p.encode_prompts(PROMPTS)).square().mean().backward()
        grads.append(torch.cat([q.grad.flatten() for q in p.trainable_parameters()]))
    assert float(grads[0].abs().max()) > 0 and torch.allclose(grads[0], grads[1], atol=1e-7)


@pytest.mark.parametrize("vipo", [False, True])
def test_grpo_iteration_moves_only_lora(vipo):
    """Rollout (sampling/rollout.py: 4 SDE steps, CFG 2, G = 2) → reward → group advantages → [ViPO map on the
    latent grid, causal stride 4] → grpo_objective per trained transition → backward → AdamW step."""
    from vidtune.math.advantages import group_advantages
    from vidtune.math.grpo_loss import grpo_objective
    from vidtune.math.vipo import dense_advantage, vipo_map_batch
    from vidtune.models.factory import vipo_time_layout
    from vidtune.sampling.rollout import RolloutSpec, rollout, transition_eval

    p = lora_policy(perturb=False)
    base, lora = split_params(p)
    spec = RolloutSpec(steps=4, shift=3.0, guidance=2.0, reduction="dense" if vipo else "scalar")
    rep = [q for q in PROMPTS for _ in range(2)]
    cond, uncond = p.encode_prompts(rep), p.encode_prompts([""] * 4)
    p.eval()
    ro = rollout(p, cond, uncond, rep, 2, spec, seed=0, latent_shape=p.latent_shape(9, 16, 16))
    videos = p.decode(ro.final)
    reward = videos.mean(dim=(1, 2, 3, 4))  # brightness: a deterministic stand-in judge
    adv = group_advantages(reward, 2).advantages
    if vipo:
        from transformers import Dinov2Config, Dinov2Model

        from vidtune.rewards.dino_features import DinoFeatures

        torch.manual_seed(0)
        dino = DinoFeatures(Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                                     intermediate_size=32, patch_size=4, image_size=16)),
                            short_side=16)
        feats, cover = dino.features(videos)
        vae, stride = vipo_time_layout(p)
        assert (vae, stride) == ("causal", 4)
        vb = vipo_map_batch(feats, cover, tuple(ro.states.shape[-3:]), vae=vae, stride=stride)
        assert vb.map.shape == (4, 3, 2, 2)
        adv = dense_advantage(vb.map, adv)
    p.train()
    opt = torch.optim.AdamW(p.trainable_parameters(), lr=1e-2)
    valid, n = torch.ones(4, dtype=torch.bool), ro.train_steps.shape[1]
    for col in range(n):
        te = transition_eval(p, ro, cond, uncond, torch.arange(4), col)
        obj = grpo_objective(te.logp.unsqueeze(1), ro.logp_old[:, col].unsqueeze(1), adv, valid, n_steps=n)
        assert abs(float(obj.stats.ratio_mean) - 1.0) < 1e-4  # recomputation reproduces logp_old
        obj.loss.backward()
    opt.step()
    assert_only_lora_moved(p, base, lora)


def test_dpo_step_decoupled_backward_moves_only_lora():
    """stages/dpo_step with schedule 'recompute' and π_ref = the same network with adapters disabled
    (models/factory.reference_policy, no copy); its gradient equals the 'standard' schedule's (§8 property 3)."""
    from vidtune.models.factory import AdaptersOff, reference_policy
    from vidtune.stages.dpo_step import DPOBatch, dpo_step

    p = lora_policy().train()
    ref = reference_policy(p)
    assert isinstance(ref, AdaptersOff)
    plain = make()
    x, t = torch.randn(2, 16, 3, 2, 2), torch.tensor([0.6, 0.3])
    c = p.encode_prompts(PROMPTS)
    assert torch.allclose(ref.velocity(x, t, c), plain.velocity(x, t, c).detach(), atol=1e-6)
    assert not torch.allclose(p.velocity(x, t, c), plain.velocity(x, t, c))
    g = torch.Generator().manual_seed(0)
    b = DPOBatch(p.encode_video(clips(2, 1)), p.encode_video(clips(2, 2)), c, torch.rand(2, generator=g),
                 torch.randn(2, 16, 3, 2, 2, generator=g), torch.ones(2))
    grads = {}
    for sched in ("standard", "recompute"):
        p.zero_grad(set_to_none=True)
        out = dpo_step(p, ref, b, beta=50.0, schedule=sched)
        grads[sched] = torch.cat([q.grad.flatten() for q in p.trainable_parameters()])
    assert float(out.z.abs().max()) > 0
    scale = float(grads["standard"].abs().max())
    assert torch.allclose(grads["recompute"], grads["standard"], rtol=1e-5, atol=1e-5 * scale)
    base, lora = split_params(p)
    opt = torch.optim.AdamW(p.trainable_parameters(), lr=1e-2)
    opt.step()
    assert_only_lora_moved(p, base, lora)


# ------------------------------------------------------------------------------------------------ save / load


def test_save_lora_loads_into_diffusers_pipeline_identically(tmp_path):
    """save_lora → WanPipeline.load_lora_weights on fresh components (same seed) → the same transformer outputs
    and the same pipeline latents as the in-memory policy."""
    p = lora_policy()
    p.save_lora(tmp_path / "lora")
    assert (tmp_path / "lora" / LORA_WEIGHTS).is_file()
    fresh = make()
    fresh.pipe.load_lora_weights(str(tmp_path / "lora"), weight_name=LORA_WEIGHTS)
    x, t = torch.randn(2, 16, 3, 2, 2), torch.tensor([0.8, 0.2])
    c = p.encode_prompts(PROMPTS)
    with torch.no_grad():
        ours = p.velocity(x, t, c)
        theirs = fresh.pipe.transformer(hidden_states=x, timestep=t * 1000, encoder_hidden_states=c["prompt_embeds"],
                                        return_dict=False)[0]
    assert torch.allclose(ours, theirs, atol=1e-6)
    lat = torch.randn(1, 16, 3, 2, 2)
    kw = dict(prompt=PROMPTS[0], num_inference_steps=3, guidance_scale=3.0, height=16, width=16, num_frames=9,
              max_sequence_length=16, output_type="pt")
    assert torch.allclose(p.pipe(latents=lat.clone(), **kw).frames, fresh.pipe(latents=lat.clone(), **kw).frames,
                          atol=1e-6)


def test_two_expert_lora_and_pretrained_roundtrip(tmp_path):
    """Wan2.2: both experts' adapters in two diffusers LoRA files; save_pretrained → from_pretrained (base folder
    written by WanPipeline.save_pretrained and loaded through the real from_pretrained code) → equal velocities."""
    make(two_experts=True).pipe.save_pretrained(str(tmp_path / "base"))
    p = WanVideoPolicy.from_pretrained(tmp_path / "base", CFG).add_lora(4)
    with torch.no_grad():
        for n, q in p.named_parameters():
            if "lora_B" in n:
                q.normal_(std=0.1)
    p.save_pretrained(tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / LORA_WEIGHTS_2).is_file()
    assert json.loads((tmp_path / "ckpt" / "vidtune_wan.json").read_text())["base"] == str(tmp_path / "base")
    back = WanVideoPolicy.from_pretrained(tmp_path / "ckpt", CFG)
    x, t = torch.randn(2, 16, 3, 2, 2), torch.tensor([0.95, 0.2])
    c = p.encode_prompts(PROMPTS)
    with torch.no_grad():
        assert torch.allclose(p.velocity(x, t, c), back.velocity(x, t, c), atol=1e-6)
    plain = WanVideoPolicy.from_pretrained(tmp_path / "base", CFG)
    load_lora_files(plain.pipe, tmp_path / "ckpt")
    with torch.no_grad():
        assert torch.allclose(p.velocity(x, t, c), plain.velocity(x, t, c), atol=1e-6)


# ------------------------------------------------------------------------------------------------ bad input


def test_clear_errors_for_bad_input(tmp_path, tiny_policy):
    p = make()
    with pytest.raises(VidtuneError, match="frames=10 does not fit the causal Wan VAE.*e.g. 9 or 13"):
        p.latent_shape(10, 16, 16)
    with pytest.raises(VidtuneError, match="multiples of 16"):
        p.encode_video(torch.rand(1, 9, 3, 16, 20))
    with pytest.raises(VidtuneError, match="frames=8"):
        WanVideoPolicy.from_components(WanConfig(frames=8, height=16, width=16), **tiny_wan_components(0))
    with pytest.raises(VidtuneError, match="text-to-video Wan checkpoint"):
        p.encode_prompts(PROMPTS, images=torch.rand(2, 3, 16, 16))
    assert set(p.encode_prompts(PROMPTS, images=torch.rand(2, 3, 16, 16), image_mask=torch.zeros(2))) == \
        {"prompt_embeds"}
    i2v = make(i2v=True)
    with pytest.raises(VidtuneError, match="image-to-video Wan checkpoint: encode_prompts needs `images`"):
        i2v.encode_prompts(PROMPTS)
    with pytest.raises(VidtuneError, match=r"conditioning images must be \[B, 3, 16, 16\]"):
        i2v.encode_prompts(PROMPTS, images=torch.rand(2, 3, 32, 32))
    with pytest.raises(VidtuneError, match="match no module"):
        make().add_lora(4, targets=("q", "kv"))
    tiny_policy.save_pretrained(tmp_path / "tiny")
    with pytest.raises(VidtuneError, match="not a Wan checkpoint: no model_index.json"):
        WanVideoPolicy.from_pretrained(tmp_path / "tiny", CFG)
    (tmp_path / "sd").mkdir()
    (tmp_path / "sd" / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(VidtuneError, match="names pipeline 'StableDiffusionPipeline'"):
        WanVideoPolicy.from_pretrained(tmp_path / "sd", CFG)
    with pytest.raises(VidtuneError, match="cannot read model_index.json of 'Wan-AI/no-such-repo'"):
        WanVideoPolicy.from_pretrained("Wan-AI/no-such-repo", CFG)  # offline hub miss (HF_HUB_OFFLINE=1)
    with pytest.raises(VidtuneError, match="unknown Wan policy option 'frame'.*did you mean 'frames'"):
        WanConfig.from_dict({"frame": 9})
    with pytest.raises(VidtuneError, match="no LoRA adapters"):
        p.save_lora(tmp_path / "x")


# ------------------------------------------------------------------------------------------------ recipes/factory


def test_factory_and_recipes(tmp_path, tiny_policy):
    from pathlib import Path

    from vidtune.config import load_recipe
    from vidtune.models.factory import load_policy
    from vidtune.models.tiny import TinyVideoPolicy

    recipes = sorted(Path(__file__).parents[2].joinpath("recipes").glob("wan*.yaml"))
    assert len(recipes) == 3
    for r in recipes:
        rec = load_recipe(r)
        assert rec.model.type == "wan" and (rec.model.hub_id or rec.model.path)
        WanConfig.from_dict(rec.model.options)
    make().pipe.save_pretrained(str(tmp_path / "wan"))
    rec = load_recipe(recipes[0], [f"model.path={tmp_path / 'wan'}", "model.options={frames: 9, height: 16, "
                                   "width: 16, max_sequence_length: 16}"])
    pol = load_policy(rec)
    assert isinstance(pol, WanVideoPolicy) and pol.config.frames == 9
    tiny_policy.save_pretrained(tmp_path / "tiny")
    assert isinstance(load_policy(str(tmp_path / "tiny")), TinyVideoPolicy)
    with pytest.raises(VidtuneError, match="neither a vidtune tiny model .* nor a Wan checkpoint"):
        load_policy(str(tmp_path))
