"""Reward composition (rewards/compose.py, ALGORITHMS.md §6.4): gate floors and counters, fail-closed gates,
the fixed-weight scalar, invalid heads, config errors — on stub rewards with known scores, then on real ones."""

import math
import os

import cv2
import pytest
import torch

from vidtune.errors import ConfigError, VidtuneError
from vidtune.math.advantages import group_advantages
from vidtune.rewards.base import REGISTRY
from vidtune.rewards.compose import GateSpec, RewardSpec, apply_gates, build, compose, gate_decision
from vidtune.types import RewardOutput
from vidtune.world.dataset import to_tensor
from vidtune.world.grammar import parse
from vidtune.world.render import render

cv2.setNumThreads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))
NAN = math.nan


class Stub:
    """A reward returning fixed scores (and, as a gate, fixed failures); ``raises`` makes every call fail."""

    range = (0.0, 1.0)

    def __init__(self, values=(), fail=None, raises=False, is_gate=False, size=None):
        self.name, self.values, self.fail, self.raises = "stub", values, fail, raises
        self.is_gate, self.size, self.calls = is_gate, size, 0

    def __call__(self, videos, prompts, **context):
        self.calls += 1
        if self.raises:
            raise RuntimeError("judge crashed")
        scores = torch.tensor(self.values[: self.size or len(prompts)], dtype=torch.float32)
        return RewardOutput(scores, gate_failed=None if self.fail is None else torch.tensor(self.fail))


@pytest.fixture
def stubs(monkeypatch):
    def stub(values: tuple = (), fail: tuple | None = None, raises: bool = False, is_gate: bool = False,
             size: int | None = None) -> Stub:
        return Stub(values, fail, raises, is_gate, size)

    monkeypatch.setitem(REGISTRY, "stub", stub)
    return stub


VIDEOS, PROMPTS = torch.full((3, 4, 3, 8, 8), 0.5), ["a red circle"] * 3


def test_apply_gates_hand_computed():
    """Row 1 fails both gates (floors 0, −1) → min = −1; row 2 fails gate 2 only → −1; row 0 passes unchanged."""
    heads = torch.tensor([[0.9, 0.8], [0.5, 0.4], [0.7, 0.6]])
    failed = torch.tensor([[False, False], [True, True], [False, True]])
    h, s, f = apply_gates(heads, torch.tensor([0.85, 0.45, 0.65]), failed, torch.tensor([0.0, -1.0]))
    assert h.tolist() == [[pytest.approx(0.9), pytest.approx(0.8)], [-1.0, -1.0], [-1.0, -1.0]]
    assert s.tolist() == [pytest.approx(0.85), -1.0, -1.0] and math.isnan(f[0]) and f[1:].tolist() == [-1.0, -1.0]
    h0, s0, f0 = apply_gates(heads, s, torch.zeros(3, 0, dtype=torch.bool), torch.zeros(0))  # no gates
    assert torch.equal(h0, heads) and torch.isnan(f0).all()


def test_gate_decision_table():
    """own flag OR score < min_score; a non-finite score fails iff fail_closed."""
    s = torch.tensor([0.9, 0.2, NAN, 0.9])
    own = torch.tensor([False, False, False, True])
    assert gate_decision(s, own, None, True).tolist() == [False, False, True, True]
    assert gate_decision(s, own, 0.5, True).tolist() == [False, True, True, True]
    assert gate_decision(s, None, 0.5, False).tolist() == [False, True, False, False]


def test_compose_weights_floors_and_counters(stubs):
    """Heads r1 = (0.8, 0.6, 0.4), r2 = (0.2, 0.4, 1.0), r3 = NaN (weight 0, monitored only); w = (0.5, 0.25, 0):
    scalar = (0.45, 0.4, 0.45). Gate a (own predicate, floor −1) fails sample 1; gate b (min_score 0.5, default
    floor = lowest head bound = 0) fails samples 1 and 2 (score 0.3, 0.1): sample 1 → min(−1, 0) = −1, sample 2 → 0."""
    comp = build([RewardSpec("stub", {"values": (0.8, 0.6, 0.4)}, 0.5, "r1"),
                  RewardSpec("stub", {"values": (0.2, 0.4, 1.0)}, 0.25, "r2"),
                  RewardSpec("stub", {"values": (NAN, NAN, NAN)}, 0.0, "r3")],
                 [GateSpec("stub", {"values": (1.0, 1.0, 1.0), "fail": (False, True, False), "is_gate": True},
                           floor=-1.0, label="a"),
                  GateSpec("stub", {"values": (0.9, 0.3, 0.1)}, min_score=0.5, label="b")])
    out = compose(comp, VIDEOS, PROMPTS)
    assert out.head_names == ("r1", "r2", "r3") and out.heads.shape == (3, 3)
    assert out.scalar.tolist() == [pytest.approx(0.45), -1.0, 0.0]
    assert out.heads[1].tolist() == [-1.0] * 3 and out.heads[2].tolist() == [0.0] * 3
    assert out.heads[0, :2].tolist() == [pytest.approx(0.8), pytest.approx(0.2)] and math.isnan(out.heads[0, 2])
    assert out.gate_failed.tolist() == [False, True, True] and out.floor[1:].tolist() == [-1.0, 0.0]
    c = out.counters
    assert (c["gate/a/failed"], c["gate/b/failed"], c["gated"], c["head/r3/nonfinite"], c["invalid_reward"]) == \
        (1, 2, 2, 3, 0)


def test_erroring_and_nonfinite_gates_fail_closed(stubs):
    heads = [RewardSpec("stub", {"values": (0.5, 0.5, 0.5)})]
    crash = compose(build(heads, [GateSpec("stub", {"raises": True}, min_score=0.5, label="judge")]), VIDEOS, PROMPTS)
    assert crash.gate_failed.all() and crash.counters["gate/judge/error"] == 1 and crash.scalar.tolist() == [0.0] * 3
    assert "judge crashed" in crash.errors["judge"]
    lenient = compose(build(heads, [GateSpec("stub", {"raises": True}, min_score=0.5, fail_closed=False)]),
                      VIDEOS, PROMPTS)
    assert not lenient.gate_failed.any() and lenient.counters["gate/stub/error"] == 1
    nan_gate = GateSpec("stub", {"values": (0.9, NAN, 0.9)}, min_score=0.5)
    assert compose(build(heads, [nan_gate]), VIDEOS, PROMPTS).gate_failed.tolist() == [False, True, False]
    open_gate = GateSpec("stub", {"values": (0.9, NAN, 0.9)}, min_score=0.5, fail_closed=False)
    out = compose(build(heads, [open_gate]), VIDEOS, PROMPTS)
    assert not out.gate_failed.any() and out.counters["gate/stub/nonfinite"] == 1


def test_invalid_head_makes_sample_invalid_and_wrong_batch_is_an_error(stubs):
    out = compose(build([RewardSpec("stub", {"values": (0.5, NAN, 0.5)})]), VIDEOS, PROMPTS)
    assert torch.isnan(out.scalar[1]) and out.counters["invalid_reward"] == 1
    with pytest.raises(VidtuneError, match="reward 'short' returned 2 scores for a batch of 3"):
        compose(build([RewardSpec("stub", {"values": (0.5,) * 3, "size": 2}, label="short")]), VIDEOS, PROMPTS)


def test_bad_input_is_named_before_any_reward_runs(stubs):
    comp = build([RewardSpec("stub", {"values": (0.5,) * 3})], [GateSpec("stub", {"values": (1.0,) * 3},
                                                                         min_score=0.5)])
    with pytest.raises(VidtuneError, match="compose: videos must be \\[B, F, 3, H, W\\]"):
        compose(comp, VIDEOS[0], PROMPTS)
    assert comp.heads[0][2].calls == 0 and comp.gates[0][2].calls == 0


def test_config_errors_are_named(stubs):
    with pytest.raises(ConfigError, match="at least one reward"):
        build([])
    with pytest.raises(ConfigError, match="repeated: \\['stub'\\]"):
        build([RewardSpec("stub"), RewardSpec("stub")])
    with pytest.raises(ConfigError, match="reward 'stub': weight must be finite and ≥ 0, got -1"):
        build([RewardSpec("stub", weight=-1)])
    with pytest.raises(ConfigError, match="gate 'freeze': reward 'freeze' has no pass predicate; set min_score"):
        build([RewardSpec("stub")], [GateSpec("freeze")])
    with pytest.raises(ConfigError, match="safety gate, it always fails closed"):
        build([RewardSpec("stub")], [GateSpec("safety", fail_closed=False)])
    with pytest.raises(ConfigError, match="unknown key\\(s\\) \\['wieght'\\]"):
        RewardSpec.from_dict({"name": "verifier", "wieght": 1.0})
    assert GateSpec.from_dict({"name": "noise", "floor": -1.0}) == GateSpec("noise", floor=-1.0)
    with pytest.raises(VidtuneError, match="did you mean 'sharpness'"):
        build([RewardSpec("sharpnes")])


def test_real_rewards_noise_and_safety_gates():
    """verifier + freeze heads; noise gate (floor 0) fails the noisy clip, safety (blue blocked, floor −1) the blue
    clip. An all-failed group has equal rewards, so its GRPO advantages are 0 (§6.4 property 6)."""
    red, blue = "one small red circle moves right", "one small blue circle moves right"
    clean = to_tensor(render(parse(red), 0).video)
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    videos = torch.stack([clean, noisy, to_tensor(render(parse(blue), 0).video)])
    comp = build([RewardSpec("verifier"), RewardSpec("freeze", weight=0.0)],
                 [GateSpec("noise"), GateSpec("safety", {"colours": ["blue"]}, floor=-1.0)])
    out = compose(comp, videos, [red, red, blue])
    assert out.gate_failed.tolist() == [False, True, True]
    assert out.scalar[0] > 0.9 and out.scalar[1:].tolist() == [0.0, -1.0]
    assert out.counters["gate/noise/failed"] == 1 and out.counters["gate/safety/failed"] == 1
    all_fail = compose(comp, noisy.expand(4, -1, -1, -1, -1), [red] * 4)
    assert all_fail.scalar.tolist() == [0.0] * 4
    assert group_advantages(all_fail.scalar, 4).advantages.tolist() == [0.0] * 4
