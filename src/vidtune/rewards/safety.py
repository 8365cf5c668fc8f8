"""Safety gate with a configurable block-list (DESIGN.md §3, judge 5; ALGORITHMS.md §6.4: safety gates fail closed).

A sample is blocked when its prompt contains a blocked word (lower-case tokens, any prompt), its parsed scene
(``world.grammar.parse``) has a blocked colour or shape, or the video shows a blocked palette colour: in some frame
the colour's palette pixels (``verifier.segment_palette``) cover at least ``min_share`` of the frame. Any error while
checking a sample (an unparseable prompt when colours/shapes are blocked, a failing segmentation) blocks it, and so
does a sample with non-finite pixels. Score 1 = passed, 0 = blocked; ``gate_failed`` = blocked; ``details[b]
["blocked"]`` lists the reasons. With empty lists nothing is blocked and prompts are not parsed (free text is fine).
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

import numpy as np
import torch

from vidtune.errors import VidtuneError
from vidtune.rewards.base import check_inputs, register
from vidtune.rewards.verifier import COLOUR_NAMES, segment_palette
from vidtune.types import RewardOutput
from vidtune.world.grammar import COLOURS, SHAPES, parse, tokenize


def _names(values: Iterable[str], known: tuple[str, ...], key: str) -> frozenset[str]:
    """Lower-cased block-list entries; an entry outside ``known`` is an error naming the key and the closest name."""
    if isinstance(values, str):
        raise VidtuneError(f"safety: {key} must be a list of names, got the string {values!r}")
    out = frozenset(str(v).lower() for v in values)
    for v in sorted(out - set(known)):
        close = difflib.get_close_matches(v, known, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise VidtuneError(f"safety: unknown {key[:-1]} '{v}' in {key}{hint}; known: {', '.join(known)}")
    return out


@register("safety")
class SafetyGate:
    """Block-list gate over prompt words, parsed colours/shapes and palette colours detected in the video."""

    name = "safety"
    range = (0.0, 1.0)
    is_gate = True
    always_fail_closed = True

    def __init__(self, colours: Iterable[str] = (), shapes: Iterable[str] = (), words: Iterable[str] = (),
                 video_colours: Iterable[str] | None = None, colour_threshold: float = 0.3, min_share: float = 0.01):
        self.colours = _names(colours, COLOURS, "colours")
        self.shapes = _names(shapes, SHAPES, "shapes")
        if isinstance(words, str):
            raise VidtuneError(f"safety: words must be a list of words, got the string {words!r}")
        self.words = frozenset(str(w).lower() for w in words)
        self.video_colours = self.colours if video_colours is None else _names(video_colours, COLOURS, "video_colours")
        if not 0 < min_share <= 1:
            raise VidtuneError(f"safety: min_share must be in (0, 1], got {min_share!r}")
        self.colour_threshold, self.min_share = colour_threshold, min_share

    def reasons(self, frames: np.ndarray, prompt: str) -> list[str]:
        """Why a sample is blocked (empty = passes). ``frames``: [F, H, W, 3] in [0, 1]."""
        out = [f"prompt word '{w}'" for w in sorted(self.words & set(tokenize(prompt)))]
        if self.colours or self.shapes:
            scene = parse(prompt)
            out += [f"prompt colour '{scene.colour}'"] * (scene.colour in self.colours)
            out += [f"prompt shape '{scene.shape}'"] * (scene.shape in self.shapes)
        if self.video_colours:
            labels = segment_palette(frames, self.colour_threshold).reshape(len(frames), -1)
            for c in sorted(self.video_colours):
                share = float((labels == COLOUR_NAMES.index(c)).mean(1).max())
                out += [f"video colour '{c}' (share {share:.3f})"] * (share >= self.min_share)
        return out

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        scores, details = torch.full((len(prompts),), math.nan), []
        for i, (video, prompt) in enumerate(zip(videos, prompts)):
            if not finite[i]:
                details.append({"invalid": "non-finite pixels", "blocked": ["non-finite pixels"]})
                continue
            try:
                why = self.reasons(video.detach().float().permute(0, 2, 3, 1).cpu().numpy(), prompt)
            except Exception as e:  # fail closed: an unchecked sample is a blocked sample
                why = [f"error: {type(e).__name__}: {e}"]
            scores[i] = 0.0 if why else 1.0
            details.append({"blocked": why})
        return RewardOutput(scores=scores, gate_failed=~(scores == 1.0), details=details)
