import pytest

from vidtune.metrics.motion_outcomes import motion_confusion, order_outcome


@pytest.mark.parametrize("got, outcome", [
    (("left", "fall"), "exact"),
    (("fall", "left"), "reversed"),
    (("left", "still"), "first only"),
    (("up", "fall"), "second only"),
    (("up", "still"), "neither"),
    (None, "untracked"),
])
def test_order_outcome_by_hand(got, outcome):
    assert order_outcome(("left", "fall"), got) == outcome


def test_a_repeated_motion_is_exact_not_reversed():
    assert order_outcome(("left", "left"), ("left", "left")) == "exact"


def test_order_outcome_rejects_one_motion_prompts():
    with pytest.raises(ValueError, match="two-motion"):
        order_outcome(("left",), ("left",))


def test_motion_confusion_counts_per_asked_motion():
    table = motion_confusion(["fall", "fall", "left", "fall"], ["down", "fall", None, "down"])
    assert table == {"fall": {"down": 2, "fall": 1}, "left": {"untracked": 1}}
