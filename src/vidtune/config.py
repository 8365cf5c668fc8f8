"""Typed recipes: one YAML file per run plus dotted command-line overrides.

Every section is a frozen pydantic model with ``extra="forbid"``, so a typo in a key is an error that names the
key and suggests the closest valid one. Stage sections are added here as the stages land; a stage module owns its
algorithmic defaults only through these models.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidtune.errors import ConfigError


class Section(BaseModel):
    """Base for every recipe section: frozen, unknown keys forbidden, defaults validated."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class RunConfig(Section):
    name: str = Field("shapeworld", description="Run name; the run directory is `<out_dir>/<name>`.")
    out_dir: str = Field("runs", description="Parent folder of run directories.")
    seed: int = Field(0, description="Master seed; every random stream is derived from it.")
    threads: int = Field(2, ge=1, description="torch intra-op threads.")
    runtime: Literal["local", "ray"] = Field("local", description="Execution backend.")


class WorldConfig(Section):
    """ShapeWorld canvas and content (DESIGN.md §3)."""

    frames: int = Field(8, ge=4, le=16, description="Frames per clip.")
    size: int = Field(32, ge=16, le=64, description="Height = width of the canvas in pixels.")
    max_count: int = Field(3, ge=1, le=3, description="Largest object count in prompts.")
    p_then: float = Field(0.25, ge=0, le=1, description="Probability of a two-segment motion ('then').")
    p_camera: float = Field(0.25, ge=0, le=1, description="Probability of a camera pan.")
    p_pour: float = Field(0.05, ge=0, le=1, description="Probability of a particle pour scene.")
    p_loose_motion: float = Field(
        0.5, ge=0, le=1, description="Probability that a loose caption names the first motion verb."
    )


class ModelConfig(Section):
    """The embedded pixel-space video DiT (models/tiny.py)."""

    patch: tuple[int, int, int] = Field((1, 8, 8), description="Patch size (frames, height, width).")
    hidden: int = Field(128, ge=16, description="Transformer width.")
    depth: int = Field(4, ge=1, description="Number of DiT blocks.")
    heads: int = Field(4, ge=1, description="Attention heads.")
    text_layers: int = Field(2, ge=0, description="Layers of the text encoder.")
    text_len: int = Field(16, ge=4, description="Maximum prompt length in tokens.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden size / width.")
    init: str | None = Field(
        "builtin:base", description="Weights to start from: a model folder, 'builtin:base' (shipped) or null (random)."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden={self.hidden} is not divisible by model.heads={self.heads}")
        return self


class SamplingConfig(Section):
    """Evaluation / demo sampler (ODE Euler with classifier-free guidance)."""

    steps: int = Field(20, ge=1, description="Euler steps from t=1 to t=0.")
    shift: float = Field(1.0, gt=0, description="Time shift k in t <- k t / (1 + (k-1) t).")
    guidance: float = Field(3.0, ge=0, description="Classifier-free guidance scale (1 = off).")
    batch_size: int = Field(16, ge=1, description="Videos per forward batch.")


class PretrainConfig(Section):
    """Stage 0: flow-matching pretraining on loose captions (stages/pretrain.py)."""

    steps: int = Field(20000, ge=1, description="Optimiser steps.")
    dataset_size: int = Field(16384, ge=1, description="Rendered training clips (held-out compositions excluded).")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: int = Field(200, ge=0, description="Linear warm-up steps.")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the exported weights.")
    cond_dropout: float = Field(0.1, ge=0, le=1, description="Probability of the empty prompt (for CFG).")
    p_i2v: float = Field(0.25, ge=0, le=1, description="Probability of first-frame conditioning.")
    t_sampler: Literal["logit_normal", "shifted_uniform"] = "logit_normal"
    ckpt_every: int = Field(500, ge=1, description="Checkpoint every N steps (resumable).")
    log_every: int = Field(50, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)


class EvalConfig(Section):
    """Evaluation between stages and `vidtune eval` (stages/evaluate.py)."""

    n_seen: int = Field(48, ge=0, description="Instruction prompts with compositions seen in training.")
    n_heldout: int = Field(48, ge=0, description="Prompts with held-out colour/shape compositions.")
    seed: int = Field(1000, description="Seed of the prompt set and of the sampling noise (fixed across stages).")
    grid_prompts: int = Field(8, ge=0, description="Prompts shown in the video grid of the report.")

    @model_validator(mode="after")
    def _some_prompts(self) -> "EvalConfig":
        if self.n_seen + self.n_heldout == 0:
            raise ValueError("eval.n_seen + eval.n_heldout must be > 0")
        return self


class Recipe(Section):
    """A whole run. Sections not used by a command are ignored by it but still validated."""

    run: RunConfig = RunConfig()
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    pretrain: PretrainConfig = PretrainConfig()
    eval: EvalConfig = EvalConfig()


# --------------------------------------------------------------------------------------------- loading


def _did_you_mean(key: str, options: list[str]) -> str:
    close = difflib.get_close_matches(key, options, n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _section_fields(model: type[BaseModel], path: tuple[str, ...]) -> list[str]:
    for part in path:
        ann = model.model_fields[part].annotation
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return []
        model = ann
    return list(model.model_fields)


def _format_validation_error(err: ValidationError, source: str) -> str:
    lines = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"])
        key = ".".join(loc)
        if e["type"] == "extra_forbidden":
            hint = _did_you_mean(loc[-1], _section_fields(Recipe, loc[:-1]))
            lines.append(f"unknown key '{key}'{hint}")
        else:
            got = e.get("input")
            got_s = "" if isinstance(got, dict) else f" (got {got!r})"
            lines.append(f"'{key}': {e['msg']}{got_s}" if key else e["msg"])
    return f"invalid recipe {source}:\n  " + "\n  ".join(lines)


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split ``a.b.c=value`` into (['a','b','c'], value) with the value parsed as YAML (so 3, 1e-4, true, [1,2])."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' is not of the form key.path=value")
    key, raw = item.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override '{item}' has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override '{item}': value is not valid YAML ({e})") from None
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for item in overrides:
        parts, value = parse_override(item)
        node = data
        for p in parts[:-1]:
            child = node.setdefault(p, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override '{item}': '{p}' is a value, not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe (or the defaults when ``path`` is None), apply dotted overrides, validate."""
    data: dict = {}
    source = "<defaults>"
    if path is not None:
        p = Path(path)
        source = str(p)
        if not p.is_file():
            raise ConfigError(f"recipe file not found: {p}")
        try:
            loaded = yaml.safe_load(p.read_text())
        except yaml.YAMLError as e:
            raise ConfigError(f"recipe {p} is not valid YAML: {e}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"recipe {p} must be a mapping of sections, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, list(overrides or []))
    try:
        return Recipe.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_validation_error(e, source)) from None


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
