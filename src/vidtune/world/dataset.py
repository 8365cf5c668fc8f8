"""ShapeWorld datasets: deterministic (scene, seed) lists, T2V/I2V clip banks and the held-out split."""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import torch

from vidtune.config import WorldConfig
from vidtune.errors import VidtuneError
from vidtune.world.grammar import DIRECTIONAL_MOTIONS, Scene, caption, loose, parse, random_scene
from vidtune.world.render import Clip, InfeasibleScene, render

Split = Literal["train", "heldout", "any"]


@dataclass(frozen=True)
class Example:
    scene: Scene
    seed: int
    contrast: float = 1.0  # background texture amplitude (curated camera data may use a stronger texture)

    def render(self, world: WorldConfig, shown_motions: tuple[str, ...] | None = None) -> Clip:
        """The clip (``shown_motions``: its counterfactual with the same first frame, world/render.render)."""
        return render(self.scene, self.seed, frames=world.frames, size=world.size, contrast=self.contrast,
                      shown_motions=shown_motions)


def examples(n: int, seed: int, world: WorldConfig, split: Split = "train") -> list[Example]:
    """``n`` renderable examples drawn deterministically from ``seed``.

    ``train`` never contains a held-out colour/shape composition; ``heldout`` contains only those.
    Scenes that do not fit the canvas are skipped, so every returned example renders.
    """
    rng = random.Random(f"shapeworld:{seed}:{split}")
    heldout = {"train": False, "heldout": True, "any": None}[split]
    out: list[Example] = []
    while len(out) < n:
        scene = random_scene(rng, max_count=world.max_count, p_then=world.p_then, p_camera=world.p_camera,
                             p_pour=world.p_pour, heldout=heldout)
        clip_seed = rng.randrange(2**31)
        try:
            render(scene, clip_seed, frames=world.frames, size=world.size)
        except InfeasibleScene:
            continue
        out.append(Example(scene, clip_seed))
    return out


def render_prompt(prompt: str, seed: int, world: WorldConfig, tries: int = 20) -> Clip | None:
    """A ground-truth rendering of a ShapeWorld ``prompt`` (its parsed scene) with the first clip seed drawn from
    ``seed`` whose layout fits the canvas; ``None`` when none of ``tries`` seeds does."""
    scene, rng = parse(prompt), random.Random(f"shapeworld-prompt:{seed}:{prompt}")
    for _ in range(tries):
        try:
            return render(scene, rng.randrange(2**31), frames=world.frames, size=world.size)
        except InfeasibleScene:
            continue
    return None


def captions(exs: list[Example], style: Literal["loose", "instruction"], seed: int, p_motion: float,
             p_camera: float = 0.0, p_order: float = 0.0) -> list[str]:
    """Captions of a list of examples. Loose captions name the first motion with probability ``p_motion`` (the whole
    "then" sequence with probability ``p_order`` when they do) and a camera pan with probability ``p_camera``
    (independent streams, so ``p_camera`` and ``p_order`` leave the motion draws as they were)."""
    if style == "instruction":
        return [caption(e.scene) for e in exs]
    rng, rng_camera, rng_order = (random.Random(f"captions{s}:{seed}") for s in ("", "-camera", "-order"))
    return [caption(loose(e.scene, with_motion=rng.random() < p_motion, with_camera=rng_camera.random() < p_camera,
                          with_order=rng_order.random() < p_order)) for e in exs]


def motion_prompts_with_frames(n: int, seed: int, world: WorldConfig,
                               directional: bool = False) -> tuple[list[str], torch.Tensor]:
    """``n`` image-to-video prompts: instruction captions of training-split scenes that have a motion (``directional``:
    only motions along a direction, grammar.DIRECTIONAL_MOTIONS), with the first frames [n, 3, H, W] (float in
    [0, 1]) of their renderings; an error when 20 draws of 4n scenes hold fewer (a world config that hardly makes
    motion, e.g. ``p_pour`` near 1)."""
    def wanted(s: Scene) -> bool:
        return bool(s.motions) and not s.pour and (not directional or set(s.motions) <= set(DIRECTIONAL_MOTIONS))

    exs: list[Example] = []
    for batch in range(20):
        exs += [x for x in examples(4 * n, seed + batch, world, "train") if wanted(x.scene)]
        if len(exs) >= n:
            break
    else:
        raise VidtuneError(f"only {len(exs)} of {n} motion prompts among {80 * n} scenes of this world config")
    exs = exs[:n]
    frames = torch.stack([torch.from_numpy(x.render(world).video[0]).permute(2, 0, 1) for x in exs])
    return [caption(x.scene) for x in exs], frames


def with_pan_contrast(exs: list[Example], contrast: float) -> list[Example]:
    """The examples with every camera pan rendered at ``contrast`` × the background texture (a visible pan)."""
    return [replace(e, contrast=contrast) if e.scene.pans else e for e in exs]


def to_tensor(video: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] float in [0, 1] → [T, 3, H, W] float32 (the project's pixel-video layout)."""
    return torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()


def render_bank(exs: list[Example], world: WorldConfig, progress: bool = True) -> torch.Tensor:
    """Render examples into one uint8 tensor [N, T, 3, H, W] (compact enough to hold tens of thousands)."""
    from vidtune.progress import track

    bank = torch.empty((len(exs), world.frames, 3, world.size, world.size), dtype=torch.uint8)
    for i, e in enumerate(track(exs, "rendering clips", disable=not progress)):
        bank[i] = to_uint8(e.render(world).video)
    return bank


def to_uint8(video: np.ndarray) -> torch.Tensor:
    """[T, H, W, 3] float in [0, 1] → [T, 3, H, W] uint8 (rounded), one clip of a bank."""
    return torch.from_numpy((video * 255.0 + 0.5).astype(np.uint8)).permute(0, 3, 1, 2)
