"""Recipe section of the learned video–text scorer's training."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vidtune.config.section import Section


class ScorerConfig(Section):
    """The learned video–text scorer, DESIGN.md §3 judge 2 (stages/train_scorer.py, rewards/scorer_model.py)."""

    steps: int = Field(1200, ge=1, description="Optimiser steps.")
    batch_size: int = Field(48, ge=2, description="Clips per step; the other clips' captions are in-batch negatives.")
    lr: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.05, ge=0, description="AdamW weight decay.")
    warmup: int = Field(100, ge=0, description="Linear warm-up steps, then cosine decay.")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="Final learning rate / peak of the cosine decay.")
    dataset_size: int = Field(12288, ge=1, description="Rendered training clips (held-out compositions excluded).")
    hard_negatives: int = Field(
        4, ge=0, description="Captions per clip with one atom changed (world.corrupt), as extra text negatives."
    )
    noise_negatives: int = Field(
        8, ge=0, description="Clips per step whose noised copy is a negative for every caption (fail unclean frames)."
    )
    atom_weights: dict[Literal["colour", "shape", "size", "count", "motion", "order", "camera"], float] = Field(
        {"colour": 0.5, "motion": 2.0, "order": 2.0},
        description="Odds of each atom among a clip's hard negatives (unlisted atoms: 1); colour is learnt first.",
    )
    p_loose: float = Field(0.25, ge=0, le=1, description="Probability that a clip's positive is a loose caption.")
    patch: Literal[1, 2, 4, 8] = Field(4, description="Stride of the conv patch embedding (32 px → 8×8 grid at 4).")
    stem_channels: int = Field(32, ge=4, description="Width of the first conv of the patch embedding.")
    dim: int = Field(64, ge=8, description="Token width of the video and text encoders.")
    depth: int = Field(4, ge=1, description="Divided space-time attention blocks of the video encoder.")
    heads: int = Field(4, ge=1, description="Attention heads.")
    mlp_ratio: float = Field(2.0, gt=0, description="MLP hidden size / width.")
    embed_dim: int = Field(64, ge=8, description="Joint embedding size.")
    text_layers: int = Field(2, ge=0, description="Transformer layers of the text encoder.")
    text_len: int = Field(16, ge=4, description="Maximum prompt length in tokens.")
    init: str | None = Field(
        None, description="Start from a scorer folder or 'builtin:scorer' (its architecture wins); null = random."
    )
    eval_clips: int = Field(256, ge=0, description="Held-out-composition clips of the periodic ranking check; 0 = off.")
    eval_every: int = Field(200, ge=1, description="Steps between held-out ranking checks.")
    ckpt_every: int = Field(100, ge=1, description="Checkpoint every N steps (resumable).")
    log_every: int = Field(25, ge=1, description="Steps between metric rows.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")

    @model_validator(mode="after")
    def _heads_divide(self) -> "ScorerConfig":
        if self.dim % self.heads:
            raise ValueError(f"scorer.dim={self.dim} is not divisible by scorer.heads={self.heads}")
        if bad := {a: w for a, w in self.atom_weights.items() if not w > 0}:
            raise ValueError(f"scorer.atom_weights must be > 0, got {bad}")
        return self
