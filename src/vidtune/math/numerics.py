"""The compute dtype of every math function (ALGORITHMS.md §0, numerics): fp64 inputs stay fp64, everything else
(bf16, fp16, fp32, integers, numpy arrays) is computed in fp32."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def compute_dtype(x: Tensor | np.ndarray) -> torch.dtype:
    """fp64 for fp64 input, else fp32."""
    return torch.float64 if torch.as_tensor(x).dtype == torch.float64 else torch.float32


def to_compute(x: Tensor | np.ndarray) -> Tensor:
    """``x`` as a tensor in :func:`compute_dtype` (a no-op for fp32 and fp64 tensors)."""
    t = torch.as_tensor(x)
    return t.to(compute_dtype(t))
