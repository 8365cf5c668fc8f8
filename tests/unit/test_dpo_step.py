"""ALGORITHMS.md §8 property 3: decoupled gradients (retain, recompute) equal standard DPO gradients; §8 property 1,
5 on the tiny model."""

import copy
import math

import pytest
import torch

from vidtune.stages.dpo_step import DPOBatch, dpo_step


def _batch(policy, n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (n, 3, 4, 16, 16)
    return DPOBatch(torch.rand(shape, generator=g) * 2 - 1, torch.rand(shape, generator=g) * 2 - 1,
                    policy.encode_prompts(["a red circle", "two small blue squares fall", "a green triangle"][:n]),
                    torch.rand(n, generator=g), torch.randn(shape, generator=g), torch.tensor([1.0, 0.5, 2.0])[:n])


def _grads(policy, ref, b, schedule, form="standard"):
    policy.zero_grad(set_to_none=True)
    out = dpo_step(policy, ref, b, beta=50.0, schedule=schedule, form=form)
    return out, torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])


@pytest.mark.parametrize("dtype,rtol", [(torch.float64, 1e-6), (torch.float32, 1e-5)])
@pytest.mark.parametrize("form", ["standard", "reference_free"])
def test_decoupled_schedules_equal_standard_gradient(tiny_policy, dtype, rtol, form):
    policy = tiny_policy.to(dtype)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.02 * torch.randn(p.shape, dtype=dtype, generator=torch.Generator().manual_seed(p.numel())))
    ref = copy.deepcopy(policy)
    with torch.no_grad():
        for p in policy.parameters():  # policy ≠ reference so that z ≠ 0
            p.add_(0.01 * torch.randn(p.shape, dtype=dtype, generator=torch.Generator().manual_seed(7 + p.numel())))
    b = _batch(policy)
    b = DPOBatch(*(x.to(dtype) if isinstance(x, torch.Tensor) else x for x in b))
    out_s, g_s = _grads(policy, ref, b, "standard", form)
    for sched in ("retain", "recompute"):
        out, g = _grads(policy, ref, b, sched, form)
        assert torch.allclose(out.loss, out_s.loss, rtol=rtol)
        assert torch.allclose(g, g_s, rtol=rtol, atol=rtol * float(g_s.abs().max())), sched
    assert float(g_s.abs().max()) > 0
    policy.float()


def test_policy_equal_reference_gives_log2_and_zero_accuracy(tiny_policy):
    """Property 1: π_θ = π_ref ⇒ z = 0, loss = log 2, implicit accuracy 0."""
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.05)
    ref = copy.deepcopy(tiny_policy)
    tiny_policy.zero_grad()
    out = dpo_step(tiny_policy, ref, _batch(tiny_policy), beta=5000.0, schedule="recompute")
    assert torch.allclose(out.z, torch.zeros(3), atol=1e-6)
    assert math.isclose(float(out.loss), math.log(2) * float(torch.tensor([1.0, 0.5, 2.0]).mean()), rel_tol=1e-5)
    assert float(out.accuracy) == 0.0
