import math

import pytest
import torch

from vidtune.stages.optim_step import clipped_step


def _model_and_opt():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    return model, torch.optim.AdamW(model.parameters(), lr=0.1)


def test_finite_gradient_is_clipped_and_stepped():
    """Gradient of sum(w·x) with x = (3, 4, 0) and bias 1: norm √(9 + 16 + 0 + 1) = √26, returned before clipping."""
    model, opt = _model_and_opt()
    before = model.weight.detach().clone()
    model(torch.tensor([[3.0, 4.0, 0.0]])).sum().backward()
    gnorm = clipped_step(opt, list(model.parameters()), max_norm=1.0)
    assert math.isclose(gnorm, math.sqrt(26), rel_tol=1e-6)
    assert not torch.equal(model.weight, before)


def test_non_finite_gradient_skips_the_step_and_clears_the_gradients():
    model, opt = _model_and_opt()
    before = [p.detach().clone() for p in model.parameters()]
    (model(torch.tensor([[1.0, 2.0, 3.0]])).sum() * float("nan")).backward()
    gnorm = clipped_step(opt, list(model.parameters()), max_norm=1.0)
    assert math.isnan(gnorm)
    assert all(torch.equal(p, b) for p, b in zip(model.parameters(), before))
    assert all(p.grad is None for p in model.parameters()) and not opt.state  # Adam's moments untouched


def test_skip_guard_counts_skips_and_aborts_on_the_third_in_a_row():
    from vidtune.errors import VidtuneError
    from vidtune.stages.optim_step import SkipGuard

    guard = SkipGuard("sft")
    assert [guard.record(g, s) for s, g in enumerate([1.0, math.nan, math.inf, 0.5, math.nan, math.nan])] == \
        [False, True, True, False, True, True]  # a finite step resets the run of skips
    assert guard.total == 4 and guard.consecutive == 2
    with pytest.raises(VidtuneError, match=r"sft: 3 optimiser steps in a row .* step 7"):
        guard.record(math.nan, 7)
