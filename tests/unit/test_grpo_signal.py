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


def test_the_competence_curriculum_logs_w_c_d_u_m_sd_tau_and_the_phase():
    """§5 logs every step w, c, d, u, m, sd and τ. Bounds [0, 1] make the components the head scores; P = 2 groups
    of G = 2. Visual 0.6 ± 0.1 in both groups: m = 0.6, sd = std_u(0.5, 0.7) = 0.1414; c = sigmoid(20·(0.6 − 0.75))."""
    import math

    from vidtune.stages.grpo_signal import compute_signal

    heads = ('[{reward: verifier, component: semantic, lo: 0, hi: 1}, {reward: sharpness, component: visual, lo: 0, '
             'hi: 1}, {reward: flicker, component: temporal, lo: 0, hi: 1}]')
    cfg = load_recipe(None, ["grpo.curriculum.enabled=true", "grpo.group_size=2", f"grpo.reward.heads={heads}"]).grpo
    x = torch.tensor([[0.2, 0.5, 0.9], [0.3, 0.7, 0.9], [0.2, 0.5, 0.9], [0.3, 0.7, 0.9]])  # semantic, visual, temporal
    sig, _ = compute_signal(x, x.mean(1), torch.ones(4, dtype=torch.bool), None, SignalState(), cfg)
    logs = sig.logs
    assert logs["curriculum/m_visual"] == pytest.approx(0.6) and logs["curriculum/m_semantic"] == pytest.approx(0.25)
    assert logs["curriculum/sd_visual"] == pytest.approx(math.sqrt(0.02), rel=1e-5)
    assert logs["curriculum/sd_temporal"] == 0.0 and logs["curriculum/d_temporal"] == 0.0
    assert logs["curriculum/c_visual"] == pytest.approx(1 / (1 + math.exp(-20 * (0.6 - 0.75))), rel=1e-5)
    assert logs["curriculum/u_temporal"] == pytest.approx(1.0)  # no spread: done (§5, exhausted)
    assert all(logs[f"curriculum/tau_{c}"] == pytest.approx(0.75) for c in ("visual", "temporal", "semantic"))
    w = {c: logs[f"curriculum/w_{c}"] for c in ("visual", "temporal", "semantic")}
    assert sum(w.values()) == pytest.approx(1.0) and logs["curriculum/phase"] == max(w, key=w.get) == "visual"
    assert logs["curriculum/stale"] == 0
