"""A whole recipe (every section) and its loading: one YAML file per run plus dotted command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from vidtune.config.common import EvalConfig, ModelConfig, RunConfig, SamplingConfig, WorldConfig
from vidtune.config.dpo import DPOConfig
from vidtune.config.errors import format_validation_error
from vidtune.config.grpo import GRPOConfig
from vidtune.config.scorer import ScorerConfig
from vidtune.config.section import Section
from vidtune.config.sft import PretrainConfig, SFTConfig
from vidtune.errors import ConfigError


class PipelineConfig(Section):
    """`vidtune run`: the stages to chain after the base model (pipeline.py)."""

    stages: tuple[Literal["sft", "grpo", "dpo"], ...] = Field(("sft", "grpo", "dpo"), description="Stage order.")
    report: bool = Field(True, description="Write report.html at the end.")

    @model_validator(mode="after")
    def _order(self) -> "PipelineConfig":
        order = {"sft": 0, "grpo": 1, "dpo": 2}
        ranks = [order[s] for s in self.stages]
        if ranks != sorted(ranks) or len(set(ranks)) != len(ranks):
            raise ValueError(f"pipeline.stages must be a subsequence of sft → grpo → dpo, got {list(self.stages)}")
        return self


class Recipe(Section):
    """A whole run. Sections not used by a command are ignored by it but still validated."""

    run: RunConfig = RunConfig()
    world: WorldConfig = WorldConfig()
    model: ModelConfig = ModelConfig()
    sampling: SamplingConfig = SamplingConfig()
    pretrain: PretrainConfig = PretrainConfig()
    scorer: ScorerConfig = ScorerConfig()
    sft: SFTConfig = SFTConfig()
    grpo: GRPOConfig = GRPOConfig()
    dpo: DPOConfig = DPOConfig()
    eval: EvalConfig = EvalConfig()
    pipeline: PipelineConfig = PipelineConfig()


# --------------------------------------------------------------------------------------------- loading


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
        raise ConfigError(format_validation_error(e, source, Recipe)) from None


def recipe_to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
