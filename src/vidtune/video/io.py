"""Video tensors <-> files: mp4 (PyAV through imageio), gif, and PNG grids.

Pixel videos are float tensors/arrays [T, 3, H, W] in [0, 1] (torch) or [T, H, W, 3] (numpy).
"""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch

from vidtune.errors import VidtuneError


def to_uint8_frames(video: torch.Tensor | np.ndarray, scale: int = 1) -> np.ndarray:
    """[T,3,H,W] tensor or [T,H,W,3] array in [0,1] → uint8 [T, H*scale, W*scale, 3] (nearest upscaling)."""
    if isinstance(video, torch.Tensor):
        if video.ndim != 4 or video.shape[1] != 3:
            raise VidtuneError(f"expected a video tensor [T, 3, H, W], got shape {tuple(video.shape)}")
        arr = video.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    else:
        if video.ndim != 4 or video.shape[-1] != 3:
            raise VidtuneError(f"expected a video array [T, H, W, 3], got shape {video.shape}")
        arr = np.clip(video.astype(np.float32), 0, 1)
    out = (arr * 255.0 + 0.5).astype(np.uint8)
    if scale > 1:
        out = out.repeat(scale, axis=1).repeat(scale, axis=2)
    return out


def _writable(path: Path) -> Path:
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VidtuneError(f"cannot create the folder for output {path}: {e.strerror}") from None
    if path.is_dir():
        raise VidtuneError(f"output path {path} is a directory")
    return path


def save_video(video, path: str | Path, fps: int = 8, scale: int = 4) -> Path:
    """Write an mp4 (H.264 via PyAV) or a looping gif, chosen by the suffix."""
    path = _writable(Path(path))
    frames = to_uint8_frames(video, scale)
    suffix = path.suffix.lower()
    try:
        if suffix == ".mp4":
            # H.264 needs even dimensions; nearest upscaling by an even factor keeps them even
            iio.imwrite(path, frames, plugin="pyav", codec="libx264", fps=fps,
                        out_pixel_format="yuv420p")
        elif suffix == ".gif":
            iio.imwrite(path, frames, plugin="pillow", duration=int(1000 / fps), loop=0)
        else:
            raise VidtuneError(f"unsupported video suffix {suffix!r} for {path} (use .mp4 or .gif)")
    except OSError as e:
        raise VidtuneError(f"cannot write {path}: {e.strerror or e}") from None
    return path


def read_video(path: str | Path) -> torch.Tensor:
    """Read an mp4/gif into [T, 3, H, W] float in [0, 1]."""
    path = Path(path)
    if not path.is_file():
        raise VidtuneError(f"video file not found: {path}")
    frames = iio.imread(path, plugin="pyav" if path.suffix.lower() == ".mp4" else "pillow", index=None)
    frames = np.asarray(frames)[..., :3]
    return torch.from_numpy(frames.astype(np.float32) / 255.0).permute(0, 3, 1, 2)


def video_grid(videos: list, nrow: int | None = None, scale: int = 4, pad: int = 2) -> np.ndarray:
    """Tile videos [T,3,H,W] into one uint8 video [T, H', W', 3] (rows of ``nrow`` clips)."""
    frames = [to_uint8_frames(v, scale) for v in videos]
    t, h, w, _ = frames[0].shape
    n = len(frames)
    nrow = nrow or n
    ncol_rows = (n + nrow - 1) // nrow
    grid = np.full((t, ncol_rows * (h + pad) + pad, nrow * (w + pad) + pad, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, nrow)
        grid[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = f
    return grid


def save_png_grid(videos: list, path: str | Path, scale: int = 4) -> Path:
    """One PNG: a row per video, a column per frame."""
    path = _writable(Path(path))
    rows = [np.concatenate(list(to_uint8_frames(v, scale)), axis=1) for v in videos]
    try:
        iio.imwrite(path, np.concatenate(rows, axis=0))
    except OSError as e:
        raise VidtuneError(f"cannot write {path}: {e.strerror or e}") from None
    return path
