import pytest
import torch

from vidtune.config import load_recipe
from vidtune.stages.grpo_signal import SignalState, component_rewards, curriculum_bounds


def _cfg(warmup: int):
    heads = ('[{reward: verifier, component: semantic}, {reward: sharpness, component: visual, lo: 0.2, hi: 0.6},'
             ' {reward: flicker, component: temporal}]')
    return load_recipe(None, ["grpo.curriculum.enabled=true", f"grpo.curriculum.warmup_steps={warmup}",
                              f"grpo.reward.heads={heads}"]).grpo


def test_warmup_percentiles_bound_heads_without_configured_bounds_and_freeze():
    """Heads 0 and 2 have no bounds: (Q_0.01, Q_0.99) of the scores seen so far; head 1 keeps (0.2, 0.6).
    Scores 0, 1, …, 100 (with NaN ignored): Q_0.01 = 1, Q_0.99 = 99 by linear interpolation."""
    cfg, state = _cfg(warmup=2), SignalState()
    first = torch.stack([torch.arange(0.0, 51.0), torch.full((51,), 0.4), torch.full((51,), float("nan"))], 1)
    lo, hi = curriculum_bounds(first, cfg, state)
    assert lo.tolist() == pytest.approx([0.5, 0.2, 0.0]) and hi.tolist() == pytest.approx([49.5, 0.6, 1.0])
    assert state.head_bounds is None
    second = first.clone()
    second[:50, 0] = torch.arange(51.0, 101.0)
    second[50, 0] = float("nan")
    lo, hi = curriculum_bounds(second, cfg, state)
    assert lo.tolist() == pytest.approx([1.0, 0.2, 0.0]) and hi.tolist() == pytest.approx([99.0, 0.6, 1.0])
    frozen = state.head_bounds
    assert frozen is not None and state.warmup_heads == []
    lo, hi = curriculum_bounds(torch.full((4, 3), 1e6), cfg, state)  # after the warm-up nothing moves the bounds
    assert lo.tolist() == pytest.approx([1.0, 0.2, 0.0]) and hi.tolist() == pytest.approx([99.0, 0.6, 1.0])


def test_component_rewards_normalise_each_head_into_its_component():
    cfg = _cfg(warmup=1)
    heads = torch.tensor([[50.0, 0.5, 0.25]])
    comps = component_rewards(heads, cfg, torch.tensor([0.0, 0.2, 0.0]), torch.tensor([100.0, 0.6, 1.0]))
    assert comps.tolist() == [pytest.approx([0.75, 0.25, 0.5])]  # visual, temporal, semantic
