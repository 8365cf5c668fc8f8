"""Readable recipe validation errors: every problem named by its dotted key, unknown keys with a "did you mean"."""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ValidationError


def did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def section_fields(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    """Field names of the section of ``model`` at ``path`` ([] when the path ends in a value)."""
    for part in path:
        ann = model.model_fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def format_validation_error(err: ValidationError, source: str, root: type[BaseModel]) -> str:
    """One line per error of validating ``root`` from ``source``."""
    lines = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc)
        if e["type"] == "extra_forbidden":
            hint = did_you_mean(loc[-1], section_fields(root, loc[:-1]))
            lines.append(f"unknown key '{key}'{hint}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"'{key}': {e['msg']}{got_s}" if key else e["msg"])
    return f"invalid recipe {source}:\n  " + "\n  ".join(lines)
