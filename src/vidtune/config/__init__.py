"""Typed recipes: one YAML file per run plus dotted command-line overrides.

Every section is a frozen pydantic model with ``extra="forbid"``, so a typo in a key is an error that names the
key and suggests the closest valid one. A stage module owns its algorithmic defaults only through these models:
``common`` (run, world, model, sampling, flow times, eval), ``sft`` (pretraining and SFT), ``scorer``, ``grpo``,
``dpo``; ``recipe`` holds the whole ``Recipe`` and its loading.
"""

from vidtune.config.common import EvalConfig, FlowTimes, ModelConfig, RunConfig, SamplingConfig, WorldConfig
from vidtune.config.dpo import DPOConfig, PairsConfig
from vidtune.config.grpo import (BpgoConfig, CurriculumConfig, GateConfig, GRPOConfig, JointConfig, RewardConfig,
                                 RewardHead, RolloutConfig, VipoConfig)
from vidtune.config.recipe import (PipelineConfig, Recipe, apply_overrides, load_recipe, parse_override,
                                   recipe_to_yaml)
from vidtune.config.scorer import ScorerConfig
from vidtune.config.section import Section
from vidtune.config.sft import PhysicsConfig, PretrainConfig, SFTConfig, SFTDataConfig, StructureConfig

__all__ = ["BpgoConfig", "CurriculumConfig", "DPOConfig", "EvalConfig", "FlowTimes", "GRPOConfig", "GateConfig",
           "JointConfig", "ModelConfig", "PairsConfig", "PhysicsConfig", "PipelineConfig", "PretrainConfig", "Recipe",
           "RewardConfig", "RewardHead", "RolloutConfig", "RunConfig", "SFTConfig", "SFTDataConfig", "SamplingConfig",
           "ScorerConfig", "Section", "StructureConfig", "VipoConfig", "WorldConfig", "apply_overrides",
           "load_recipe", "parse_override", "recipe_to_yaml"]
