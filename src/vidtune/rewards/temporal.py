"""Flow-based temporal and physics critics (DESIGN.md §3, judge 3; ALGORITHMS.md §10.2), one :class:`TemporalCritic`
per ``kind``; scores in [0, 1], higher = better, NaN only for non-finite pixels or (gravity, the one critic reading the
prompt) a prompt without gravity. Thresholds in min(H, W)/256 px (§10.2). Flow: OpenCV on frames upsampled ×k to a
short side ≥ ``flow_size`` (32-px ShapeWorld: DIS object EPE 0.98 px native, 0.74 px at ×2; 9 ms/clip, 1 thread)."""

from __future__ import annotations

import math
from typing import Literal

import cv2
import numpy as np
import torch

from vidtune.errors import VidtuneError
from vidtune.math import vbench
from vidtune.math.temporal_critics import freeze_score, warped_flickering
from vidtune.rewards.base import check_inputs, register
from vidtune.rewards.verifier import COLOUR_NAMES, segment_palette, vertical_shift
from vidtune.types import RewardOutput
from vidtune.video.flow import Estimator, _dis, flow_pair
from vidtune.world.grammar import parse, segment_transitions

Kind = Literal["motion_smoothness", "dynamic_degree", "freeze", "flicker", "gravity"]


def flows(frames: np.ndarray, pairs: list[tuple[int, int]], estimator: Estimator = "dis",
          flow_size: int = 64) -> np.ndarray:
    """Flows F_{a→b} for index pairs of ``frames`` [F, H, W, 3] in [0, 1] → [n, 2, H, W] px, a(p) ≈ b(p + F(p)),
    computed at ×k, k = max(1, ⌈flow_size / min(H, W)⌉), and mapped back."""
    h, w = frames.shape[1:3]
    k = max(1, math.ceil(flow_size / min(h, w)))
    big = frames if k == 1 else np.stack([np.clip(cv2.resize(f, (w * k, h * k), interpolation=cv2.INTER_CUBIC), 0, 1)
                                          for f in frames])
    dis = _dis(min(h, w) * k) if estimator == "dis" else None
    out = [flow_pair(big[a], big[b], estimator, dis) for a, b in pairs]
    if k > 1:
        out = [np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_AREA) for c in f]) / k for f in out]
    return np.stack(out).astype(np.float32) if out else np.zeros((0, 2, h, w), np.float32)


def consecutive(n: int, step: int = 1) -> list[tuple[int, int]]:
    """Pairs (i, i + step) of the frames 0, step, 2·step, … < n (§10.2 frame sampling)."""
    return [(i, i + step) for i in range(0, n - step, step)]


def score_batch(name: str, videos: torch.Tensor, prompts: list[str], clip_fn) -> RewardOutput:
    """Batch loop: ``check_inputs``, ``clip_fn(frames [F, H, W, 3], prompt) → (score, comps, details)``, NaN rows."""
    finite = check_inputs(videos, prompts, name)
    scores, comps, details = torch.full((len(prompts),), math.nan), {}, []
    for i, (video, prompt) in enumerate(zip(videos, prompts)):
        if not finite[i]:
            details.append({"invalid": "non-finite pixels"})
            continue
        scores[i], c, d = clip_fn(video.detach().float().permute(0, 2, 3, 1).cpu().numpy(), prompt)
        for k, v in c.items():
            comps.setdefault(k, torch.full((len(prompts),), math.nan))[i] = v
        details.append(d)
    return RewardOutput(scores=scores, components=comps, details=details)


def fall_atoms(v: np.ndarray, unit: float) -> dict[str, bool]:
    """A falling body descends (mean v > unit) and speeds up (least-squares slope of v > unit/2); v: vertical
    velocity per transition (px/frame, down +). Reversed, a fall rises: ``down`` fails (a = g is time-symmetric)."""
    out = {"down": bool(v.mean() > unit)}
    return out | ({"accelerates": bool(np.polyfit(np.arange(len(v)), v, 1)[0] > unit / 2)} if len(v) >= 2 else {})


def bounce_atoms(v: np.ndarray, unit: float) -> dict[str, bool]:
    """A bouncing body accelerates downward between impacts (g = median of a_j = v_{j+1} − v_j outside the first
    impact, > unit/2) and loses energy at the impact (restitution ≤ 1): with y = Σv and E_j = ½v_j² − g·ȳ_j (ȳ_j the
    mid-transition position), mean E after ≤ mean E before. The impact spans the last descent (v > unit) before the
    first rise (v < −unit). Time reversal keeps g but makes the impact gain energy."""
    a = np.diff(v)
    rises = [i for i in np.flatnonzero(v < -unit) if (v[:i] > unit).any()]
    if not rises:
        return {"accelerates": bool(len(a) and np.median(a) > unit / 2)}
    up = rises[0]
    down = int(np.flatnonzero(v[:up] > unit)[-1])
    g = float(np.median(free)) if len(free := np.concatenate([a[:down], a[up:]])) else 0.0
    y = np.concatenate([[0.0], np.cumsum(v)])
    e = 0.5 * v**2 - g * 0.5 * (y[:-1] + y[1:])
    seen = down > 0 and up + 1 < len(v)  # descent before and flight after the impact
    return {"accelerates": g > unit / 2} | ({"dissipative": bool(e[up + 1:].mean() <= e[:down].mean())} if seen else {})


class TemporalCritic:
    """One critic of the module (``kind``); built by the registered factories below, which document each kind."""

    range = (0.0, 1.0)

    def __init__(self, kind: Kind, estimator: Estimator = "dis", flow_size: int = 64, fps: float = 8.0, **options):
        if estimator not in ("dis", "farneback") or flow_size < 1 or not options.get("ratio", 1) > 0:
            raise VidtuneError(f"{kind}: need estimator dis/farneback, flow_size ≥ 1, ratio > 0; got {estimator!r}, "
                               f"flow_size={flow_size}, {options}")
        self.name = self.kind = kind
        self.estimator, self.flow_size, self.fps, self.options = estimator, flow_size, fps, options

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context) -> RewardOutput:
        return score_batch(self.name, videos, prompts, self.clip)

    def flow(self, x: np.ndarray | torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
        """Flows of ``pairs`` of x: [F, H, W, 3] in [0, 1], or [F, 3, H, W] in [0, 255] (motion smoothness)."""
        x = (x.permute(0, 2, 3, 1).float() / 255).numpy() if isinstance(x, torch.Tensor) else x
        return torch.from_numpy(flows(x, pairs, self.estimator, self.flow_size))

    def top5(self, x: np.ndarray) -> tuple[vbench.DynamicParams, torch.Tensor]:
        """§10.2 dynamic-degree parameters and top-5 % flow magnitudes of consecutive sampled pairs [n − 1]."""
        p = vbench.dynamic_degree_params(x.shape[1], x.shape[2], self.fps, x.shape[0])
        return p, vbench.top_flow_magnitude(self.flow(x, consecutive(x.shape[0], p.interval)), 0.05)

    def clip(self, x: np.ndarray, prompt: str) -> tuple[float, dict, dict]:
        frames = torch.from_numpy(x).permute(0, 3, 1, 2).double() * 255.0
        match self.kind:
            case "motion_smoothness":
                pair = lambda a, b: self.flow(torch.stack([a, b]), [(0, 1)])[0]  # noqa: E731  [2, H, W] a → b
                return vbench.motion_smoothness(frames, pair), {}, {}
            case "dynamic_degree":
                p, m = self.top5(x)
                return (float((m > p.threshold).double().mean()), {"dynamic": float(vbench.is_dynamic(m, p)),
                        "top5": float(m.mean())}, {"pair_top5": m.round(decimals=3).tolist()})
            case "freeze":
                moving = vbench.is_dynamic(*reversed(self.top5(x)))
                score, frozen = freeze_score(frames, self.options["ratio"], moving)
                return score, {"frozen_pairs": float(frozen), "moving": float(moving)}, {}
            case "flicker":
                warped = vbench.backward_warp(frames[:-1], self.flow(x, [(f + 1, f) for f in range(len(x) - 1)]))
                return warped_flickering(frames, warped), {}, {}
            case "gravity":
                return self.gravity(x, prompt)
        raise VidtuneError(f"unknown temporal critic {self.kind!r}; expected one of {Kind.__args__}")

    def gravity(self, x: np.ndarray, prompt: str) -> tuple[float, dict, dict]:
        scene, (n, h, w) = parse(prompt), x.shape[:3]
        motions = ("pour",) if scene.pour else (scene.motions or ())
        if not any(m in ("fall", "bounce", "pour") for m in motions):
            return self.options["not_applicable"], {"applicable": 0.0}, {}
        labels = segment_palette(x, self.options["colour_threshold"])
        mask, unit = labels == COLOUR_NAMES.index(scene.colour), min(h, w) / 256
        far = [~cv2.dilate((lab >= 0).astype(np.uint8), np.ones((9, 9), np.uint8)).astype(bool) for lab in labels]
        cam = np.stack([np.median(f.reshape(2, -1)[:, k.ravel() if k.any() else slice(None)], axis=1)
                        for f, k in zip(self.flow(x, consecutive(n)).numpy(), far)])
        if scene.pour:
            v = np.array([vertical_shift(mask[t], mask[t + 1], int(round(cam[t, 0])), math.ceil(8 * h / 32))
                          - cam[t, 1] for t in range(n - 1) if mask[t].any()])
            atoms = [{"down": bool(len(v)) and float(v.mean()) > unit}]
        else:
            v = np.diff([np.nonzero(m)[0].mean() if m.any() else math.nan for m in mask]) - cam[:, 1]
            segs = [(m, v[list(tr)]) for m, tr in zip(motions, segment_transitions(len(motions), n))]
            atoms = [(fall_atoms if m == "fall" else bounce_atoms)(s, unit) if np.isfinite(s).all()
                     else {"foreground": False} for m, s in segs if m in ("fall", "bounce")]
        ok = [b for a in atoms for b in a.values()]
        return (float(np.mean(ok)), {"applicable": 1.0, "passed": float(all(ok))},
                {"atoms": atoms, "velocity": np.round(v, 2).tolist()})


@register("motion_smoothness")
def motion_smoothness(estimator: Estimator = "dis", flow_size: int = 64) -> TemporalCritic:
    """ALGORITHMS.md §10.2 weight-free motion smoothness: odd frames interpolated from even ones with flow
    (not comparable with published VBench numbers). A constant clip scores 1."""
    return TemporalCritic("motion_smoothness", estimator, flow_size)


@register("dynamic_degree")
def dynamic_degree(estimator: Estimator = "dis", flow_size: int = 64, fps: float = 8.0) -> TemporalCritic:
    """ALGORITHMS.md §10.2 dynamic degree, graded: share of sampled pairs with top-5 % flow magnitude > thr =
    6·max(1, 8/fps)·min(H, W)/256. ``dynamic`` = VBench's flag (score ≥ count/(n − 1)); ``top5`` = mean (px)."""
    return TemporalCritic("dynamic_degree", estimator, flow_size, fps)


@register("freeze")
def freeze(ratio: float = 0.2, estimator: Estimator = "dis", flow_size: int = 64, fps: float = 8.0) -> TemporalCritic:
    """Freeze/stall: near-duplicate consecutive frames amid motion. e_f = mean |I_f − I_{f+1}|, ref = Q_0.75(e),
    s_f = min(1, e_f/(ρ·ref)), ρ = ``ratio``; score = mean_f s_f if the clip moves (§10.2 dynamic flag), else 1. A
    duplicate pair scores 0 (``frozen_pairs``: e_f < ρ·ref/2); so does a still segment of a moving clip (no prompt)."""
    return TemporalCritic("freeze", estimator, flow_size, fps, ratio=ratio)


@register("flicker")
def flicker(estimator: Estimator = "dis", flow_size: int = 64) -> TemporalCritic:
    """ALGORITHMS.md §10.2 temporal flickering, motion-compensated so that it applies to moving clips: (255 − mean_f
    mean|I_{f+1} − warp(I_f, F_{f+1→f})|)/255 (bilinear backward warp). With zero flow it is VBench's definition;
    the exact static-only dimension is in ``metrics/vbench_eval.py``."""
    return TemporalCritic("flicker", estimator, flow_size)


@register("gravity")
def gravity(colour_threshold: float = 0.3, not_applicable: float = math.nan, estimator: Estimator = "dis",
            flow_size: int = 64) -> TemporalCritic:
    """Gravity plausibility for fall/bounce/pour prompts (DESIGN.md §3). Foreground = the prompt colour's palette
    pixels (flow-segmented foregrounds miss small fast objects at 32 px); camera = median flow far from them; v =
    centroid motion − camera per transition of each gravity segment → :func:`fall_atoms`, :func:`bounce_atoms`; a
    pour must descend (mean vertical shift of the particle mask − camera > unit; acceleration is not observable on
    2-px particles). Score = share of atoms passed (no foreground fails). Other prompts score ``not_applicable``
    (NaN; in a composite use e.g. 1.0: a constant within a prompt group gives zero advantage)."""
    return TemporalCritic("gravity", estimator, flow_size, colour_threshold=colour_threshold,
                          not_applicable=not_applicable)
