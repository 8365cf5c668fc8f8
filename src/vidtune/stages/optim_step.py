"""The optimiser step every training stage takes: clip, then step only on a finite gradient."""

from __future__ import annotations

import math

import torch
from torch import nn

from vidtune.runtime.fsdp import as_float


def clipped_step(opt: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the gradients' global L2 norm to ``max_norm`` and step. A non-finite norm (a NaN or inf loss or gradient)
    skips the step and clears the gradients, so one bad batch cannot poison the weights or Adam's moments; the
    caller counts it (the returned pre-clip norm is then NaN or inf). Every rank sees the same norm (gradients are
    reduced before), so ranks skip together."""
    gnorm = as_float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if math.isfinite(gnorm):
        opt.step()
    else:
        opt.zero_grad(set_to_none=True)
    return gnorm
