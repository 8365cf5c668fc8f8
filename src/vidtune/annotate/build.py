"""Building a study folder: render both checkpoints with identical settings (same prompts, seeds, sampler, steps,
guidance — ``generate`` seeds each sample's noise by its own seed, so A and B start from the same noise), or collect
clips from two folders; then write ``study.db`` and the annotator tokens.

Prompt files: plain text (one prompt per line, ``#`` comments and blank lines ignored) or JSONL with
``{"prompt": str, "seed"?: int, "clip"?: file name}``. With folders, clips are paired by file name: the ``clip``
key names the file in both folders, or, without it, the folders' sorted video files are matched to the prompt lines.
Layout: ``STUDY/clips/{a,b}/NNNNN.{mp4,gif}`` shown to annotators, ``NNNNN.npy`` the exact clips (for export).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import NamedTuple

from vidtune.annotate.store import ASPECTS, ItemSpec, add_annotators, add_items, init_study
from vidtune.errors import VidtuneError

CLIP_SUFFIXES = (".mp4", ".gif", ".npy")


class PromptRow(NamedTuple):
    prompt: str
    seed: int | None
    clip: str | None
    where: str  # "file:line" for error messages


class Created(NamedTuple):
    study: Path
    admin_token: str
    annotators: list[tuple[str, str]]  # (name, token)
    n_items: int


def read_prompt_rows(path: str | Path) -> list[PromptRow]:
    """The rows of a study's prompt file: one prompt a line (.txt), or JSON objects {prompt, seed?, clip?} (.jsonl);
    blank lines and # comments skipped; every error names the file and line."""
    path = Path(path)
    if not path.is_file():
        raise VidtuneError(f"prompt file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        where, line = f"{path}:{n}", line.strip()
        if not line or line.startswith("#"):
            continue
        if path.suffix.lower() != ".jsonl":
            rows.append(PromptRow(line, None, None, where))
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise VidtuneError(f"{where}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict) or not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise VidtuneError(f"{where}: each line needs a non-empty string 'prompt'")
        seed, clip = row.get("seed"), row.get("clip")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise VidtuneError(f"{where}: 'seed' must be an integer >= 0, got {seed!r}")
        if clip is not None and (not isinstance(clip, str) or not clip):
            raise VidtuneError(f"{where}: 'clip' must be a file name, got {clip!r}")
        rows.append(PromptRow(row["prompt"].strip(), seed, clip, where))
    if not rows:
        raise VidtuneError(f"prompt file {path} has no prompts")
    return rows


def source_kind(spec: str, flag: str) -> str:
    """'checkpoint' (``builtin:…`` or a folder with config.json) or 'folder' (a folder of videos)."""
    if spec.startswith("builtin:"):
        return "checkpoint"
    p = Path(spec)
    if not p.is_dir():
        raise VidtuneError(f"{flag} {spec}: not found (give a checkpoint folder, builtin:base, or a folder of videos)")
    if (p / "config.json").is_file():
        return "checkpoint"
    if any(f.suffix.lower() in CLIP_SUFFIXES for f in p.iterdir()):
        return "folder"
    raise VidtuneError(f"{flag} {spec}: neither a checkpoint (no config.json) nor a folder of .mp4/.gif/.npy clips")


def _store_clip(video, study: Path, rel: str, fmt: str, fps: int, scale: int) -> tuple[str, str]:
    """Write the exact clip ``rel.npy`` and the shown ``rel.fmt``; returns both paths relative to the study."""
    from vidtune.preference.pairs import save_clip
    from vidtune.video.io import save_video

    save_clip(video, study / f"{rel}.npy")
    save_video(video, study / f"{rel}.{fmt}", fps=fps, scale=scale)
    return f"{rel}.{fmt}", f"{rel}.npy"


def render_items(a: str, b: str, rows: list[PromptRow], study: Path, s: dict) -> list[ItemSpec]:
    """Render every (prompt, seed) with both checkpoints under the identical settings ``s``."""
    from vidtune.models.tiny import load_tiny
    from vidtune.sampling.ode import generate
    from vidtune.world.grammar import check_words

    prompts, seeds = [], []
    for r in rows:
        try:
            check_words(r.prompt)
        except VidtuneError as e:
            raise VidtuneError(f"{r.where}: {e}") from None
        for seed in [r.seed] if r.seed is not None else [s["seed"] + j for j in range(s["seeds_per_prompt"])]:
            prompts.append(r.prompt)
            seeds.append(seed)
    out: dict[str, list[tuple[str, str]]] = {}
    for side, spec in (("a", a), ("b", b)):
        videos = generate(load_tiny(spec), prompts, seeds, steps=s["steps"], shift=s["shift"],
                          guidance=s["guidance"], progress=True)
        out[side] = [_store_clip(v, study, f"clips/{side}/{k:05d}", s["format"], s["fps"], s["scale"])
                     for k, v in enumerate(videos)]
    return [ItemSpec(p, sd, ca, cb, ra, rb) for p, sd, (ca, ra), (cb, rb) in zip(prompts, seeds, out["a"], out["b"])]


def _folder_clip(folder: Path, name: str, where: str) -> Path:
    path = (folder / name).resolve()
    if not path.is_relative_to(folder.resolve()) or path.suffix.lower() not in CLIP_SUFFIXES:
        raise VidtuneError(f"{where}: clip {name!r} must be a .mp4/.gif/.npy file inside {folder}")
    if not path.is_file():
        raise VidtuneError(f"{where}: clip file not found: {folder / name}")
    return path


def collect_items(a: Path, b: Path, rows: list[PromptRow], study: Path, s: dict) -> list[ItemSpec]:
    """Copy the clips paired by file name into the study (``.npy`` clips are also converted for display)."""
    from vidtune.preference.pairs import load_clip

    named = [r.clip is not None for r in rows]
    if any(named) and not all(named):
        raise VidtuneError(f"{rows[named.index(False)].where}: give every line a 'clip' key, or none")
    if all(named):
        names = [r.clip for r in rows]
    else:
        names = sorted(f.name for f in a.iterdir() if f.suffix.lower() in CLIP_SUFFIXES)
        if len(names) != len(rows):
            raise VidtuneError(f"{a} has {len(names)} clips but the prompt file has {len(rows)} prompts; pair them "
                               "explicitly with a JSONL prompt file ({\"prompt\": …, \"clip\": file name})")
    items = []
    for k, (r, name) in enumerate(zip(rows, names)):
        rel = {}
        for side, folder in (("a", a), ("b", b)):
            src = _folder_clip(folder, name, r.where)
            stem = f"clips/{side}/{k:05d}"
            if src.suffix.lower() == ".npy":
                rel[side] = _store_clip(load_clip(src), study, stem, s["format"], s["fps"], s["scale"])
            else:
                (study / stem).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, study / f"{stem}{src.suffix.lower()}")
                rel[side] = (f"{stem}{src.suffix.lower()}", None)
        items.append(ItemSpec(r.prompt, r.seed, rel["a"][0], rel["b"][0], rel["a"][1], rel["b"][1]))
    return items


def create_study(study: str | Path, a: str, b: str, prompts: str | Path, annotators: int = 3, *,
                 aspects: tuple[str, ...] = ASPECTS, steps: int = 20, guidance: float = 3.0, shift: float = 1.0,
                 seed: int = 0, seeds_per_prompt: int = 1, fmt: str = "mp4", fps: int = 8, scale: int = 4,
                 name: str | None = None) -> Created:
    """Build ``study`` (a new or empty folder) and return the tokens; a failed build leaves no half study."""
    study = Path(study)
    if study.exists() and (not study.is_dir() or any(study.iterdir())):
        raise VidtuneError(f"study folder {study} already exists and is not empty; choose a new folder")
    if fmt not in ("mp4", "gif"):
        raise VidtuneError(f"--format must be mp4 or gif, got {fmt!r}")
    if annotators < 1 or seeds_per_prompt < 1 or steps < 1:
        raise VidtuneError("--annotators, --seeds and --steps must be >= 1")
    kinds = (source_kind(a, "--a"), source_kind(b, "--b"))
    if kinds[0] != kinds[1]:
        raise VidtuneError(f"--a is a {kinds[0]} but --b is a {kinds[1]}; compare two checkpoints or two folders")
    rows = read_prompt_rows(prompts)
    s = {"source": kinds[0] + "s", "a": a, "b": b, "prompts": str(prompts), "format": fmt, "fps": fps,
         "scale": scale, "steps": steps, "guidance": guidance, "shift": shift, "seed": seed,
         "seeds_per_prompt": seeds_per_prompt}
    existed = study.exists()
    try:
        study.mkdir(parents=True, exist_ok=True)
        if kinds[0] == "checkpoint":
            items = render_items(a, b, rows, study, s)
        else:
            items = collect_items(Path(a), Path(b), rows, study, s)
            s = {k: s[k] for k in ("source", "a", "b", "prompts", "format", "fps", "scale")}
        conn, admin = init_study(study, name or study.resolve().name, a, b, aspects, s)
        try:
            add_items(conn, items)
            people = add_annotators(conn, annotators)
        finally:
            conn.close()
    except BaseException:  # also Ctrl-C: remove what was written, keep a folder the user had made
        for p in study.iterdir() if existed else [study]:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        raise
    tokens = study / "tokens.txt"  # readable by the owner only; the database keeps hashes
    fd = os.open(tokens, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"admin\t{admin}\n" + "".join(f"{n}\t{t}\n" for n, t in people))
    return Created(study, admin, people, len(items))
