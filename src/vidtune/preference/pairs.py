"""Preference pair files (ALGORITHMS.md §8.2): JSONL + one video file per clip, readable by a person.

Line format: ``{"prompt": str, "chosen": path, "rejected": path, "weight"?: float > 0, "image"?: path,
"aspect"?: str, "source"?: str, "score_gap"?: float, "tie"?: bool}``; paths are relative to the JSONL file; video
files are ``.npy`` (uint8 [F, H, W, 3], exact) or ``.mp4``/``.gif``; ``image`` (I2V conditioning) is a picture
file, resized to the clips' size on reading. Lines with ``tie: true`` are dropped;
duplicate (prompt, chosen, rejected) triples and pairs with identical content are removed and counted. Errors name
the file and line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from vidtune.data.prompts import load_first_frames
from vidtune.errors import VidtuneError
from vidtune.video.io import read_video


@dataclass
class PreferencePair:
    prompt: str
    chosen: torch.Tensor  # [F, 3, H, W] in [0, 1]
    rejected: torch.Tensor
    weight: float = 1.0
    source: str = ""
    score_gap: float | None = None
    image: torch.Tensor | None = None  # [3, H, W] in [0, 1]: the I2V conditioning frame (None: text-to-video)


def to_uint8(video: torch.Tensor) -> torch.Tensor:
    """Clips [..., 3, H, W] in [0, 1] → uint8, rounded: the precision of a pair file's ``.npy`` clips."""
    return (video.clamp(0, 1) * 255 + 0.5).to(torch.uint8)


def from_uint8(video: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_uint8` up to rounding: float32 in [0, 1]."""
    return video.float().div(255)


def save_clip(video: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, to_uint8(video).permute(0, 2, 3, 1).numpy())


def load_clip(path: Path) -> torch.Tensor:
    if path.suffix == ".npy":
        return from_uint8(torch.from_numpy(np.load(path))).permute(0, 3, 1, 2)
    return read_video(path)


def write_pairs(pairs: list[PreferencePair], jsonl: str | Path) -> Path:
    """Write pairs as JSONL plus ``<stem>_clips/NNNNNN_{w,l}.npy``; returns the JSONL path."""
    jsonl = Path(jsonl)
    clips = jsonl.parent / f"{jsonl.stem}_clips"
    lines = []
    for i, p in enumerate(pairs):
        cw, cl = clips / f"{i:06d}_w.npy", clips / f"{i:06d}_l.npy"
        save_clip(p.chosen, cw)
        save_clip(p.rejected, cl)
        row = {"prompt": p.prompt, "chosen": str(cw.relative_to(jsonl.parent)),
               "rejected": str(cl.relative_to(jsonl.parent)), "weight": p.weight, "source": p.source}
        if p.score_gap is not None:
            row["score_gap"] = p.score_gap
        if p.image is not None:
            ci = clips / f"{i:06d}_c.png"
            rgb = to_uint8(p.image).permute(1, 2, 0).numpy()
            cv2.imwrite(str(ci), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            row["image"] = str(ci.relative_to(jsonl.parent))
        lines.append(json.dumps(row))
    tmp = jsonl.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + ("\n" if lines else ""))
    tmp.replace(jsonl)
    return jsonl


def read_image(folder: Path, name: object, clip_shape: torch.Size, where: str) -> torch.Tensor:
    """A pair's ``image`` field: the I2V conditioning frame [3, H, W] in [0, 1], resized to the clips' H×W."""
    if not isinstance(name, str) or not name:
        raise VidtuneError(f"{where}: 'image' must be a path, got {name!r}")
    path = folder / name
    if not path.is_file():
        raise VidtuneError(f"{where}: image not found: {path}")
    try:
        return load_first_frames([path], clip_shape[-2], clip_shape[-1])[0]
    except VidtuneError as e:
        raise VidtuneError(f"{where}: {e}") from None


def read_pairs(jsonl: str | Path, expect_shape: tuple[int, ...] | None = None) -> tuple[list[PreferencePair], dict]:
    """Read and validate a pair file; returns (pairs, counters {ties, duplicates, identical})."""
    jsonl = Path(jsonl)
    if not jsonl.is_file():
        raise VidtuneError(f"pair file not found: {jsonl}")
    text = jsonl.read_text().splitlines()
    if not any(line.strip() for line in text):
        raise VidtuneError(f"pair file {jsonl} is empty")
    pairs, seen = [], set()
    counts = {"ties": 0, "duplicates": 0, "identical": 0}
    for n, line in enumerate(text, 1):
        if not line.strip():
            continue
        where = f"{jsonl}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise VidtuneError(f"{where}: not valid JSON ({e.msg})") from None
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(row.get(key), str) or not row[key]:
                raise VidtuneError(f"{where}: missing or empty '{key}'")
        if row.get("tie"):
            counts["ties"] += 1
            continue
        weight = row.get("weight", 1.0)
        if not isinstance(weight, (int, float)) or not weight > 0:
            raise VidtuneError(f"{where}: 'weight' must be > 0, got {weight!r}")
        key = (row["prompt"], row["chosen"], row["rejected"])
        if key in seen:
            counts["duplicates"] += 1
            continue
        seen.add(key)
        clips = []
        for side in ("chosen", "rejected"):
            path = jsonl.parent / row[side]
            if not path.is_file():
                raise VidtuneError(f"{where}: {side} video not found: {path}")
            clips.append(load_clip(path))
        if clips[0].shape != clips[1].shape:
            raise VidtuneError(f"{where}: chosen {tuple(clips[0].shape)} and rejected {tuple(clips[1].shape)} "
                               "shapes differ")
        if expect_shape is not None and tuple(clips[0].shape) != tuple(expect_shape):
            raise VidtuneError(f"{where}: clips are {tuple(clips[0].shape)}, the model needs {tuple(expect_shape)}")
        if torch.equal(clips[0], clips[1]):
            counts["identical"] += 1
            continue
        image = None if row.get("image") is None else read_image(jsonl.parent, row["image"], clips[0].shape, where)
        pairs.append(PreferencePair(row["prompt"], clips[0], clips[1], float(weight), row.get("source", "human"),
                                    row.get("score_gap"), image))
    return pairs, counts
