"""Counterfactual clips: the same first frame as a training clip, the objects moving otherwise (the negatives of
the counterfactual contrastive SFT loss, math/flow_matching.contrastive_errors, ``sft.contrastive_lambda``)."""

from __future__ import annotations

import random
from typing import Literal

import torch

from vidtune.config import WorldConfig
from vidtune.world.dataset import Example, to_uint8
from vidtune.world.grammar import MOTIONS


OrderNegatives = Literal["reversed", "mixed"]


def counterfactual_motions(motions: tuple[str, ...] | None, rng: random.Random,
                           order: OrderNegatives = "reversed") -> tuple[str, ...] | None:
    """The motions a counterfactual of a clip with ``motions`` shows. A sequence "A, then B" (A ≠ B) shows B, then
    A (``order="reversed"``, the order negative), or one of the three wrong sequences B-A, A-A (the first motion
    kept up: "first only") and B-B ("second only") drawn uniformly (``order="mixed"``). Otherwise (one motion, or a
    longer palindrome) the first motion is replaced by a different one drawn uniformly from the world's motions (the
    direction negative; "stays still" gets a moving one and vice versa). ``None`` when the clip has no motion (a
    pour, or a caption that names none), which has no counterfactual."""
    if not motions:
        return None
    if len(motions) == 2 and motions[0] != motions[1]:
        a, b = motions
        return (b, a) if order == "reversed" else rng.choice([(b, a), (a, a), (b, b)])
    if motions[::-1] != motions:
        return motions[::-1]
    return (rng.choice([m for m in MOTIONS if m != motions[0]]), *motions[1:])


def counterfactual_bank(exs: list[Example], world: WorldConfig, seed: int,
                        order: OrderNegatives = "reversed") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 [N, T, 3, H, W] counterfactual clips of ``exs`` (the layout of world.dataset.render_bank; ``order``:
    :func:`counterfactual_motions`) and a bool [N] mask of the examples that have one (zeros where they do not);
    deterministic in ``seed``."""
    rng = random.Random(f"counterfactual:{seed}")
    bank = torch.zeros((len(exs), world.frames, 3, world.size, world.size), dtype=torch.uint8)
    has = torch.zeros(len(exs), dtype=torch.bool)
    for i, e in enumerate(exs):
        shown = None if e.scene.pour else counterfactual_motions(e.scene.motions, rng, order)
        if shown is None:
            continue
        bank[i] = to_uint8(e.render(world, shown_motions=shown).video)
        has[i] = True
    return bank, has
