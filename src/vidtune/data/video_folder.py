"""User videos for Stage I SFT: a JSONL manifest or a folder of videos with same-named ``.txt`` captions.

Two layouts:

* manifest — a ``.jsonl`` file, one object per line: ``{"video": "clips/a.mp4", "caption": "..."}``. Relative video
  paths are resolved against the manifest's folder; other keys are ignored; blank lines are skipped.
* folder — every video file directly inside the folder (suffixes :data:`VIDEO_SUFFIXES`, any case, sorted by name),
  its caption in the file of the same stem with suffix ``.txt`` (``a.mp4`` → ``a.txt``).

Every clip is decoded in full with PyAV, each frame resized to height × width with ``cv2.INTER_AREA`` (stretched,
no crop: pre-crop clips of another aspect ratio), and ``frames`` frames are sampled uniformly over the whole clip
(indices ``round(linspace(0, n − 1, frames))``, first and last frame included), so the caption describes what the
sampled frames show. Trim long clips beforehand: the stride between sampled frames grows with the clip's length.

The whole dataset is scanned before anything is returned. With ``on_bad="error"`` every problem (bad manifest line,
missing or undecodable file, too few frames, missing or empty caption) is listed in one :class:`DataError`; with
``on_bad="skip"`` each bad clip is logged as one warning and left out. No usable clip is always an error.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import cv2
import numpy as np
import torch

from vidtune.config import SFTDataConfig
from vidtune.errors import DataError
from vidtune.video.flow import video_flow

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".gif")
OnBad = Literal["error", "skip"]

log = logging.getLogger("vidtune.data")


@dataclass(frozen=True)
class Entry:
    """One clip the dataset lists. ``where`` names it in messages (file name, and manifest line); ``problems`` are
    what is already wrong with the listing itself (bad JSON line, missing caption, ...)."""

    where: str
    video: Path | None
    caption: str
    problems: tuple[str, ...] = ()


@dataclass(frozen=True)
class BadClip:
    """A clip left out of the dataset and why."""

    where: str
    reason: str


@dataclass(frozen=True)
class VideoDataset:
    """Decoded clips: ``videos`` uint8 [N, 3, F, H, W], one caption and source path per clip, and the clips skipped
    with ``on_bad="skip"`` (always empty with ``on_bad="error"``)."""

    videos: torch.Tensor
    captions: list[str]
    paths: list[Path]
    skipped: tuple[BadClip, ...]


# ---------------------------------------------------------------------------------------------- listing


def _caption_problem(caption: object) -> str | None:
    """Why a manifest caption is unusable, or None when it is a non-empty string."""
    if caption is None:
        return 'missing "caption"'
    if not isinstance(caption, str):
        return f'"caption" must be a string, got {type(caption).__name__}'
    return None if caption.strip() else 'empty "caption"'


def _manifest_entry(line: str, where: str, root: Path) -> Entry:
    """Parse one manifest line into an :class:`Entry` (malformed lines become entries with problems)."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        return Entry(where, None, "", (f"not valid JSON ({e.msg}, column {e.colno})",))
    if not isinstance(obj, dict):
        return Entry(where, None, "", (f'expected an object {{"video": ..., "caption": ...}}, got '
                                       f"{type(obj).__name__}",))
    video, caption = obj.get("video"), obj.get("caption")
    problems = []
    if not isinstance(video, str) or not video.strip():
        problems.append('missing "video" path')
        video_path = None
    else:
        where = f"{where} ({video})"
        video_path = root / Path(video).expanduser()  # an absolute path replaces root
    if (problem := _caption_problem(caption)) is not None:
        problems.append(problem)
    return Entry(where, video_path, caption.strip() if isinstance(caption, str) else "", tuple(problems))


def read_manifest(manifest: Path) -> list[Entry]:
    """Entries of a JSONL manifest, one per non-blank line, named ``<manifest>:<line>`` in messages."""
    try:
        lines = manifest.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read manifest {manifest}: {e}") from None
    return [_manifest_entry(line, f"{manifest.name}:{i}", manifest.parent)
            for i, line in enumerate(lines, start=1) if line.strip()]


def _folder_entry(video: Path) -> Entry:
    """A folder clip and its caption from ``<stem>.txt`` next to it."""
    caption_file = video.with_suffix(".txt")
    if not caption_file.is_file():
        return Entry(video.name, video, "", (f"no caption file {caption_file.name}",))
    try:
        caption = caption_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as e:
        return Entry(video.name, video, "", (f"cannot read caption file {caption_file.name} ({e})",))
    return Entry(video.name, video, caption, () if caption else (f"empty caption file {caption_file.name}",))


def read_folder(folder: Path) -> list[Entry]:
    """Entries of a folder of videos with same-named ``.txt`` captions (not recursive, sorted by file name)."""
    videos = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    return [_folder_entry(v) for v in videos]


def list_entries(path: str | Path) -> list[Entry]:
    """Entries of a dataset: a ``.jsonl`` manifest file or a folder of videos."""
    path = Path(path).expanduser()
    if path.is_dir():
        return read_folder(path)
    if path.is_file() and path.suffix.lower() == ".jsonl":
        return read_manifest(path)
    if path.exists():
        raise DataError(f"dataset {path} must be a .jsonl manifest or a folder of videos")
    raise DataError(f"dataset not found: {path}")


# ---------------------------------------------------------------------------------------------- decoding


def sample_indices(n_frames: int, frames: int) -> np.ndarray:
    """``frames`` distinct indices spread uniformly over ``n_frames`` (needs n_frames ≥ frames), first and last
    included: round(linspace(0, n_frames − 1, frames))."""
    return np.rint(np.linspace(0, n_frames - 1, frames)).astype(np.int64)


def _decode_resized(path: Path, height: int, width: int) -> list[np.ndarray]:
    """Every frame of the first video stream as uint8 [height, width, 3] RGB (INTER_AREA)."""
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError("cannot decode (no video stream)")
        return [cv2.resize(f.to_ndarray(format="rgb24"), (width, height), interpolation=cv2.INTER_AREA)
                for f in container.decode(video=0)]


def decode_clip(path: Path, frames: int, height: int, width: int) -> np.ndarray:
    """One video file → uint8 [3, frames, height, width], frames sampled uniformly (see :func:`sample_indices`).

    Raises :class:`DataError` with the reason (without the file name) when the file is missing, cannot be decoded
    or has fewer than ``frames`` frames.
    """
    if not path.is_file():
        raise DataError("file not found")
    try:
        decoded = _decode_resized(path, height, width)
    except (av.FFmpegError, OSError) as e:
        raise DataError(f"cannot decode ({getattr(e, 'strerror', None) or e})") from None
    if len(decoded) < frames:
        raise DataError(f"has {len(decoded)} frame(s), needs at least {frames}")
    clip = np.stack([decoded[i] for i in sample_indices(len(decoded), frames)])  # [F, H, W, 3]
    return np.ascontiguousarray(clip.transpose(3, 0, 1, 2))


def _check_entry(entry: Entry, frames: int, height: int, width: int) -> tuple[np.ndarray | None, list[str]]:
    """Decode one entry → (clip or None, every problem found)."""
    problems = list(entry.problems)
    if entry.video is None:
        return None, problems
    try:
        clip = decode_clip(entry.video, frames, height, width)
    except DataError as e:
        return None, problems + [str(e)]
    return (None if problems else clip), problems


# ---------------------------------------------------------------------------------------------- dataset


def _error_message(path: Path, bad: list[BadClip]) -> str:
    """One message naming every bad clip."""
    lines = "\n  ".join(f"{b.where}: {b.reason}" for b in bad)
    return (f"{len(bad)} bad clip(s) in dataset {path} (to leave them out: sft.data.on_bad=skip, or check-data "
            f"--on-bad skip):\n  {lines}")


def load_video_dataset(path: str | Path, frames: int, height: int, width: int,
                       on_bad: OnBad = "error") -> VideoDataset:
    """Scan, validate and decode a manifest or video folder (module docstring) → :class:`VideoDataset`.

    ``on_bad="error"`` raises one :class:`DataError` naming every bad clip after the whole scan; ``"skip"`` logs a
    warning per bad clip and keeps the rest. Raises :class:`DataError` when no usable clip remains.
    """
    if min(frames, height, width) < 1:
        raise ValueError(f"frames, height and width must be ≥ 1, got {frames}, {height}, {width}")
    if on_bad not in ("error", "skip"):
        raise ValueError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    path = Path(path).expanduser()
    clips, captions, paths, bad = [], [], [], []
    for entry in list_entries(path):
        clip, problems = _check_entry(entry, frames, height, width)
        if problems:
            bad.append(BadClip(entry.where, "; ".join(problems)))
        else:
            clips.append(clip)
            captions.append(entry.caption)
            paths.append(entry.video)
    if bad and on_bad == "error":
        raise DataError(_error_message(path, bad))
    for b in bad:
        log.warning("skipping %s: %s", b.where, b.reason)
    if not clips:
        skipped = f" ({len(bad)} bad clip(s) skipped)" if bad else ""
        raise DataError(f"dataset {path} has no usable clips{skipped}")
    return VideoDataset(torch.from_numpy(np.stack(clips)), captions, paths, tuple(bad))


def load_sft_videos(cfg: SFTDataConfig, frames: int, height: int, width: int) -> tuple[torch.Tensor, list[str]]:
    """Stage I clips from ``sft.data`` (source video_folder) → (videos uint8 [N, 3, F, H, W], captions)."""
    if cfg.source != "video_folder":
        raise ValueError(f"load_sft_videos reads sft.data.source=video_folder, got {cfg.source!r} (the stage "
                         "renders ShapeWorld clips itself)")
    ds = load_video_dataset(cfg.path, frames, height, width, cfg.on_bad)
    return ds.videos, ds.captions


# ---------------------------------------------------------------------------------------------- flow


def farneback_flows(videos: torch.Tensor) -> torch.Tensor:
    """OpenCV Farnebäck flow between consecutive frames: uint8 [N, 3, F, H, W] → float32 [N, 2, F − 1, H, W].

    Same convention as the renderer's ground truth (world/render.py): channel 0 = dx (right positive), channel 1 =
    dy (down positive), pixel units of the H × W frames, forward from frame t to t + 1: v_t(p) ≈ v_{t+1}(p + F(p)).
    """
    if videos.ndim != 5 or videos.shape[1] != 3 or videos.shape[2] < 2 or videos.dtype != torch.uint8:
        raise ValueError(f"expected uint8 videos [N, 3, F ≥ 2, H, W], got {videos.dtype} {tuple(videos.shape)}")
    frames = videos.permute(0, 2, 3, 4, 1).numpy().astype(np.float32) / 255.0  # [N, F, H, W, 3] in [0, 1]
    flows = [torch.from_numpy(video_flow(v, "farneback")) for v in frames]  # [F − 1, 2, H, W] each
    return torch.stack(flows).permute(0, 2, 1, 3, 4).contiguous()
