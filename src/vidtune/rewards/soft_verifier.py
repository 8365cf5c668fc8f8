"""A dense variant of the ShapeWorld verifier, for training: every atom it can grade continuously becomes a share or
a progress in [0, 1] instead of a pass/fail, so that two rollouts which both fail (or both pass) an atom still get
different rewards when one is closer. The pass/fail verifier stays the judge of evaluation.

Why (benchmarks/grpo_noise_scale.py, docs/results.md "Session 8"): with the pass/fail score, the GRPO gradient's
mean over 128 groups is not distinguishable from 0, while a dense reward (the clip's brightness) shows its signal
at z ≈ 8 on the same rollouts.

Soft atoms, from the verifier's own measurements (``Verdict.observed``; s = frame size / 32, v = MOVE_SPEED·s,
c = CAMERA_SPEED·s, n = transitions of a motion segment, D = its world displacement, u_d = the unit vector of a
direction, image y pointing down):

    existence  share of frames with an object         colour  target share of the palette pixels
    shape      share of components of the asked shape  size    share of components of the asked size
    count      share of frames with the asked count
    motion     mean over segments of: left/right/up/down/fall  clip(D·u_d / (n·v), 0, 1);
               still  ramp(|D| / (n·v), 1/6, 1/2);  bounce  the pass/fail atom
    camera     pan d: clip(−F·u_d / c, 0, 1) with F the mean background flow (it moves against the camera);
               static  ramp(|F| / c, 0.2, 0.6)
    order, pour  the pass/fail atoms (order is also graded by motion, which pairs segments in sequence)

    score = clean · mean(soft atoms)

``pan_progress`` is the camera atom alone, signed (a pan the wrong way below none): clean · (1 + p) / 2 with
p = clip(−F·u_d / c, −1, 1), for training one atom on a set of pan prompts. ``motion_progress`` is the same for the
object's motion: p = the mean over segments of clip(D·u_d / (n·v), −1, 1), for prompts whose motions are all
directional (left/right/up/down/fall); a sequence played in the wrong order scores below one that stands still.
"""

from __future__ import annotations

import numpy as np
import torch

from vidtune.rewards.base import register
from vidtune.rewards.verifier import ShapeWorldVerifier, ramp
from vidtune.types import RewardOutput
from vidtune.world.grammar import Scene, parse
from vidtune.world.render import CAMERA_SPEED, MOVE_SPEED

DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0), "fall": (0.0, 1.0)}


def share(counts: dict[str, int] | None, wanted: str) -> float:
    """counts[wanted] / Σ counts (0 for no counts)."""
    total = sum((counts or {}).values())
    return counts.get(wanted, 0) / total if total else 0.0


def segment_progress(motion: str, disp: np.ndarray, n: int, scale: float, passed: bool) -> float:
    """Soft grade of one motion segment: its world displacement ``disp`` [2] over ``n`` transitions (module
    docstring); ``passed`` is the pass/fail atom, used for bounce."""
    if motion in DIRECTIONS:
        return max(0.0, signed_segment(motion, disp, n, scale))
    if motion == "still":
        return float(ramp(np.linalg.norm(disp) / (MOVE_SPEED * scale * n), 1 / 6, 1 / 2))
    return float(passed)


def signed_segment(motion: str, disp: np.ndarray, n: int, scale: float) -> float:
    """Signed progress of a directional motion segment: clip(D·u_d / (n·v), −1, 1), so moving the wrong way scores
    below standing still and both below the asked motion."""
    return float(np.clip(np.dot(disp, DIRECTIONS[motion]) / (MOVE_SPEED * scale * n), -1.0, 1.0))


def camera_progress(camera: str, flow: np.ndarray, scale: float) -> float:
    """Soft grade of the camera atom from the mean background flow ``flow`` [2] per transition."""
    c = CAMERA_SPEED * scale
    if camera == "static":
        return float(ramp(np.linalg.norm(flow) / c, 0.2, 0.6))
    return max(0.0, signed_pan(camera, flow, scale))


def signed_pan(camera: str, flow: np.ndarray, scale: float) -> float:
    """Signed progress of a pan ``camera`` from the mean background flow ``flow`` [2] per transition:
    clip(−F·u_d / c, −1, 1), so a pan the wrong way scores below a still camera and both below the asked one."""
    c = CAMERA_SPEED * scale
    return float(np.clip(-np.dot(flow, DIRECTIONS[camera]) / c, -1.0, 1.0))


def soft_atoms(scene: Scene, atoms: dict[str, bool], observed: dict, frames: int, scale: float) -> dict[str, float]:
    """The soft atoms (module docstring) of one clip judged by the verifier as ``atoms`` / ``observed``."""
    out = {"existence": observed["present"], "colour": observed["colour_share"]}
    if "shape" in atoms:
        out["shape"] = share(observed.get("shapes"), scene.shape)
    if "size" in atoms:
        out["size"] = share(observed.get("sizes"), scene.size)
    if "count" in atoms:
        out["count"] = float(np.mean([c == scene.count for c in observed["count"]]))
    if "motion" in atoms:
        disps = observed.get("segment_disp")
        n = (frames - 1) / len(scene.motions)
        out["motion"] = 0.0 if disps is None else float(np.mean(
            [segment_progress(m, np.asarray(d), n, scale, atoms["motion"]) for m, d in zip(scene.motions, disps)]))
    if "camera" in atoms:
        out["camera"] = camera_progress(scene.camera, np.asarray(observed["camera_flow"]), scale)
    for a in ("order", "pour"):
        if a in atoms:
            out[a] = float(atoms[a])
    return out


@register("soft_verifier")
class SoftVerifier:
    """clean · mean(soft atoms) in [0, 1]; components are the soft atoms (NaN = not checked)."""

    name = "soft_verifier"
    range = (0.0, 1.0)

    def __init__(self):
        self.verifier = ShapeWorldVerifier()

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        hard = self.verifier(videos, prompts)
        frames, scale = videos.shape[1], videos.shape[-2] / 32.0
        scores = torch.full((len(prompts),), float("nan"))
        comps: dict[str, torch.Tensor] = {}
        for i, (prompt, d) in enumerate(zip(prompts, hard.details)):
            if "atoms" not in d:  # invalid clip: NaN, as the verifier
                continue
            soft = soft_atoms(parse(prompt), d["atoms"], d, frames, scale)
            scores[i] = d["clean"] * float(np.mean(list(soft.values())))
            for a, val in soft.items():
                comps.setdefault(a, torch.full((len(prompts),), float("nan")))[i] = val
        return RewardOutput(scores=scores, components=comps, details=hard.details)


class SignedAtomReward:
    """One atom as a dense reward: clean · (1 + p) / 2 in [0, 1], p ∈ [−1, 1] the atom's signed progress
    (:meth:`signed`, None where the atom does not apply: the sample scores NaN and is left out of the update); the
    verifier's cleanliness factor keeps a noise clip, whose flow is arbitrary, at the bottom. Components: the
    pass/fail atom of the same name."""

    name = ""
    atom = ""
    range = (0.0, 1.0)

    def __init__(self):
        self.verifier = ShapeWorldVerifier()

    def signed(self, scene: Scene, details: dict, frames: int, scale: float) -> float | None:
        raise NotImplementedError

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        hard = self.verifier(videos, prompts)
        frames, scale = videos.shape[1], videos.shape[-2] / 32.0
        scores = torch.full((len(prompts),), float("nan"))
        for i, (prompt, d) in enumerate(zip(prompts, hard.details)):
            p = self.signed(parse(prompt), d, frames, scale)
            if p is not None:
                scores[i] = d["clean"] * (1 + p) / 2
        atom = hard.components.get(self.atom, torch.full((len(prompts),), float("nan")))
        return RewardOutput(scores=scores, components={self.atom: atom}, details=hard.details)


@register("pan_progress")
class PanProgress(SignedAtomReward):
    """The camera atom: p the signed progress of the asked pan (:func:`signed_pan`). A prompt that asks for no pan,
    or an invalid clip, scores NaN, so it is meant for a prompt set of pan prompts (benchmarks/pan_prompts.py)."""

    name, atom = "pan_progress", "camera"

    def signed(self, scene: Scene, details: dict, frames: int, scale: float) -> float | None:
        if not scene.pans or "camera_flow" not in details:
            return None
        return signed_pan(scene.camera, np.asarray(details["camera_flow"]), scale)


@register("motion_progress")
class MotionProgress(SignedAtomReward):
    """The motion atom: p the mean signed progress of the asked motion segments (:func:`signed_segment`). A prompt
    with a non-directional motion (still, bounce, pour) or none, or a clip the verifier cannot segment, scores NaN;
    meant for a prompt set of directional motion prompts (benchmarks/i2v_prompts.py --directional)."""

    name, atom = "motion_progress", "motion"

    def signed(self, scene: Scene, details: dict, frames: int, scale: float) -> float | None:
        disps = details.get("segment_disp")
        if not scene.motions or disps is None or not all(m in DIRECTIONS for m in scene.motions):
            return None
        n = (frames - 1) / len(scene.motions)
        return float(np.mean([signed_segment(m, np.asarray(x), n, scale) for m, x in zip(scene.motions, disps)]))
