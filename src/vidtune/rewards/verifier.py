"""Rule-based ShapeWorld verifier: segments palette colours, tracks components, checks every atom of the prompt.

Atoms (only those the prompt states are checked): existence, colour, shape, size, count, motion (the multiset of
segment motions), order (the sequence, for "then" prompts), camera, pour. Each atom is 0/1; with m the mean and
``all`` the conjunction of the checked atoms, the score is

    score = clean · (½·all + ½·m)      ∈ [0, 1]

so a clip that satisfies everything scores ``clean`` and one wrong atom costs at least one half. ``clean`` is the
mean over frames of a soft cleanliness in [0, 1]: it falls linearly to 0 as palette-coloured pixels outside the
accepted objects grow past a share of the expected object area, or as the background gets rough (noise, blocky
patches) — the guard against the noise-hack
found in the prototype (ENVIRONMENT.md §9): a judge must fail unclean frames. The error map [F, H, W] marks stray
palette pixels (1) and the objects' pixels weighted by the share of failed object atoms.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from vidtune.rewards.base import check_inputs, register
from vidtune.types import RewardOutput
from vidtune.video.flow import video_flow
from vidtune.world.grammar import Scene, parse, segment_transitions
from vidtune.world.render import CAMERA_SPEED, MOVE_SPEED, PALETTE, SIZE_RADIUS

COLOUR_NAMES = list(PALETTE)
PALETTE_RGB = np.array([PALETTE[c] for c in COLOUR_NAMES], dtype=np.float32)
SHAPE_AREA = {"circle": np.pi, "square": 0.9**2 * 4, "triangle": 2.0}  # area / r²
ATOMS = ("existence", "colour", "shape", "size", "count", "motion", "order", "camera", "pour")


@dataclass
class Verdict:
    score: float
    atoms: dict[str, bool]
    clean: float
    error_map: np.ndarray
    observed: dict = field(default_factory=dict)


def ramp(x: np.ndarray, full: float, zero: float) -> np.ndarray:
    """1 for x ≤ full, 0 for x ≥ zero, linear in between (a soft pass predicate)."""
    return np.clip((zero - x) / (zero - full), 0.0, 1.0)


def segment_palette(frames: np.ndarray, threshold: float) -> np.ndarray:
    """[F, H, W, 3] → labels [F, H, W]: index of the nearest palette colour within ``threshold`` (RGB), else −1."""
    d = np.linalg.norm(frames[..., None, :] - PALETTE_RGB, axis=-1)
    return np.where(d.min(-1) < threshold, d.argmin(-1), -1)


def min_object_area(scale: float) -> float:
    """Smallest component counted as an object: 35 % of a small triangle's area (r = SIZE_RADIUS["small"]·scale)."""
    return 0.35 * SHAPE_AREA["triangle"] * (SIZE_RADIUS["small"] * scale) ** 2


def components(mask: np.ndarray, min_area: float) -> list[dict]:
    """Connected components (8-connectivity) of a binary mask with area ≥ ``min_area``."""
    n, cc, stats, cents = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    out = []
    for k in range(1, n):
        x, y, w, h, a = stats[k]
        if a >= min_area:
            out.append({"area": int(a), "centroid": cents[k], "bbox": (x, y, w, h), "mask": cc == k})
    return out


def shape_of(comp: dict) -> str:
    """Corner test on the bounding box (squares fill all four corners, triangles only the bottom two) plus the fill
    ratio area / bbox area (rendered: circles 0.69–0.92, squares 0.88–1, triangles 0.50–0.67); a blob that fits
    none of them is "irregular" (fragmented generations must not pass as circles)."""
    x, y, w, h = comp["bbox"]
    m = comp["mask"]
    fill = comp["area"] / float(w * h)
    top = m[y, x] + 0 + m[y, x + w - 1]
    bottom = m[y + h - 1, x] + 0 + m[y + h - 1, x + w - 1]
    if bottom >= 1 and top == 0 and 0.4 <= fill <= 0.8:
        return "triangle"
    if top >= 1 and bottom >= 1 and fill >= 0.8:
        return "square"
    if top == 0 and bottom == 0 and 0.6 <= fill <= 0.97:
        return "circle"
    return "irregular"


def is_unique_mode(values: list[str], wanted: str) -> bool:
    """Whether ``wanted`` is strictly the most frequent of ``values``. A tie fails: the clip is as much something
    else (and the mode of a tie, taken over a set, would depend on the process's string-hash seed, so the same clip
    could pass in one process and fail in the next)."""
    counts = Counter(values)
    return counts[wanted] > 0 and all(counts[wanted] > c for v, c in counts.items() if v != wanted)


def size_of(comp: dict, shape: str, scale: float) -> str:
    """Equivalent radius √(area / shape factor) against the geometric mean of the two rendered radii."""
    r = np.sqrt(comp["area"] / SHAPE_AREA[shape])
    return "large" if r > np.sqrt(SIZE_RADIUS["small"] * SIZE_RADIUS["large"]) * scale else "small"


def classify_motion(disp: np.ndarray, scale: float) -> str:
    """World displacement per transition [n, 2] of one segment → one of the grammar's motions.

    bounce: a descent of ≥ 2 px followed by a rise of ≥ 1 px (path of y); still: mean speed below a third of the
    move speed; otherwise the dominant axis, with "fall" vs "down" told apart by the slope of the vertical speed.
    """
    vy = disp[:, 1]
    y = np.concatenate([[0.0], np.cumsum(vy)])
    low = int(np.argmax(y))
    total = disp.sum(0)
    if y[low] >= 2.0 * scale and y[low] - y[low:].min() >= 1.0 * scale and low < len(y) - 1 and (
            abs(total[0]) < 0.5 * y[low]):
        return "bounce"
    if np.linalg.norm(total) < MOVE_SPEED * scale * len(disp) / 3:
        return "still"
    if abs(total[0]) > abs(total[1]):
        return "right" if total[0] > 0 else "left"
    if total[1] < 0:
        return "up"
    slope = np.polyfit(np.arange(len(vy)), vy, 1)[0] if len(vy) >= 2 else 0.0
    return "fall" if slope > 0.3 * scale else "down"


def vertical_shift(a: np.ndarray, b: np.ndarray, dx: int, max_shift: int) -> int:
    """The integer dy in [−max_shift, max_shift] that best maps mask a onto mask b (after a horizontal shift dx),
    by overlap count; used to read the direction of a particle stream without tracking particles."""
    best, best_dy = -1, 0
    for dy in range(-max_shift, max_shift + 1):
        shifted = np.roll(np.roll(a, dy, axis=0), dx, axis=1)
        if dy > 0:
            shifted[:dy] = False
        elif dy < 0:
            shifted[dy:] = False
        overlap = int((shifted & b).sum())
        if overlap > best:
            best, best_dy = overlap, dy
    return best_dy


def background_flow(flow: np.ndarray, palette_px: np.ndarray) -> np.ndarray:
    """Median flow [F−1, 2] of each transition's background: pixels at least 4 px from any palette (object)
    pixel, since the estimator smears object motion into its surroundings; (0, 0) where no such pixel is left.
    ``flow`` [F−1, 2, H, W], ``palette_px`` [F, H, W] bool."""
    bg = ~np.stack([cv2.dilate(p.astype(np.uint8), np.ones((9, 9), np.uint8)) for p in palette_px]).astype(bool)
    return np.stack([np.median(flow[t].reshape(2, -1)[:, bg[t].ravel()], axis=1) if bg[t].any() else np.zeros(2)
                     for t in range(len(flow))])


def segment_displacements(comps: list[list[dict]], bg_flow: np.ndarray, present: np.ndarray,
                          n_segments: int) -> list[np.ndarray] | None:
    """World displacement per transition [n, 2] of each motion segment (screen motion of the objects' area-weighted
    centroid minus the background flow); None unless an object is present in every frame."""
    if not present.all():
        return None
    cents = np.stack([np.average([c["centroid"] for c in cs], axis=0, weights=[c["area"] for c in cs])
                      for cs in comps])
    disp = np.diff(cents, axis=0) - bg_flow
    return [disp[list(seg)] for seg in segment_transitions(n_segments, len(cents))]


def camera_of(bg_flow: np.ndarray, scale: float) -> str:
    """Median background flow per transition [n, 2] → camera pan (background moves opposite to the camera)."""
    m = bg_flow.mean(0)
    if np.linalg.norm(m) < 0.4 * CAMERA_SPEED * scale:
        return "static"
    if abs(m[0]) > abs(m[1]):
        return "left" if m[0] > 0 else "right"
    return "up" if m[1] > 0 else "down"


@register("verifier")
class ShapeWorldVerifier:
    """The ShapeWorld judge (DESIGN.md §3, judge 1). Scores in [0, 1]; per-atom components (NaN = not checked)."""

    name = "verifier"
    range = (0.0, 1.0)

    def __init__(self, colour_threshold: float = 0.3, stray: tuple[float, float] = (0.5, 1.5),
                 roughness: tuple[float, float] = (0.03, 0.08), flow: str = "dis"):
        """``stray`` and ``roughness`` are (full credit, zero credit) ramps of a frame's cleanliness: stray palette
        pixels as a share of the expected object area, and mean |Laplacian| of the background (rendered clips:
        ≤ 0.017; uniform noise: > 0.2)."""
        self.colour_threshold = colour_threshold
        self.stray = stray
        self.roughness = roughness
        self.flow = flow

    # ------------------------------------------------------------------------------------------ per clip
    def judge(self, video: torch.Tensor, scene: Scene) -> Verdict:
        frames = video.detach().float().permute(0, 2, 3, 1).cpu().numpy()  # [F, H, W, 3]
        f, h, w, _ = frames.shape
        scale = h / 32.0
        labels = segment_palette(frames, self.colour_threshold)
        target = COLOUR_NAMES.index(scene.colour)
        r_small = SIZE_RADIUS["small"] * scale
        min_area = 1 if scene.pour else min_object_area(scale)
        comps = [components(labels[t] == target, min_area) for t in range(f)]
        obj_mask = np.zeros((f, h, w), bool)
        for t, cs in enumerate(comps):
            for c in cs:
                obj_mask[t] |= c["mask"]
        palette_px = labels >= 0
        stray = palette_px & ~obj_mask
        expected = max(1.0, (scene.count or 1) * SHAPE_AREA["square"] * r_small**2)
        stray_frac = stray.reshape(f, -1).sum(1) / expected
        gray = frames.mean(-1)
        lap = np.abs(np.stack([cv2.Laplacian(g.astype(np.float32), cv2.CV_32F) for g in gray]))
        near = np.stack([cv2.dilate(p.astype(np.uint8), np.ones((3, 3), np.uint8)) for p in palette_px]).astype(bool)
        rough = np.array([lap[t][~near[t]].mean() if (~near[t]).any() else 1.0 for t in range(f)])
        clean_frames = np.minimum(ramp(stray_frac, *self.stray), ramp(rough, *self.roughness))
        clean = float(clean_frames.mean())

        bg_flow = background_flow(video_flow(frames, self.flow), palette_px)
        present = np.array([len(cs) > 0 for cs in comps])
        atoms: dict[str, bool] = {"existence": bool(present.mean() >= 0.75)}
        all_obj = obj_mask.any()
        n_palette = np.bincount(labels[palette_px].ravel(), minlength=len(COLOUR_NAMES))
        atoms["colour"] = bool(all_obj and n_palette.argmax() == target and n_palette[target] >= 0.8 * n_palette.sum())
        observed: dict = {"stray_frac": stray_frac.round(3).tolist(), "roughness": rough.round(4).tolist(),
                          "present": float(present.mean()),
                          "colour_share": float(n_palette[target] / n_palette.sum()) if all_obj else 0.0}

        if scene.pour:
            dys = [vertical_shift(obj_mask[t], obj_mask[t + 1], int(round(bg_flow[t, 0])), int(6 * scale))
                   - bg_flow[t, 1] for t in range(f - 1)]
            n_parts = np.median([len(cs) for cs in comps])
            atoms["pour"] = bool(n_parts >= 3 and np.mean(dys) > 0.5 * scale)
            observed["pour_dy"] = float(np.mean(dys))
            observed["particles"] = float(n_parts)
        else:
            every = [c for cs in comps for c in cs]
            if scene.shape is not None:
                shapes = [shape_of(c) for c in every]
                atoms["shape"] = is_unique_mode(shapes, scene.shape)
                observed["shapes"] = dict(Counter(shapes))
            if scene.size is not None:
                sizes = [size_of(c, scene.shape, scale) for c in every]  # shape given: count the area as that shape
                atoms["size"] = is_unique_mode(sizes, scene.size)
                observed["sizes"] = dict(Counter(sizes))
            if scene.count is not None:
                counts = [len(cs) for cs in comps]
                atoms["count"] = int(np.median(counts)) == scene.count
                observed["count"] = counts
            if scene.motions:
                disps = segment_displacements(comps, bg_flow, present, len(scene.motions))
                got = None if disps is None else [classify_motion(d, scale) for d in disps]
                observed["motions"] = got
                observed["segment_disp"] = None if disps is None else [d.sum(0).tolist() for d in disps]
                atoms["motion"] = got is not None and sorted(got) == sorted(scene.motions)
                if len(scene.motions) > 1:
                    atoms["order"] = got is not None and tuple(got) == tuple(scene.motions)
        if scene.camera is not None:
            observed["camera"] = camera_of(bg_flow, scale)
            observed["camera_flow"] = bg_flow.mean(0).tolist()
            atoms["camera"] = observed["camera"] == scene.camera

        vals = np.array(list(atoms.values()), dtype=float)
        score = clean * (0.5 * float(vals.all()) + 0.5 * float(vals.mean()))
        obj_atoms = [atoms[k] for k in ("shape", "size", "count", "motion", "order", "pour") if k in atoms]
        failed_share = 1.0 - float(np.mean(obj_atoms)) if obj_atoms else 0.0
        error_map = np.maximum(stray.astype(np.float32), obj_mask * failed_share)
        if not atoms["existence"]:
            error_map[~present] = 1.0
        return Verdict(score, atoms, clean, error_map, observed)

    # ------------------------------------------------------------------------------------------ batch
    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        finite = check_inputs(videos, prompts, self.name)
        b = len(prompts)
        scores = torch.full((b,), float("nan"))
        comps = {a: torch.full((b,), float("nan")) for a in ATOMS}
        maps = torch.zeros(videos.shape[0], videos.shape[1], videos.shape[3], videos.shape[4])
        details: list[dict] = []
        for i, (video, prompt) in enumerate(zip(videos, prompts)):
            if not finite[i]:
                details.append({"invalid": "non-finite pixels"})
                continue
            v = self.judge(video, parse(prompt))
            scores[i] = v.score
            for a, ok in v.atoms.items():
                comps[a][i] = float(ok)
            maps[i] = torch.from_numpy(v.error_map)
            details.append({"atoms": v.atoms, "clean": v.clean, **v.observed})
        return RewardOutput(scores=scores, components={a: c for a, c in comps.items() if not c.isnan().all()},
                            maps=maps, details=details)
