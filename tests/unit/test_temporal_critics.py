import pytest
import torch

from vidtune.math.temporal_critics import freeze_score, warped_flickering
from vidtune.math.vbench import pair_mae


def frames_with_steps(steps: list[float]) -> torch.Tensor:
    """Grey frames [F, 1, 2, 2] whose consecutive differences are ``steps`` (so MAE_f = steps[f])."""
    levels = torch.tensor([0.0, *steps], dtype=torch.float64).cumsum(0)
    return levels.view(-1, 1, 1, 1).expand(-1, 1, 2, 2).clone()


def test_pair_mae_by_hand():
    assert pair_mae(frames_with_steps([10.0, 0.0, 51.0])).tolist() == [10.0, 0.0, 51.0]


def test_freeze_score_by_hand():
    """e = [51, 51, 0, 51]/255 = [0.2, 0.2, 0, 0.2]; Q_0.75 = 0.2, ref = 0.5·0.2 = 0.1; s = [1, 1, 0, 1] → 0.75,
    one frozen pair (0 < 0.05); a still clip scores 1 with no frozen pair."""
    frames = frames_with_steps([51.0, 51.0, 0.0, 51.0])
    score, frozen = freeze_score(frames, ratio=0.5, moving=True)
    assert score == pytest.approx(0.75) and frozen == 1
    assert freeze_score(frames, ratio=0.5, moving=False) == (1.0, 0)


def test_warped_flickering_by_hand():
    """Frames 0, 10, 30 with a warp that predicts 5 and 30: residuals 5 and 0 → (255 − 2.5)/255."""
    frames = frames_with_steps([10.0, 20.0])
    warped = torch.tensor([5.0, 30.0], dtype=torch.float64).view(2, 1, 1, 1).expand(-1, 1, 2, 2)
    assert warped_flickering(frames, warped) == pytest.approx((255 - 2.5) / 255)
    assert warped_flickering(frames, frames[:-1]) == pytest.approx((255 - 15) / 255)  # identity warp = VBench
