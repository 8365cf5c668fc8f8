import math

import pytest
import torch

from vidtune.math.contrastive import symmetric_infonce


def test_symmetric_infonce_by_hand():
    """v = (e1, e2), t = (e1, e2, e1 + e2 extra text), one extra video −e1, s = 1.
    v2t: row 0 logits (1, 0, 1), row 1 (0, 1, 1) → both −log(e/(2e + 1)).
    t2v: text 0 over videos (e1, e2, −e1): (1, 0, −1); text 1: (0, 1, 0)."""
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    v, t = torch.stack([e1, e2]), torch.stack([e1, e2, e1 + e2])
    none = torch.zeros(2, 3, dtype=torch.bool)
    v2t, t2v = symmetric_infonce(v, t, -e1[None], 1.0, none)
    want_v2t = -math.log(math.e / (2 * math.e + 1))
    want_t2v = 0.5 * (-math.log(math.e / (math.e + 1 + math.exp(-1))) - math.log(math.e / (math.e + 2)))
    assert float(v2t) == pytest.approx(want_v2t) and float(t2v) == pytest.approx(want_t2v)


def test_false_negatives_leave_both_softmaxes():
    """Text 1 is also true for video 0: it leaves video 0's v2t row, and video 0 leaves text 1's t2v row."""
    v = t = torch.eye(2)
    fn = torch.tensor([[False, True], [False, False]])
    v2t, t2v = symmetric_infonce(v, t, torch.zeros(0, 2), 1.0, fn)
    row1 = -math.log(math.e / (math.e + 1))
    assert float(v2t) == pytest.approx(0.5 * (0.0 + row1)) and float(t2v) == pytest.approx(0.5 * (row1 + 0.0))
