"""Run directories, append-only JSONL metrics mirrored to TensorBoard event files, and atomic checkpoint files
(nothing is lost or torn on a crash)."""

from __future__ import annotations

import json
import math
import os
import time
import weakref
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


def tensorboard_dir(metrics_path: str | Path, stage: str) -> Path:
    """TensorBoard log directory of ``stage``: ``tensorboard/<stage>/`` next to the metrics file."""
    return Path(metrics_path).parent / "tensorboard" / stage


def tb_scalars(values: dict[str, Any]) -> dict[str, float]:
    """The real-number values of a metrics row (one-element tensors included) as floats; lists, dicts, strings and
    larger tensors are left out (TensorBoard scalars only)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            v = v.item()
        if isinstance(v, (int, float)):
            out[k] = float(v)
    return out


def open_summary_writer(log_dir: Path, purge_step: int | None):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``; with ``purge_step``, TensorBoard hides the events
    earlier sessions wrote at steps ≥ ``purge_step``. A missing ``tensorboard`` package is an error naming the
    switch."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise VidtuneError("run.tensorboard=true needs the `tensorboard` package (pip install tensorboard); or set "
                           "run.tensorboard=false") from None
    return SummaryWriter(str(log_dir), purge_step=purge_step)


class MetricsWriter:
    """Append one JSON object per line, flushed and fsynced, so a kill -9 loses at most the line being written.

    With ``tensorboard`` (recipe switch ``run.tensorboard``) every scalar of a row also goes to TensorBoard event
    files in :func:`tensorboard_dir` (tag = metric name, global step = ``step``), flushed after each row. The event
    writer opens at the first row, after the stage's :func:`rewind_metrics`: when the folder already holds events
    (a resumed stage), it opens with ``purge_step`` = that first step, so the replayed steps replace the crashed
    session's instead of showing twice — the counterpart of the rewind of the JSONL file."""

    def __init__(self, path: str | Path, stage: str, tensorboard: bool = True):
        self.path = Path(path)
        self.stage = stage
        self.tensorboard = tensorboard
        self._tb = None
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def _summary_writer(self, step: int):
        """The stage's SummaryWriter, opened on first use (purging from ``step`` when earlier events exist)."""
        if self._tb is None:
            log_dir = tensorboard_dir(self.path, self.stage)
            resumed = any(log_dir.glob("events.out.tfevents.*"))
            self._tb = open_summary_writer(log_dir, step if resumed else None)
            weakref.finalize(self, self._tb.close)
        return self._tb

    def log(self, step: int, **values: Any) -> None:
        row = {"stage": self.stage, "step": step, "time": round(time.time(), 3)}
        row.update({k: _clean(v) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.tensorboard:
            tb = self._summary_writer(step)
            for tag, v in tb_scalars(values).items():
                tb.add_scalar(tag, v, global_step=step, walltime=row["time"])
            tb.flush()


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
