"""Deterministic ShapeWorld renderer with exact ground truth (DESIGN.md §3).

Coordinates are screen pixels, x to the right and y downwards; a pixel's centre is at integer coordinates.
Objects live in world coordinates and the camera offset c(t) is subtracted, so "camera pans left" (c_x
decreasing) moves the background and every object to the right on screen. Shapes are drawn with an analytic
anti-aliased coverage, the background is an analytic periodic texture, so a camera shift by any sub-pixel amount
is exact and the ground-truth flow of every pixel centre is known:

    flow_t(p) = pos_{t+1} - pos_t of the object covering p at frame t (its mask), else -(c(t+1) - c(t)).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vidtune.errors import VidtuneError
from vidtune.world.grammar import Scene, segment_transitions

PALETTE = {
    "red": (0.92, 0.12, 0.10),
    "green": (0.10, 0.78, 0.18),
    "blue": (0.12, 0.28, 0.95),
    "yellow": (0.96, 0.88, 0.08),
    "magenta": (0.90, 0.15, 0.85),
    "cyan": (0.08, 0.85, 0.90),
}
SIZE_RADIUS = {"small": 3.5, "large": 5.5}  # half-extent at 32 px; scaled with the canvas
MOVE_SPEED = 1.5  # px / frame at 32 px
CAMERA_SPEED = 1.0
GRAVITY = 0.6
BOUNCE_GRAVITY = 1.2
RESTITUTION = 0.8


class InfeasibleScene(VidtuneError):
    """The scene's trajectory does not fit the canvas for this seed."""


@dataclass(frozen=True)
class Clip:
    """A rendered clip and its ground truth.

    video   [T, H, W, 3] float32 in [0, 1]
    masks   [T, K, H, W] bool, one channel per object (a pour is one object made of particles)
    tracks  [T, K, 2]    float32 screen centre (x, y) of each object
    flow    [T-1, 2, H, W] float32 forward flow (dx, dy) from frame t to t+1, pixel units
    camera  [T, 2]       float32 camera offset (x, y)
    """

    scene: Scene
    video: np.ndarray
    masks: np.ndarray
    tracks: np.ndarray
    flow: np.ndarray
    camera: np.ndarray


# ---------------------------------------------------------------------------------------------- geometry


def _coverage(shape: str, xx: np.ndarray, yy: np.ndarray, cx: float, cy: float, r: float) -> np.ndarray:
    """Anti-aliased coverage in [0, 1] from a signed distance d: clip(0.5 - d, 0, 1)."""
    dx, dy = xx - cx, yy - cy
    if shape == "circle":
        d = np.sqrt(dx * dx + dy * dy) - r
    elif shape == "square":
        d = np.maximum(np.abs(dx), np.abs(dy)) - r * 0.9
    elif shape == "triangle":  # upright: apex (0, -r), base corners (+-r, r); outward edge normals (0,1), (+-2,-1)/sqrt5
        k = 1.0 / np.sqrt(5.0)
        d = np.maximum(np.maximum(dy - r, (2.0 * dx - (dy + r)) * k), (-2.0 * dx - (dy + r)) * k)
    else:
        raise VidtuneError(f"unknown shape {shape!r}")
    return np.clip(0.5 - d, 0.0, 1.0)


def _background(rng: np.random.Generator, contrast: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                          np.ndarray]:
    """Parameters of a periodic low-saturation texture: integer frequencies over a 64-px period; ``contrast``
    scales the amplitudes (the same random draws, so the same clip with a stronger or weaker texture)."""
    n = 4
    freqs = rng.integers(1, 4, size=(n, 2)) * rng.choice([-1, 1], size=(n, 2))
    phases = rng.uniform(0, 2 * np.pi, size=n)
    amps = rng.uniform(0.03, 0.07, size=n) * contrast
    tint = rng.uniform(-0.03, 0.03, size=3) + rng.uniform(0.36, 0.50)
    return freqs.astype(np.float64), phases, amps, tint


def _texture(params, xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
    freqs, phases, amps, tint = params
    w = 2 * np.pi / 64.0
    val = np.zeros_like(xx)
    for (fx, fy), ph, a in zip(freqs, phases, amps):
        val = val + a * np.sin(w * (fx * xx + fy * yy) + ph)
    return np.clip(tint[None, None, :] + val[..., None], 0.0, 1.0)


# ---------------------------------------------------------------------------------------------- motion


def bounce_height(t: float, drop: float, g: float, e: float) -> float:
    """Displacement below the start at time t of a body dropped from rest ``drop`` px above a floor, bouncing with
    restitution e: free fall y = ½ g t² until the floor at t₁ = √(2·drop/g), then parabolic arcs whose launch
    speed shrinks by e at every impact."""
    t_hit = np.sqrt(2 * drop / g)
    if t <= t_hit:
        return 0.5 * g * t * t
    v, tau = e * g * t_hit, t - t_hit
    while tau > 2 * v / g and v > 1e-6:
        tau -= 2 * v / g
        v *= e
    return drop - (v * tau - 0.5 * g * tau * tau)


def relative_trajectory(motions: tuple[str, ...], frames: int, scale: float, floor_drop: float) -> np.ndarray:
    """World displacement [T, 2] from the start position for a motion sequence (before the camera).

    ``floor_drop`` is the height (px) above the floor where a bounce starts; the floor is y = floor_drop.
    """
    pos = np.zeros((frames, 2))
    vel = np.zeros(2)
    p = np.zeros(2)
    for seg, trans in zip(motions, segment_transitions(len(motions), frames)):
        for t in trans:
            match seg:
                case "left" | "right" | "up" | "down":
                    d = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}[seg]
                    vel = np.array(d, dtype=float) * MOVE_SPEED * scale
                    p = p + vel
                case "still":
                    vel = np.zeros(2)
                case "fall":
                    vel = np.array([0.0, max(vel[1], 0.0) + GRAVITY * scale])
                    p = p + vel
                case "bounce":  # exact ballistic path with elastic-loss reflections (no integrator jitter)
                    p = np.array([p[0], bounce_height(t + 1, floor_drop, BOUNCE_GRAVITY * scale, RESTITUTION)])
                    vel = np.zeros(2)
                case _:
                    raise VidtuneError(f"unknown motion {seg!r}")
            pos[t + 1] = p
    return pos


def camera_path(camera: str | None, frames: int, scale: float) -> np.ndarray:
    """Camera offset [T, 2]; panning left decreases c_x (content moves right on screen)."""
    d = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}.get(camera or "static", (0, 0))
    return np.arange(frames)[:, None] * np.array(d, dtype=float)[None] * CAMERA_SPEED * scale


def _place(rng, rel: np.ndarray, r: float, size: int, count: int, prefer: str) -> list[np.ndarray] | None:
    """Start positions for ``count`` objects that keep every screen position inside the canvas."""
    margin = r + 1.0
    lo = margin - rel.min(axis=0)
    hi = (size - 1 - margin) - rel.max(axis=0)
    if np.any(lo > hi):
        return None
    for _ in range(60):
        starts = []
        for _k in range(count):
            s = rng.uniform(lo, hi)
            if prefer == "top":  # falls start high
                s[1] = lo[1] + rng.uniform(0, min(2.0, hi[1] - lo[1]))
            elif prefer == "floor":  # bounces start so that the floor is near the bottom
                s[1] = hi[1] - rng.uniform(0, min(2.0, hi[1] - lo[1]))
            starts.append(s)
        # Chebyshev separation: bounding boxes (and so any of the shapes) stay >= 2 px apart
        ok = all(np.abs(a - b).max() >= 2 * r + 2 for i, a in enumerate(starts) for b in starts[i + 1 :])
        if ok:
            return starts
    return None


# ---------------------------------------------------------------------------------------------- render


def render(scene: Scene, seed: int, frames: int = 8, size: int = 32, contrast: float = 1.0,
           shown_motions: tuple[str, ...] | None = None) -> Clip:
    """Render ``scene`` deterministically from ``seed``. Open attributes (None) are drawn from the seed too;
    ``contrast`` scales the background texture's amplitude (1 = the world's default).

    ``shown_motions`` renders a counterfactual of the same clip: background, camera, objects and their start
    positions (so the first frame) are those of ``scene``, but the objects move by ``shown_motions`` (they may then
    leave the canvas). The returned clip's ``scene`` is still ``scene``."""
    rng = np.random.default_rng(seed)
    scale = size / 32.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    bg_params = _background(rng, contrast)
    cam = camera_path(scene.camera, frames, scale)
    if scene.pour:
        if shown_motions is not None:
            raise VidtuneError(f"a pour has no object motion to replace (shown_motions={shown_motions})")
        return _render_pour(scene, rng, frames, size, scale, xx, yy, bg_params, cam)

    size_name = scene.size or rng.choice(["small", "large"])
    count = scene.count or int(rng.integers(1, 4))
    motions = scene.motions or (str(rng.choice(["left", "right", "up", "down", "still", "fall", "bounce"])),)
    r = SIZE_RADIUS[size_name] * scale
    floor_drop = float(rng.uniform(5.0, 8.0)) * scale
    rel = relative_trajectory(motions, frames, scale, floor_drop) - cam
    prefer = "floor" if "bounce" in motions else ("top" if motions[0] == "fall" else "any")
    starts = _place(rng, rel, r, size, count, prefer)
    if starts is None:
        raise InfeasibleScene(f"scene does not fit a {size}px canvas: {scene}")
    if shown_motions is not None:
        rel = relative_trajectory(shown_motions, frames, scale, floor_drop) - cam

    colour = np.array(PALETTE[scene.colour])
    video = np.empty((frames, size, size, 3), np.float32)
    masks = np.zeros((frames, count, size, size), bool)
    tracks = np.zeros((frames, count, 2), np.float32)
    flow = np.zeros((max(frames - 1, 0), 2, size, size), np.float32)
    for t in range(frames):
        img = _texture(bg_params, xx + cam[t, 0], yy + cam[t, 1])
        for k, s in enumerate(starts):
            c = s + rel[t]
            a = _coverage(scene.shape, xx, yy, c[0], c[1], r)
            img = img * (1 - a[..., None]) + colour[None, None] * a[..., None]
            masks[t, k] = a > 0.5
            tracks[t, k] = c
        video[t] = img
    for t in range(frames - 1):
        flow[t, 0] = -(cam[t + 1, 0] - cam[t, 0])
        flow[t, 1] = -(cam[t + 1, 1] - cam[t, 1])
        for k in range(count):
            d = tracks[t + 1, k] - tracks[t, k]
            flow[t, 0][masks[t, k]] = d[0]
            flow[t, 1][masks[t, k]] = d[1]
    return Clip(scene, video, masks, tracks, flow, cam.astype(np.float32))


def _render_pour(scene, rng, frames, size, scale, xx, yy, bg_params, cam) -> Clip:
    """A stream of small particles from a source near the top, falling under gravity (a fluid stand-in)."""
    src_x = rng.uniform(0.3, 0.7) * size
    n = 3 * (frames + 6)
    spawn = rng.uniform(-6, frames - 1, size=n)
    vx = rng.normal(0.0, 0.25, size=n) * scale
    x0 = src_x + rng.normal(0.0, 0.6, size=n) * scale
    y0 = 2.0 * scale
    half = 1.0 * scale
    g = GRAVITY * scale

    def positions(t: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        age = t - spawn
        alive = age >= 0
        px = x0 + vx * age - cam[int(t), 0] + cam[0, 0]
        py = y0 + 0.5 * g * age**2 + 0.8 * scale * age - cam[int(t), 1] + cam[0, 1]
        return px, py, alive

    colour = np.array(PALETTE[scene.colour])
    video = np.empty((frames, size, size, 3), np.float32)
    masks = np.zeros((frames, 1, size, size), bool)
    tracks = np.zeros((frames, 1, 2), np.float32)
    flow = np.zeros((max(frames - 1, 0), 2, size, size), np.float32)
    owner = np.full((frames, size, size), -1, int)
    pos = [positions(t) for t in range(frames)]
    for t in range(frames):
        img = _texture(bg_params, xx + cam[t, 0], yy + cam[t, 1])
        px, py, alive = pos[t]
        vis = []
        for i in np.flatnonzero(alive):
            if -2 < px[i] < size + 1 and -2 < py[i] < size + 1:
                a = _coverage("square", xx, yy, px[i], py[i], half / 0.9)
                img = img * (1 - a[..., None]) + colour[None, None] * a[..., None]
                m = a > 0.5
                owner[t][m] = i
                vis.append((px[i], py[i]))
        masks[t, 0] = owner[t] >= 0
        tracks[t, 0] = np.mean(vis, axis=0) if vis else (np.nan, np.nan)
        video[t] = img
    for t in range(frames - 1):
        flow[t, 0] = -(cam[t + 1, 0] - cam[t, 0])
        flow[t, 1] = -(cam[t + 1, 1] - cam[t, 1])
        ids = owner[t]
        m = ids >= 0
        (px0, py0, _), (px1, py1, _) = pos[t], pos[t + 1]
        flow[t, 0][m] = (px1 - px0)[ids[m]]
        flow[t, 1][m] = (py1 - py0)[ids[m]]
    return Clip(scene, video, masks, tracks, flow, cam.astype(np.float32))
