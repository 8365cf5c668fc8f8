"""Structural-instability score ψ of a clip (ALGORITHMS.md §7.2, default score), from optical flow and masks.

Per consecutive frame pair: background term = mean photometric error on background pixels after warping frame
t+1 onto frame t with a robustly fitted global similarity motion (the camera), over forward–backward-consistent
pixels only; object term = coefficient of variation of each object's mask area over time plus (1 − mean IoU of
motion-compensated consecutive masks). ψ = w_bg·background + w_obj·object (object term omitted without masks).
Larger = less stable. Used for SFT re-weighting (on targets) and as the eval metric under camera pans.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vidtune.video.flow import flow_pair


def _frames(video) -> np.ndarray:
    if isinstance(video, torch.Tensor):
        return video.detach().float().permute(0, 2, 3, 1).cpu().numpy()
    return np.asarray(video, dtype=np.float32)


def background_term(frames: np.ndarray, masks: np.ndarray | None, fb_tol: float = 1.0,
                    flows: np.ndarray | None = None) -> float:
    """Mean |I_t − warp(I_{t+1})| on forward–backward-consistent background pixels after a global camera fit.

    ``flows`` [T−1, 2, H, W]: exact forward flows (a renderer's ground truth); then every in-frame pixel counts as
    consistent and no flow is estimated. Otherwise OpenCV DIS flows in both directions are used."""
    t_n, h, w, _ = frames.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    errs = []
    for t in range(t_n - 1):
        a, b = frames[t], frames[t + 1]
        fwd = flows[t] if flows is not None else flow_pair(a, b)
        mx, my = xx + fwd[0], yy + fwd[1]
        if flows is None:
            bwd = flow_pair(b, a)
            back = np.stack([cv2.remap(bwd[c], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
                             for c in range(2)])
            consistent = np.linalg.norm(fwd + back, axis=0) < fb_tol
        else:
            consistent = np.ones((h, w), bool)
        inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        bg = consistent & inside
        if masks is not None:
            bg &= ~masks[t].any(0)
        if bg.sum() < 8:
            continue
        src = np.stack([xx[bg], yy[bg]], 1)
        m, _ = cv2.estimateAffinePartial2D(src, src + np.stack([fwd[0][bg], fwd[1][bg]], 1), method=cv2.RANSAC,
                                           ransacReprojThreshold=1.0)
        if m is None:
            continue
        warped = cv2.warpAffine(b, m, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
        errs.append(float(np.abs(a - warped).mean(-1)[bg].mean()))
    return float(np.mean(errs)) if errs else float("nan")


def object_term(masks: np.ndarray) -> float:
    """Mean over objects of CV(area over time) + (1 − mean IoU of centroid-compensated consecutive masks).

    masks: [T, K, H, W] bool. A rigid object that only translates scores 0."""
    terms = []
    t_n, k_n = masks.shape[:2]
    for k in range(k_n):
        area = masks[:, k].reshape(t_n, -1).sum(1).astype(np.float64)
        if (area == 0).any():
            terms.append(1.0 + 1.0)  # the object vanished in some frame: maximal instability
            continue
        cv = float(area.std() / area.mean())
        ious = []
        for t in range(t_n - 1):
            ya, xa = np.nonzero(masks[t, k])
            yb, xb = np.nonzero(masks[t + 1, k])
            dy, dx = int(round(yb.mean() - ya.mean())), int(round(xb.mean() - xa.mean()))
            shifted = np.roll(np.roll(masks[t, k], dy, 0), dx, 1)
            inter = (shifted & masks[t + 1, k]).sum()
            union = (shifted | masks[t + 1, k]).sum()
            ious.append(inter / union)
        terms.append(cv + 1.0 - float(np.mean(ious)))
    return float(np.mean(terms)) if terms else 0.0


def structural_instability(video, masks: np.ndarray | None = None, w_bg: float = 1.0, w_obj: float = 1.0,
                           flows: np.ndarray | None = None) -> float:
    """ψ ≥ 0 of one clip ([T, 3, H, W] tensor or [T, H, W, 3] array in [0, 1]; masks [T, K, H, W] or None;
    optional exact forward flows [T−1, 2, H, W])."""
    frames = _frames(video)
    psi = w_bg * background_term(frames, masks, flows=flows)
    if masks is not None and masks.shape[1] > 0:
        psi += w_obj * object_term(masks)
    return psi
