"""Prompt sources for GRPO rollouts and DPO candidates: a text file of prompts and, for I2V, a folder of first frames.

* prompts file — UTF-8 text, one prompt per line. Surrounding whitespace is stripped; blank lines and lines whose
  first non-blank character is ``#`` are skipped. A missing, unreadable or prompt-less file is a :class:`DataError`
  naming the recipe key and the path.
* first frames — ``<k>.png`` in the folder for the k-th prompt of the file (k = 0, 1, …; skipped lines are not
  counted, so ``0.png`` goes with the first prompt). Every file is checked (exists, has an image format OpenCV
  reads) before training starts; a frame is decoded when its prompt is drawn, as RGB resized to the clip's height ×
  width with ``cv2.INTER_AREA`` (stretched, no crop: pre-crop frames of another aspect ratio), like the SFT video
  folder (data/video_folder.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import cv2
import torch

from vidtune.errors import DataError, VidtuneError


class PromptSource(NamedTuple):
    prompts: list[str]
    images: list[Path] | None  # the first frame of each prompt (I2V), or None (text only)


def parse_prompt_lines(text: str) -> list[str]:
    """The prompts of a prompts file's text: stripped lines, without blank lines and ``#`` comments."""
    return [s for s in (line.strip() for line in text.splitlines()) if s and not s.startswith("#")]


def read_prompts(path: str | Path, key: str) -> list[str]:
    """The prompts of the file ``path`` (recipe key ``key``, named in every error)."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{key}: prompts file {p} not found" + (" (it is a folder)" if p.is_dir() else ""))
    try:
        prompts = parse_prompt_lines(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise DataError(f"{key}: {p} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise DataError(f"{key}: cannot read {p}: {e.strerror}") from None
    if not prompts:
        raise DataError(f"{key}: {p} holds no prompt (only blank lines and # comments)")
    return prompts


def first_frame_files(folder: str | Path, n: int, key: str) -> list[Path]:
    """``<k>.png`` for k < n in ``folder`` (recipe key ``key``); one error lists the missing and unreadable ones."""
    d = Path(folder).expanduser()
    if not d.is_dir():
        raise DataError(f"{key}: first-frame folder {d} not found")
    files = [d / f"{k}.png" for k in range(n)]
    missing = [f.name for f in files if not f.is_file()]
    unreadable = [f.name for f in files if f.is_file() and not cv2.haveImageReader(str(f))]
    problems = [f"{len(names)} {what} ({', '.join(names[:5])}{', …' if len(names) > 5 else ''})"
                for what, names in (("missing", missing), ("not images", unreadable)) if names]
    if problems:
        raise DataError(f"{key}: {d} must hold <k>.png, the first frame of the k-th prompt (from 0), for all {n} "
                        f"prompts: {'; '.join(problems)}")
    return files


def load_first_frames(files: list[Path], height: int, width: int) -> torch.Tensor:
    """First frames [n, 3, height, width] in [0, 1] (RGB, ``cv2.INTER_AREA`` resize, stretched)."""
    out = []
    for f in files:
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise DataError(f"cannot decode the first frame {f}")
        img = cv2.cvtColor(cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2RGB)
        out.append(torch.from_numpy(img).permute(2, 0, 1))
    return torch.stack(out).float() / 255.0


def check_prompts(prompts: list[str], check: Callable[[str], object], where: str) -> None:
    """Run ``check`` on every prompt before any sampling; its first :class:`VidtuneError` is raised again naming
    ``where`` and the prompt, so a bad line stops the stage at once with one message."""
    for k, p in enumerate(prompts):
        try:
            check(p)
        except VidtuneError as e:
            raise DataError(f"{where}, prompt {k} (from 0) {p!r}: {e}") from None
