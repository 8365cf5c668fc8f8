"""Run directories, append-only JSONL metrics and atomic checkpoint files (nothing is lost or torn on a crash)."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from vidtune.errors import VidtuneError


def make_run_dir(path: str | Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise VidtuneError(f"cannot create run directory {path}: {e.strerror}") from None
    return path


def _clean(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        v = v.item() if v.numel() == 1 else v.tolist()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class MetricsWriter:
    """Append one JSON object per line, flushed and fsynced, so a kill -9 loses at most the line being written."""

    def __init__(self, path: str | Path, stage: str):
        self.path = Path(path)
        self.stage = stage
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, step: int, **values: Any) -> None:
        row = {"stage": self.stage, "step": step, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())


def rewind_metrics(path: str | Path, stage: str, step: int) -> int:
    """Drop this stage's rows logged after ``step`` (replayed after a resume, so nothing is counted twice) and a
    torn last line; rewrites the file atomically. Returns the number of rows dropped."""
    path = Path(path)
    if not path.exists():
        return 0
    keep, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            dropped += 1
            continue
        if row.get("stage") == stage and row.get("step", 0) > step:
            dropped += 1
            continue
        keep.append(line)
    if dropped:
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(x + "\n" for x in keep))
        os.replace(tmp, path)
    return dropped


def read_metrics(path: str | Path, stage: str | None = None) -> list[dict]:
    """Rows of a metrics file; a torn last line (crash mid-write) is ignored."""
    rows = []
    path = Path(path)
    if not path.exists():
        return rows
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if stage is None or row.get("stage") == stage:
            rows.append(row)
    return rows


def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """torch.save to ``path.tmp`` then rename: the file on disk is always a complete checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return torch.load(path, map_location="cpu", weights_only=False)
