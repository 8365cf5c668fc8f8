"""Learning-rate schedules (math/schedules.py)."""

import pytest

from vidtune.math.schedules import warmup_cosine
from vidtune.math.schedules import warmup_stable_decay as lr_at


def test_warmup_then_constant():
    assert lr_at(0, 1.0, 4) == pytest.approx(0.25)
    assert lr_at(3, 1.0, 4) == pytest.approx(1.0)
    assert lr_at(500, 1.0, 4) == pytest.approx(1.0)


def test_cooldown_decays_linearly_to_zero():
    # total 10, cool-down 4: steps 6..9 get (10-s)/4 = 1.0, 0.75, 0.5, 0.25
    assert [lr_at(s, 2.0, 0, 10, 4) for s in range(5, 10)] == pytest.approx([2.0, 2.0, 1.5, 1.0, 0.5])


def test_stable_phase_does_not_depend_on_total():
    # extending a run before its cool-down must not change the steps it already took
    assert [lr_at(s, 1.0, 3, 100, 10) for s in range(90)] == [lr_at(s, 1.0, 3, 1000, 10) for s in range(90)]


def test_warmup_cosine_by_hand():
    """warmup 2, total 6, floor 0.1: steps 0, 1 warm up to 0.5, 1; step 4 is halfway, ½(1 + cos(π/2)) = 0.5 →
    0.1 + 0.9·0.5 = 0.55; step 6 and later sit at the floor 0.1."""
    lrs = [warmup_cosine(s, 1.0, 2, 6, 0.1) for s in (0, 1, 2, 4, 6, 9)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 0.55, 0.1, 0.1])
