"""The optimiser step every training stage takes: clip, step only on a finite gradient, and stop a run whose
gradients stay non-finite (ALGORITHMS.md §0, invalid values)."""

from __future__ import annotations

import math

import torch
from torch import nn

from vidtune.errors import VidtuneError
from vidtune.runtime.fsdp import as_float


def clipped_step(opt: torch.optim.Optimizer, params: list[nn.Parameter], max_norm: float) -> float:
    """Clip the gradients' global L2 norm to ``max_norm`` and step. A non-finite norm (a NaN or inf loss or gradient)
    skips the step and clears the gradients, so one bad batch cannot poison the weights or Adam's moments; the
    caller counts it with a :class:`SkipGuard` (the returned pre-clip norm is then NaN or inf). Every rank sees the
    same norm (gradients are reduced before), so ranks skip together."""
    gnorm = as_float(torch.nn.utils.clip_grad_norm_(params, max_norm))
    if math.isfinite(gnorm):
        opt.step()
    else:
        opt.zero_grad(set_to_none=True)
    return gnorm


class SkipGuard:
    """Counts optimiser steps skipped on a non-finite gradient norm (``total``, logged as ``skipped_step``) and aborts
    the run after ``limit`` consecutive ones (§0: 3), before a checkpoint of the diverged state is written."""

    def __init__(self, stage: str, limit: int = 3):
        self.stage, self.limit = stage, limit
        self.total = self.consecutive = 0

    def record(self, gnorm: float, step: int) -> bool:
        """Whether the step with gradient norm ``gnorm`` was skipped; raises on the ``limit``-th skip in a row."""
        if math.isfinite(gnorm):
            self.consecutive = 0
            return False
        self.total += 1
        self.consecutive += 1
        if self.consecutive >= self.limit:
            raise VidtuneError(f"{self.stage}: {self.consecutive} optimiser steps in a row had a non-finite gradient "
                               f"norm ({gnorm}; last at step {step}, {self.total} skipped in this process); the run "
                               "stops here, and its last checkpoint holds the weights from before them")
        return True
