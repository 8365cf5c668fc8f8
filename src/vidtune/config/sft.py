"""Recipe sections of Stage 0 (pretraining the tiny base) and Stage I (SFT)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vidtune.config.common import FlowTimes
from vidtune.config.section import Section


class PretrainConfig(FlowTimes):
    """Stage 0: flow-matching pretraining on loose captions (stages/pretrain.py)."""

    steps: int = Field(20000, ge=1, description="Optimiser steps.")
    dataset_size: int = Field(16384, ge=1, description="Rendered training clips (held-out compositions excluded).")
    batch_size: int = Field(32, ge=1)
    lr: float = Field(3e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup: int = Field(200, ge=0, description="Linear warm-up steps.")
    cooldown: int = Field(0, ge=0, description="Linear decay of the lr to 0 over the last N steps (WSD schedule).")
    ema: float = Field(0.999, ge=0, lt=1, description="EMA decay of the exported weights.")
    cond_dropout: float = Field(0.1, ge=0, le=1, description="Probability of the empty prompt (for CFG).")
    p_i2v: float = Field(0.25, ge=0, le=1, description="Probability of first-frame conditioning.")
    pan_contrast: float = Field(
        1.0, gt=0, le=4, description="Background texture amplitude of camera-pan clips (1 = the world's; larger "
        "makes the pan visible in the pixels).")
    ckpt_every: int = Field(500, ge=1, description="Checkpoint every N steps (resumable).")
    log_every: int = Field(50, ge=1)
    max_grad_norm: float = Field(1.0, gt=0)


class StructureConfig(Section):
    """Structure-aware re-weighting of SFT samples (ALGORITHMS.md §7.2)."""

    enabled: bool = Field(True, description="Weight samples by their structural-instability score ψ.")
    gamma: float = Field(1.0, ge=0, description="γ in ω = clip(1 + γ·ψ̂, ω_min, ω_max).")
    omega_min: float = Field(0.25, gt=0)
    omega_max: float = Field(4.0, gt=0)
    source: Literal["target", "reconstruction"] = Field(
        "target", description="ψ from the training clip (offline, once), or from the model's own one-step "
        "reconstruction at t = recon_t, refreshed every refresh_every steps.")
    recon_t: float = Field(0.3, gt=0, lt=1, description="Flow time of the reconstruction source's x̂_0 = x_t − t·v.")
    refresh_every: int | None = Field(None, ge=1, description="Steps between reconstruction refreshes (null = one "
                                      "epoch).")
    window: int = Field(1000, ge=2, description="Rolling window of recent scores for the reconstruction source's "
                        "percentiles.")
    w_bg: float = Field(1.0, ge=0, description="Weight of the background (camera-warp) term.")
    w_obj: float = Field(1.0, ge=0, description="Weight of the object (mask area / IoU) term.")
    hard_limit: float | None = Field(None, description="Drop clips with ψ above this (broken targets).")


class PhysicsConfig(Section):
    """Physics-aware SFT (ALGORITHMS.md §7.3): flow head on decoder features, zero-initialised fusion."""

    enabled: bool = Field(False, description="Attach the motion branch and train only decoder-level parameters.")
    lambda_flow: float = Field(0.1, ge=0, description="λ_flow in L = L_FM + λ_flow·EPE.")
    decoder_blocks: int = Field(1, ge=1, description="DiT blocks (from the end) that count as the decoder.")


class SFTDataConfig(Section):
    """Where Stage I clips come from: rendered ShapeWorld or the user's videos (data/video_folder.py)."""

    source: Literal["shapeworld", "video_folder"] = Field("shapeworld", description="Clip source.")
    path: str | None = Field(
        None, description="video_folder: a .jsonl manifest ({video, caption} per line, paths relative to it) or a "
        "folder of videos with same-named .txt captions.")
    on_bad: Literal["error", "skip"] = Field(
        "error", description="video_folder: a bad clip (undecodable, too short, no caption) fails the run listing "
        "every bad clip (error) or is left out with a warning (skip).")

    @model_validator(mode="after")
    def _path_matches_source(self) -> "SFTDataConfig":
        if self.source == "video_folder" and not self.path:
            raise ValueError("sft.data.source=video_folder needs sft.data.path")
        if self.source == "shapeworld" and self.path is not None:
            raise ValueError("sft.data.path is for sft.data.source=video_folder")
        return self


class SFTConfig(FlowTimes):
    """Stage I: flow-matching SFT on instruction captions (stages/sft.py, ALGORITHMS.md §7)."""

    steps: int = Field(800, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(1e-4, gt=0)
    warmup: int = Field(50, ge=0)
    dataset_size: int = Field(2048, ge=1, description="Rendered SFT clips (held-out compositions excluded).")
    control_ratio: float = Field(
        0.3, ge=0, le=1, description="Share of the curated control mix (ordering, camera, counts) in the data."
    )
    control_contrast: float = Field(
        1.0, gt=0, le=4, description="Background texture amplitude of the control mix's camera pans (1 = the "
        "world's; larger makes the pan visible in the pixels).")
    cond_dropout: float = Field(0.1, ge=0, le=1)
    p_i2v: float = Field(0.25, ge=0, le=1)
    t_loc: float = Field(1.2, description="logit_normal location μ, as pretrain.t_loc; 1.2 (toward noise) raised the "
                         "motion atom 0.33 → 0.41 and the verifier 0.34 → 0.38 over 3 seeds (docs/results.md).")
    motion_emphasis: float = Field(
        0.0, ge=0, description="λ of the motion-emphasis loss (math/flow_matching.motion_emphasis, a project addition "
        "to §7.1): each element's error is weighted by 1 + λ·(temporal change of the target there)/(its max), "
        "renormalised to mean 1 per clip; 0 = plain flow matching.")
    contrastive_lambda: float = Field(
        0.0, ge=0, lt=1, description="λ of the counterfactual contrastive term (math/flow_matching."
        "contrastive_errors, ALGORITHMS.md §7.1): each clip with a motion also gets a counterfactual with the same "
        "first frame (a sequence in reversed order, or a different single motion; world/counterfactual.py) and the "
        "loss subtracts λ × the error against its target; ShapeWorld data only; 0 = off.")
    contrastive_t_min: float = Field(
        0.0, ge=0, lt=1, description="The counterfactual term applies only to samples with flow time t ≥ this "
        "(t = 1 is noise): the high-noise steps, where a sample's motion is laid out, without the faint negative "
        "image the term paints at low noise; 0 = every t.")
    counterfactual_order: Literal["reversed", "mixed"] = Field(
        "reversed", description="The counterfactual of an \"A, then B\" clip: B then A (reversed), or one of B-A, A-A, "
        "B-B drawn uniformly (mixed: also the first-only and second-only failures); world/counterfactual.py.")
    text_pos_gain: float | None = Field(
        None, gt=0, description="Embedded model: grow a zero-initialised text position table with this gain before "
        "training (models/dit.TextEncoder.attach_position_boost: the shipped base's text encoder is nearly "
        "order-blind); null = as loaded.")
    lora_rank: int | None = Field(None, ge=1, description="LoRA rank through peft; null = full fine-tune.")
    lora_targets: tuple[str, ...] = Field(("q", "kv", "out"), description="Module names LoRA adapts.")
    max_grad_norm: float = Field(1.0, gt=0)
    ckpt_every: int = Field(200, ge=1)
    log_every: int = Field(25, ge=1)
    structure: StructureConfig = StructureConfig()
    physics: PhysicsConfig = PhysicsConfig()
    data: SFTDataConfig = SFTDataConfig()

    @model_validator(mode="after")
    def _counterfactuals_need_scenes(self) -> "SFTConfig":
        if self.contrastive_lambda > 0 and self.data.source != "shapeworld":
            raise ValueError("sft.contrastive_lambda needs counterfactual clips, which only the ShapeWorld renderer "
                             "makes (sft.data.source=shapeworld); set it to 0 for sft.data.source="
                             f"{self.data.source}")
        if self.contrastive_t_min > 0 and self.contrastive_lambda == 0:
            raise ValueError("sft.contrastive_t_min restricts the counterfactual term, which is off "
                             "(sft.contrastive_lambda=0); set sft.contrastive_lambda > 0 or leave it at 0")
        return self
