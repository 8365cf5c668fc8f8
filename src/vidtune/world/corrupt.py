"""Prompt corruptions: change exactly one atom of a scene (judge validity tests, scorer distractors, negatives)."""

from __future__ import annotations

import random
from dataclasses import replace

from vidtune.world.grammar import CAMERAS, COLOURS, MOTIONS, SHAPES, SIZES, Scene

CORRUPTIBLE = ("colour", "shape", "size", "count", "motion", "order", "camera")


def corrupt(scene: Scene, atom: str, rng: random.Random, max_count: int = 3) -> Scene | None:
    """A scene that differs from ``scene`` in ``atom`` only, or None when the atom does not apply
    (e.g. ``order`` of a one-segment motion, ``shape`` of a pour)."""
    other = lambda options, current: rng.choice([o for o in options if o != current])  # noqa: E731
    if scene.pour and atom not in ("colour", "camera"):
        return None
    match atom:
        case "colour":
            return replace(scene, colour=other(COLOURS, scene.colour))
        case "shape":
            return replace(scene, shape=other(SHAPES, scene.shape))
        case "size":
            return None if scene.size is None else replace(scene, size=other(SIZES, scene.size))
        case "count":
            if scene.count is None:
                return None
            return replace(scene, count=other(range(1, max_count + 1), scene.count))
        case "motion":
            if not scene.motions:
                return None
            i = rng.randrange(len(scene.motions))
            banned = set(scene.motions) | ({"bounce"} if len(scene.motions) > 1 else set())
            options = [m for m in MOTIONS if m not in banned]
            if len(scene.motions) == 1:
                options = [m for m in MOTIONS if m != scene.motions[0]]
            motions = list(scene.motions)
            motions[i] = rng.choice(options)
            return replace(scene, motions=tuple(motions))
        case "order":
            if not scene.motions or len(scene.motions) < 2:
                return None
            return replace(scene, motions=tuple(reversed(scene.motions)))
        case "camera":
            if scene.camera is None:
                return None
            # a loose caption does not state a static camera, so its camera negative is another pan
            options = CAMERAS[1:] if scene.loose else CAMERAS
            return replace(scene, camera=other(options, scene.camera))
    raise ValueError(f"unknown atom {atom!r}")
