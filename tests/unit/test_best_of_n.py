"""Best-of-N keeps the highest-reward candidate and always contains the best-of-1 sample."""

import torch

from vidtune.sampling.best_of_n import best_of_n
from vidtune.types import RewardOutput


class MeanBrightness:
    name, range = "brightness", (0.0, 1.0)

    def __call__(self, videos, prompts, **_):
        return RewardOutput(scores=videos.flatten(1).mean(1))


def test_best_of_n_picks_max_and_is_monotone(tiny_policy):
    with torch.no_grad():
        tiny_policy.net.final.weight.normal_(std=0.1)
    kw = dict(steps=2, shift=1.0, guidance=1.0)
    r1 = best_of_n(tiny_policy, ["a red circle"] * 2, [0, 1], 1, MeanBrightness(), **kw)
    r4 = best_of_n(tiny_policy, ["a red circle"] * 2, [0, 1], 4, MeanBrightness(), **kw)
    assert torch.allclose(r4.scores, r4.all_scores.max(1).values)
    assert torch.allclose(r4.all_scores[:, 0], r1.scores)  # candidate 0 is the best-of-1 sample
    assert (r4.scores >= r1.scores).all()
    assert torch.allclose(r4.videos.flatten(1).mean(1), r4.scores)
