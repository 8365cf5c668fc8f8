"""Learning-rate schedules of the training stages, as functions of the step."""

from __future__ import annotations

import math


def warmup_stable_decay(step: int, base: float, warmup: int, total: int = 0, cooldown: int = 0) -> float:
    """Warmup-stable-decay learning rate (Hägele et al. 2024, "Scaling Laws and Compute-Optimal Training Beyond Fixed
    Training Durations"): linear warm-up over ``warmup`` steps, constant ``base``, then a linear decay to 0 over the
    last ``cooldown`` of ``total`` steps, lr(s) = base · min(1, (s+1)/warmup, (total − s)/cooldown).

    The stable phase does not depend on ``total``, so a run can be extended (resumed with more steps) before its
    cool-down without changing what it already did. Pretraining and SFT use it."""
    lr = base * min(1.0, (step + 1) / max(1, warmup))
    if cooldown > 0 and step >= total - cooldown:
        lr = min(lr, base * (total - step) / cooldown)
    return lr


def warmup_cosine(step: int, base: float, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warm-up to ``base`` over ``warmup`` steps, lr(s) = base·(s+1)/warmup, then cosine decay to
    ``min_ratio``·base at ``total``: lr = base·(r + (1 − r)·½(1 + cos(π·min(1, (s − warmup)/(total − warmup))))).
    The scorer's training uses it."""
    if step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
