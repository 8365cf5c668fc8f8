import numpy as np
import torch

from vidtune.math.numerics import compute_dtype, to_compute


def test_fp64_stays_fp64_and_everything_else_is_fp32():
    assert compute_dtype(torch.zeros(1, dtype=torch.float64)) == torch.float64
    for dt in (torch.bfloat16, torch.float16, torch.float32, torch.int64, torch.bool):
        assert compute_dtype(torch.zeros(1, dtype=dt)) == torch.float32
    assert to_compute(np.arange(3)).dtype == torch.float32 and to_compute(np.zeros(2)).dtype == torch.float64
    x = torch.tensor([1.5], dtype=torch.bfloat16)
    assert to_compute(x).tolist() == [1.5]
