"""End-to-end sign check of Stage II: GRPO on a reward the policy can easily move (mean brightness of the clip)
raises it, and on its negation lowers it. The property tests check the loss term by term; this checks that rollouts,
log-probs, advantages and the update fit together into an ascent direction."""

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.rewards.base import REGISTRY, register
from vidtune.runlog import read_metrics
from vidtune.stages import grpo
from vidtune.types import RewardOutput


class Brightness:
    range = (0.0, 1.0)

    def __init__(self, sign: float = 1.0):
        self.name, self.sign = "test_brightness", sign

    def __call__(self, videos, prompts, **context):
        v = videos.float() / (255.0 if videos.dtype == torch.uint8 else 1.0)
        mean = v.flatten(1).mean(1).double()
        return RewardOutput(scores=mean if self.sign > 0 else 1 - mean)


@pytest.fixture(scope="module", autouse=True)
def brightness_reward():
    register("test_brightness")(Brightness)
    yield
    REGISTRY.pop("test_brightness")


def _rewards(out, sign):
    r = load_recipe(None, ["model.init=builtin:base", "run.threads=1", "grpo.iterations=8", "grpo.prompts_per_iter=2",
                           "grpo.group_size=8", "grpo.rollout.steps=6", "grpo.lr=2e-4",
                           f"grpo.reward.heads=[{{reward: test_brightness, kwargs: {{sign: {sign}}}}}]"])
    grpo.run(r, out, progress=False)
    return [row["reward"] for row in read_metrics(out / "metrics.jsonl", "grpo")]


@pytest.mark.slow
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grpo_ascends_a_simple_reward(tmp_path, sign):
    """From the shipped base (a random tiny model is too weak a platform: its reward moves by a few hundredths)."""
    rewards = _rewards(tmp_path / "run", sign)
    first, last = sum(rewards[:2]) / 2, sum(rewards[-2:]) / 2
    assert last > first + 0.1, [round(x, 3) for x in rewards]
