"""runtime/fsdp.py without a process group: a name-keyed optimiser checkpoint (the form written under FSDP) restores
into a plain policy, parameter for parameter; state for a parameter the policy does not train is named."""

import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.runtime.fsdp import by_position, checkpoint_state, restore_optimizer


class Policy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))


def _stepped(policy):
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    policy.net(torch.randn(5, 3, generator=torch.Generator().manual_seed(0))).square().sum().backward()
    opt.step()
    return opt


def test_name_keyed_state_restores_into_a_plain_policy():
    policy = Policy()
    opt = _stepped(policy)
    saved = checkpoint_state(policy, opt, step=1)
    assert saved["opt_by_name"] and saved["step"] == 1
    assert set(saved["opt"]["state"]) == {"net.0.weight", "net.0.bias", "net.1.weight", "net.1.bias"}
    fresh = torch.optim.AdamW(policy.parameters(), lr=0.1)
    restore_optimizer(policy, fresh, saved)
    for p in policy.parameters():
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(fresh.state[p][k], opt.state[p][k])


def test_state_for_a_parameter_that_does_not_train_is_named():
    policy = Policy()
    saved = checkpoint_state(policy, _stepped(policy))
    policy.net[0].requires_grad_(False)
    opt = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(VidtuneError, match="net.0.bias"):
        by_position(policy, opt, saved["opt"])
