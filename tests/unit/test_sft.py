"""ALGORITHMS.md §7 property tests on the tiny model: zero-initialised fusion, frozen backbone, gradient
accumulation invariance, the flow-matching loss limit."""

import copy

import torch

from vidtune.math.flow_matching import (per_sample_mse, velocity_from_x0, velocity_target, weighted_fm_loss,
                                        x0_from_velocity)
from vidtune.math.structure_weights import epe_loss
from vidtune.stages.fm_step import draw_batch, fm_loss


def _video(n=4, seed=0):
    return torch.rand(n, 4, 3, 16, 16, generator=torch.Generator().manual_seed(seed))


def test_zero_initialised_fusion_leaves_outputs_bitwise_unchanged(tiny_policy):
    """Property 3: with the branch attached the output is bit-identical; Z still gets a non-zero gradient and the
    head's parameters get gradient from the EPE term."""
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.1)
    x = torch.randn(2, 3, 4, 16, 16)
    t = torch.tensor([0.3, 0.8])
    cond = tiny_policy.encode_prompts(["a red circle", "one small blue square falls"])
    with torch.no_grad():
        before = tiny_policy.velocity(x, t, cond)
    tiny_policy.attach_motion_branch(1)
    with torch.no_grad():
        after = tiny_policy.velocity(x, t, cond)
    assert torch.equal(before, after)
    v, flow = tiny_policy.velocity_and_flow(x, t, cond)
    assert flow.shape == (2, 3, 2, 2, 2)
    loss = v.square().mean() + 0.1 * epe_loss(flow, torch.ones_like(flow))
    loss.backward()
    br = tiny_policy.net.branch
    assert float(br.zero.weight.grad.abs().sum()) > 0
    assert float(br.to_flow.weight.grad.abs().sum()) > 0 and float(br.phi[0].weight.grad.abs().sum()) > 0


def test_frozen_backbone_is_bitwise_unchanged_after_training(tiny_policy):
    """Property 4: after k optimiser steps every backbone tensor is unchanged; the optimiser holds only decoder-level
    parameters and the branch."""
    tiny_policy.attach_motion_branch(1)
    params = tiny_policy.freeze_backbone()
    backbone = {n: p.detach().clone() for n, p in tiny_policy.named_parameters() if not p.requires_grad}
    allowed = {id(p) for m in tiny_policy.net.decoder_modules() for p in m.parameters()}
    opt = torch.optim.AdamW(params, lr=1e-2)
    assert all(id(p) in allowed for g in opt.param_groups for p in g["params"])
    assert any(n.startswith("net.blocks.0.") for n in backbone) and not any(
        n.startswith("net.branch") for n in backbone)
    video = _video()
    for step in range(3):
        fb = draw_batch(step, 0, 4, 4, 0.1, 0.3, "logit_normal")
        out = fm_loss(tiny_policy, video, ["a red circle"] * 4, fb, None, torch.randn(4, 3, 2, 2, 2), 0.1)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
    for n, p in tiny_policy.named_parameters():
        if n in backbone:
            assert torch.equal(p, backbone[n]), n
    assert not torch.equal(tiny_policy.net.final.weight, torch.zeros_like(tiny_policy.net.final.weight))


def test_gradient_accumulation_1x8_equals_8x1(tiny_policy):
    """Property 6 (fp64): the gradient of the weighted loss over 8 samples equals the sum of 8 single-sample
    backward passes of (1/8)·ω_b·e_b (same t, ε, prompts)."""
    policy = tiny_policy.double()
    with torch.no_grad():
        policy.net.final.weight.normal_(std=0.1)
    g = torch.Generator().manual_seed(3)
    x0 = torch.rand(8, 3, 4, 16, 16, generator=g, dtype=torch.float64) * 2 - 1
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    t = torch.rand(8, generator=g, dtype=torch.float64)
    w = torch.rand(8, generator=g, dtype=torch.float64) + 0.5
    cond = policy.encode_prompts(["a red circle", "two small green squares move left"] * 4)
    xt = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps

    def grads():
        return torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])

    policy.zero_grad()
    weighted_fm_loss(per_sample_mse(policy.velocity(xt, t, cond), velocity_target(x0, eps)), w).backward()
    full = grads()
    policy.zero_grad()
    for b in range(8):
        c = {k: v[b : b + 1] for k, v in cond.items()}
        e = per_sample_mse(policy.velocity(xt[b : b + 1], t[b : b + 1], c), velocity_target(x0[b : b + 1],
                                                                                         eps[b : b + 1]))
        (w[b] * e.sum() / 8).backward()
    assert torch.allclose(grads(), full, rtol=1e-6, atol=1e-12)
    policy.float()


def test_loss_with_zero_velocity_is_mean_square_of_target():
    """Property 2: v_θ ≡ 0 ⇒ L_FM = mean((ε − x_0)²); hand case x_0 = 1, ε = 3 ⇒ 4."""
    x0, eps = torch.ones(2, 3, 2, 2, 2), torch.full((2, 3, 2, 2, 2), 3.0)
    assert float(weighted_fm_loss(per_sample_mse(torch.zeros_like(x0), velocity_target(x0, eps)))) == 4.0


def test_lora_training_leaves_base_weights_untouched(tiny_policy):
    from vidtune.models.lora import add_lora, adapters_disabled, merge_lora

    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.1)  # zero output layer would hide what the adapters do
    base = copy.deepcopy(tiny_policy)
    add_lora(tiny_policy.net, 2, ("q", "kv", "out"))
    params = [p for p in tiny_policy.parameters() if p.requires_grad]
    assert params and all("lora_" in n for n, p in tiny_policy.named_parameters() if p.requires_grad)
    opt = torch.optim.AdamW(params, lr=1e-2)
    fb = draw_batch(0, 0, 4, 4, 0.0, 0.0, "logit_normal")
    for _ in range(2):
        opt.zero_grad()
        fm_loss(tiny_policy, _video(), ["a red circle"] * 4, fb).loss.backward()
        opt.step()
    x, t = torch.randn(1, 3, 4, 16, 16), torch.tensor([0.5])
    cond = base.encode_prompts(["a red circle"])
    with torch.no_grad(), adapters_disabled(tiny_policy):
        assert torch.equal(tiny_policy.velocity(x, t, cond), base.velocity(x, t, cond))
    merged = merge_lora(copy.deepcopy(tiny_policy))
    with torch.no_grad():
        assert not torch.allclose(tiny_policy.velocity(x, t, cond), base.velocity(x, t, cond))
        assert torch.allclose(merged.velocity(x, t, cond), tiny_policy.velocity(x, t, cond), atol=1e-5)


def test_physics_branch_initialisation_depends_only_on_the_seed(tmp_path, tiny_policy):
    """The motion branch's initial weights come from run.seed, not from the global RNG state."""
    from vidtune.config import load_recipe
    from vidtune.stages.sft import trainable_policy

    model = tiny_policy.save_pretrained(tmp_path / "m")
    recipe = load_recipe(None, [f"model.init={model}", "world.frames=4", "world.size=16", "sft.physics.enabled=true"])
    a = trainable_policy(recipe)
    torch.randn(100)  # move the global RNG
    b = trainable_policy(recipe)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_t_loc_moves_the_flow_times_toward_noise():
    """pretrain.t_loc: t = sigmoid(μ + n), so the median flow time is sigmoid(μ) (0.5 at μ = 0, 0.69 at μ = 0.8);
    the rest of the batch's draws (clips, dropout, I2V) do not depend on it."""
    base, shifted = draw_batch(0, 0, 64, 4096, 0.1, 0.3, "logit_normal"), \
        draw_batch(0, 0, 64, 4096, 0.1, 0.3, "logit_normal", t_loc=0.8)
    assert abs(float(base.t.median()) - 0.5) < 0.02
    assert abs(float(shifted.t.median()) - float(torch.sigmoid(torch.tensor(0.8)))) < 0.02
    assert torch.equal(base.index, shifted.index) and torch.equal(base.drop, shifted.drop)


def test_x0_from_velocity_inverts_velocity_from_x0_by_hand():
    """x_t = 0.5, t = 0.5, v = 0.4 → x̂_0 = 0.5 − 0.5·0.4 = 0.3; and back: (0.5 − 0.3)/0.5 = 0.4."""
    xt, t = torch.full((2, 3), 0.5), torch.tensor([0.5, 0.5])
    x0 = x0_from_velocity(xt, torch.full((2, 3), 0.4), t)
    assert torch.allclose(x0, torch.full((2, 3), 0.3))
    assert torch.allclose(velocity_from_x0(xt, x0, t), torch.full((2, 3), 0.4))


def test_physics_sft_refuses_a_temporal_patch(tmp_path):
    """The flow head pairs token frames; with patch (2, ·, ·) they are not the renderer's consecutive pixel frames."""
    import pytest

    from vidtune.config import load_recipe
    from vidtune.errors import VidtuneError
    from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
    from vidtune.stages.sft import trainable_policy

    model = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(2, 8, 8), hidden=32, depth=2, heads=2,
                                       text_layers=1)).save_pretrained(tmp_path / "m")
    recipe = load_recipe(None, [f"model.init={model}", "world.frames=4", "world.size=16", "sft.physics.enabled=true"])
    with pytest.raises(VidtuneError, match=r"temporal patch of 1 .* \(2, 8, 8\)"):
        trainable_policy(recipe)


def test_motion_emphasis_weights_by_hand():
    """Frames [0, 0], [1, 0], [1, 0] (C = 1, one row of 2 pixels), λ = 2: d = [1, 0], [1, 0], [0, 0]; 1 + 2d sums to
    10 over 6 elements → m = [1.8, 0.6], [1.8, 0.6], [0.6, 0.6] (mean 1). A static clip and λ = 0 give m ≡ 1."""
    from vidtune.math.flow_matching import motion_emphasis

    x0 = torch.tensor([[0.0, 0.0], [1.0, 0.0], [1.0, 0.0]]).view(1, 1, 3, 1, 2)
    m = motion_emphasis(x0, 2.0)
    assert torch.allclose(m.view(3, 2), torch.tensor([[1.8, 0.6], [1.8, 0.6], [0.6, 0.6]]))
    assert torch.equal(motion_emphasis(torch.ones(2, 3, 4, 2, 2), 5.0), torch.ones(2, 1, 4, 2, 2))
    assert torch.allclose(motion_emphasis(torch.rand(2, 3, 4, 2, 2), 0.0), torch.ones(2, 1, 4, 2, 2))


def test_weighted_per_sample_mse_by_hand():
    """e = mean(m·(p − t)²): errors (1, 2) with weights (1.5, 0.5) → (1.5·1 + 0.5·4)/2 = 1.75; unweighted 2.5."""
    from vidtune.math.flow_matching import per_sample_mse

    pred, target = torch.tensor([[1.0, 2.0]]), torch.zeros(1, 2)
    assert per_sample_mse(pred, target).item() == 2.5
    assert per_sample_mse(pred, target, torch.tensor([[1.5, 0.5]])).item() == 1.75


def test_motion_emphasis_changes_the_loss_of_moving_clips_only(tiny_policy):
    from vidtune.stages.fm_step import draw_batch, fm_loss

    c = tiny_policy.config
    moving = torch.rand(2, c.frames, 3, c.size, c.size, generator=torch.Generator().manual_seed(0))
    still = moving[:, :1].expand(-1, c.frames, -1, -1, -1).contiguous()
    with torch.no_grad():
        for video, changes in ((moving, True), (still, False)):
            plain, emph = (fm_loss(tiny_policy, video, ["a red circle"] * 2, draw_batch(0, 0, 2, 2, 0.0, 0.0,
                                                                                      "logit_normal"), emphasis=lam)
                           for lam in (0.0, 3.0))
            assert torch.equal(plain.errors, emph.errors) != changes
