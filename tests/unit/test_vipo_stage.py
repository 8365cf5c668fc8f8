import torch

from vidtune.config import load_recipe
from vidtune.stages.grpo import vipo_maps


class BrokenExtractor:
    def features(self, videos):
        raise RuntimeError("CUDA out of memory")


def test_a_failing_extractor_falls_back_to_scalar_credit(capsys):
    """ALGORITHMS.md §4 fallback: an extractor error gives M ≡ 1 for every sample and counts the reason."""
    cfg = load_recipe(None, ["grpo.vipo.enabled=true"]).grpo
    videos = torch.rand(3, 4, 3, 16, 16)
    m, logs = vipo_maps(BrokenExtractor(), videos, cfg, (4, 2, 2), ("pixel", 1))
    assert m.shape == (3, 4, 2, 2) and bool((m == 1).all())
    assert logs["vipo/fallback"] == 3 and logs["vipo/fallback/extractor"] == 3 and logs["vipo/fallback/range"] == 0
    assert "CUDA out of memory" in capsys.readouterr().out
