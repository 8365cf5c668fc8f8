"""Reward-hacking and saturation alarms fire in constructed cases and stay quiet otherwise."""

from vidtune.metrics.diagnostics import divergence_alarm, saturation_alarm


def test_hacking_case_fires():
    """Training reward 0.40 → 0.70 (first/last 5 means) while the held-out verifier drops 0.50 → 0.42."""
    train = [0.40] * 5 + [0.55] * 5 + [0.70] * 5
    a = divergence_alarm(train, 0.50, 0.42)
    assert a.fired and abs(a.values["train_reward_change"] - 0.30) < 1e-9
    assert abs(a.values["heldout_change"] + 0.08) < 1e-9


def test_healthy_and_flat_cases_are_quiet():
    train = [0.40] * 5 + [0.70] * 5
    assert not divergence_alarm(train, 0.50, 0.60).fired  # both improve
    assert not divergence_alarm([0.5] * 10, 0.50, 0.40).fired  # held-out drops but training reward is flat


def test_saturation():
    assert saturation_alarm([0.2, 0.1, 0.005, 0.004, 0.003, 0.002, 0.001]).fired
    assert not saturation_alarm([0.2, 0.1, 0.05]).fired
    assert not saturation_alarm([]).fired
