"""Typed recipes: one YAML file per run plus dotted command-line overrides.

Every section is a frozen pydantic model with ``extra="forbid"``, so a typo in a key is an error that names the
key and suggests the closest valid one. Stage sections are added here as the stages land; a stage module owns its
algorithmic defaults only through these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vidtune.config_errors import format_validation_error
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
    device: str = Field(
        "cpu", pattern=r"^(cpu|cuda(:[0-9]+)?)$",
        description="torch device of the policy, its reference, the ViPO extractor and the stages' noise and latents "
        "(cpu, cuda, cuda:1 …); CUDA this machine lacks is an error when a command starts.")
    tensorboard: bool = Field(
        True, description="Also write every training scalar to TensorBoard event files `<run>/tensorboard/<stage>/`.")
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Data-parallel strategy of a torchrun job (WORLD_SIZE > 1; ignored in one process): ddp "
        "keeps a whole policy per rank, fsdp shards parameters, gradients and optimiser state over the ranks "
        "(FSDP2 per transformer block and text encoder; runtime/fsdp.py).")
    rollout_workers: int = Field(
        0, ge=0, description="GRPO under runtime=ray: Ray actors that roll out each iteration's prompt groups (their "
        "share each, with the policy actor's weights sent by object reference); 0 = the policy actor rolls out "
        "itself (runtime/rollout_workers.py).")

    @model_validator(mode="after")
    def _rollout_workers_need_ray(self) -> "RunConfig":
        if self.rollout_workers and self.runtime != "ray":
            raise ValueError(f"run.rollout_workers={self.rollout_workers} needs run.runtime=ray")
        return self


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
    p_loose_camera: float = Field(
        0.0, ge=0, le=1, description="Probability that a loose caption names the camera pan (pretraining)."
    )
    p_loose_order: float = Field(
        0.0, ge=0, le=1, description="Probability that a loose caption naming the motion names the whole 'then' "
        "sequence, not only the first motion (pretraining)."
    )


class ModelConfig(Section):
    """The generator: the embedded pixel-space video DiT (models/tiny.py) or a diffusers Wan model (models/wan.py,
    built by models/factory.load_policy)."""

    type: Literal["tiny", "wan"] = Field("tiny", description="Generator family.")
    hub_id: str | None = Field(None, description="type=wan: hub id, e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers.")
    path: str | None = Field(None, description="type=wan: local diffusers or vidtune-LoRA folder (wins over hub_id).")
    options: dict = Field(default_factory=dict, description="type=wan: models/wan.py WanConfig fields (frames, …).")
    patch: tuple[int, int, int] = Field((1, 8, 8), description="Patch size (frames, height, width).")
    hidden: int = Field(128, ge=16, description="Transformer width.")
    depth: int = Field(4, ge=1, description="Number of DiT blocks.")
    heads: int = Field(4, ge=1, description="Attention heads.")
    text_layers: int = Field(2, ge=0, description="Layers of the text encoder.")
    text_len: int = Field(16, ge=4, description="Maximum prompt length in tokens.")
    mlp_ratio: float = Field(4.0, gt=0, description="MLP hidden size / width.")
    refiner: int | None = Field(
        None, ge=0, description="Channels of the pixel-space refiner head (models/refiner.py; 0 = none). null: as the "
        "init checkpoint has it (none for a random init); a number on an init without one grows it (output "
        "unchanged at first), on an init with a different one is an error.")
    init: str | None = Field(
        "builtin:base", description="Weights to start from: a model folder, 'builtin:base' (shipped) or null (random)."
    )

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.hidden % self.heads:
            raise ValueError(f"model.hidden={self.hidden} is not divisible by model.heads={self.heads}")
        if self.type == "wan" and not (self.hub_id or self.path):
            raise ValueError("model.type=wan needs model.hub_id or model.path")
        if self.type == "tiny" and (self.hub_id or self.path or self.options):
            raise ValueError("model.hub_id, model.path and model.options are for model.type=wan")
        return self


class SamplingConfig(Section):
    """Evaluation / demo sampler (ODE Euler with classifier-free guidance)."""

    steps: int = Field(20, ge=1, description="Euler steps from t=1 to t=0.")
    shift: float = Field(1.0, gt=0, description="Time shift k in t <- k t / (1 + (k-1) t).")
    guidance: float = Field(3.0, ge=0, description="Classifier-free guidance scale (1 = off).")
    batch_size: int = Field(16, ge=1, description="Videos per forward batch.")


class FlowTimes(Section):
    """How flow-matching training draws its flow times t (math/flow_matching.sample_t)."""

    t_sampler: Literal["logit_normal", "shifted_uniform"] = "logit_normal"
    t_loc: float = Field(0.0, description="logit_normal: location μ of t = sigmoid(μ + σ·n); μ > 0 trains more at "
                         "high noise, where the layout (how many objects, where) is decided.")
    t_scale: float = Field(1.0, gt=0, description="logit_normal: spread σ of t = sigmoid(μ + σ·n).")


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
    source: Literal["target"] = Field("target", description="ψ from the training clip (offline, once).")
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


class RolloutConfig(Section):
    """Stage II SDE rollouts (ALGORITHMS.md §1)."""

    steps: int = Field(10, ge=2, description="S: transitions from t=1 to t=0.")
    shift: float = Field(1.0, gt=0, description="Time shift k (embedded model: 1.0; Wan: 3.0).")
    schedule: Literal["dance", "flow_grpo"] = "dance"
    eta: float = Field(0.3, ge=0, description="σ for the 'dance' schedule.")
    a: float = Field(0.7, ge=0, description="a for the 'flow_grpo' schedule.")
    guidance: float = Field(3.0, ge=0, description="CFG scale, fixed for the whole run.")
    share_init_noise: bool = True
    train_fraction: float = Field(0.6, gt=0, le=1, description="f: share of noisy transitions trained per sample.")
    final_step: Literal["ode", "sde"] = "ode"
    sde_window: tuple[int, int, int] | None = Field(None, description="(w, lo, hi) or null = all transitions.")


class RewardHead(Section):
    """One reward head: a registered reward, its arguments, weight and curriculum component."""

    reward: str = Field(description="Registered reward name (rewards/base.py REGISTRY).")
    label: str | None = Field(None, description="Head name in logs (default: the reward name); unique.")
    kwargs: dict = Field(default_factory=dict, description="Arguments of the reward's factory.")
    weight: float = Field(1.0, ge=0, description="Weight in the fixed-weight sum (0 = monitored only).")
    component: Literal["visual", "temporal", "semantic"] | None = Field(
        None, description="Self-paced curriculum component this head feeds.")
    lo: float | None = Field(None, description="Lower bound for normalising to [0, 1] (curriculum).")
    hi: float | None = Field(None, description="Upper bound for normalising to [0, 1] (curriculum).")


class GateConfig(Section):
    """A gate (ALGORITHMS.md §6.4): a reward whose pass predicate, when false, floors every head of the sample."""

    reward: str = Field(description="Registered reward name used as the gate.")
    label: str | None = None
    kwargs: dict = Field(default_factory=dict)
    floor: float | None = Field(None, description="Value a failed sample's heads take (null: lowest head bound).")
    min_score: float | None = Field(None, description="Also fail when the gate's score is below this.")
    fail_closed: bool = Field(True, description="An error or non-finite score fails the sample.")


class RewardConfig(Section):
    heads: tuple[RewardHead, ...] = Field((RewardHead(reward="verifier"),), description="Reward heads.")
    gates: tuple[GateConfig, ...] = Field((), description="Gates applied before any combination.")


class VipoConfig(Section):
    """ViPO dense advantage maps (ALGORITHMS.md §4)."""

    enabled: bool = False
    k: int = Field(3, ge=1, description="K principal components.")
    sigma: float = Field(1.0, ge=0, description="Gaussian blur σ in feature patches.")
    renorm: bool = Field(False, description="Divide M by its mean (ablation).")
    reduction: Literal["channel_sum", "scalar"] = "channel_sum"
    clip_range: float = Field(1e-4, gt=0, description="Clip range for per-position ratios.")
    extractor: str = Field("builtin:scorer", description="Frozen feature extractor (the learned scorer).")


class BpgoConfig(Section):
    """BPGO reliability-adaptive scaling + contrastive reward transform (ALGORITHMS.md §3)."""

    enabled: bool = False
    alpha: float = 0.5
    ras: Literal["paper", "posterior"] = "paper"
    crt: Literal["paper", "sigmoid", "off"] = "paper"
    k_mode: Literal["auto", "fixed"] = "auto"
    k_target: float = 2.0
    k_fixed: float = 1.0
    lam: float = 1.0
    varsigma: float = Field(1.0, ge=0, description="ς: weight of the CRT surrogate term.")
    ras_scales_crt: bool = False
    prior: Literal["t2v_reference", "ema"] = "t2v_reference"

    @field_validator("crt", mode="before")
    @classmethod
    def _yaml_off(cls, v):
        """YAML 1.1 reads a bare `off` as false; `crt: off` means the string."""
        return "off" if v is False else v
    n_prior: int = Field(4, ge=1, description="Reference samples per prompt for the t2v_reference prior.")
    ema_momentum: float = Field(0.9, ge=0, lt=1)


class CurriculumConfig(Section):
    """Self-paced reward curriculum over [visual, temporal, semantic] (ALGORITHMS.md §5)."""

    enabled: bool = False
    rule: Literal["competence", "taros"] = "competence"
    scope: Literal["batch", "group"] = "batch"
    warmup_steps: int = Field(20, ge=0)
    tau_init: float = 0.75
    taros_beta: float = 0.3


class JointConfig(Section):
    """Joint reward: min-norm balancing of per-head advantages (ALGORITHMS.md §6)."""

    enabled: bool = False
    mode: Literal["mgda_batch", "mgda_sample", "fixed"] = "mgda_batch"
    combine: Literal["loss", "advantage"] = Field(
        "loss", description="loss: L = Σ_i c_i·L(A_i) on shared ratios (each head clipped by the PPO clip on its "
        "own); advantage: L = L(Σ_i c_i·A_i). Equal gradients at θ = θ_old.")


class GRPOConfig(Section):
    """Stage II: GRPO on the flow-matching policy and its refinements (stages/grpo.py, ALGORITHMS.md §1–§6)."""

    iterations: int = Field(30, ge=1, description="Rollout batches (one optimiser step each by default).")
    prompts_per_iter: int = Field(4, ge=1, description="P prompts per rollout batch.")
    group_size: int = Field(8, ge=2, description="G rollouts per prompt.")
    prompt_pool: int = Field(64, ge=1, description="ShapeWorld training prompts (seen compositions) drawn from; "
                             "unused with prompts_file.")
    prompts_file: str | None = Field(
        None, description="Text file of training prompts, one a line (blank lines and lines starting with # are "
        "skipped), used instead of the ShapeWorld prompt pool.")
    images_dir: str | None = Field(
        None, description="I2V: folder of first frames <k>.png for the k-th prompt of prompts_file (k from 0, "
        "skipped lines not counted), resized to the policy's clip size.")
    lr: float = Field(2e-5, gt=0)
    clip_range: float = Field(1e-4, gt=0)
    beta_kl: float = Field(0.0, ge=0, description="β_KL of the KL to the reference (0 = off).")
    kl_form: Literal["exact", "no_dt"] = "exact"
    advantage: Literal["zscore", "mean_baseline"] = "zscore"
    std_floor: float = Field(0.0, ge=0)
    adv_clip: float = Field(5.0, gt=0)
    max_grad_norm: float = Field(1.0, gt=0)
    minibatches: int = Field(1, ge=1)
    inner_epochs: int = Field(1, ge=1)
    micro_batch: int | None = Field(None, ge=1, description="Samples per forward in rollouts and per backward in "
                                    "updates (memory knob; same gradient up to rounding); null = all at once.")
    lora_rank: int | None = Field(None, ge=1, description="LoRA rank; null = full fine-tune.")
    lora_targets: tuple[str, ...] = ("q", "kv", "out")
    ckpt_every: int = Field(5, ge=1)
    rollout: RolloutConfig = RolloutConfig()
    reward: RewardConfig = RewardConfig()
    vipo: VipoConfig = VipoConfig()
    bpgo: BpgoConfig = BpgoConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    joint: JointConfig = JointConfig()

    @model_validator(mode="after")
    def _compatible(self) -> "GRPOConfig":
        """ALGORITHMS.md §0 compatibility: curriculum ⊥ joint; BPGO needs a single scalar reward."""
        if self.curriculum.enabled and self.joint.enabled:
            raise ValueError("grpo.curriculum.enabled and grpo.joint.enabled are mutually exclusive")
        if self.bpgo.enabled and (self.curriculum.enabled or self.joint.enabled):
            other = "grpo.curriculum.enabled" if self.curriculum.enabled else "grpo.joint.enabled"
            raise ValueError(f"grpo.bpgo.enabled needs a single scalar reward; it cannot be combined with {other}")
        if self.bpgo.enabled and len(self.reward.heads) != 1:
            raise ValueError(f"grpo.bpgo.enabled needs exactly one reward head, got {len(self.reward.heads)} "
                             "(grpo.reward.heads)")
        if self.curriculum.enabled:
            comps = {h.component for h in self.reward.heads}
            if not {"visual", "temporal", "semantic"} <= comps:
                raise ValueError("grpo.curriculum.enabled needs reward heads with component visual, temporal and "
                                 f"semantic (grpo.reward.heads), got {sorted(c for c in comps if c)}")
        if self.joint.enabled and self.joint.combine == "loss" and self.vipo.enabled:
            raise ValueError("grpo.vipo.enabled lifts one scalar advantage per sample to a map; with "
                             "grpo.joint.enabled use grpo.joint.combine=advantage")
        if self.joint.enabled and len(self.reward.heads) < 2:
            raise ValueError("grpo.joint.enabled needs at least two reward heads (grpo.reward.heads)")
        if self.images_dir is not None and self.prompts_file is None:
            raise ValueError("grpo.images_dir needs grpo.prompts_file (first frames are matched to its prompts)")
        level = self.rollout.eta if self.rollout.schedule == "dance" else self.rollout.a
        if level == 0:
            raise ValueError(f"grpo.rollout noise level is 0 for schedule '{self.rollout.schedule}': no transition "
                             "is trainable and shared initial noise would give identical rollouts")
        return self


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


class EvalConfig(Section):
    """Evaluation between stages and `vidtune eval` (stages/evaluate.py)."""

    n_seen: int = Field(48, ge=0, description="Instruction prompts with compositions seen in training.")
    n_heldout: int = Field(48, ge=0, description="Prompts with held-out colour/shape compositions.")
    seed: int = Field(1000, description="Seed of the prompt set and of the sampling noise (fixed across stages).")
    samples_per_prompt: int = Field(
        1, ge=1, description="K clips per prompt, each from its own fixed seed (VBench samples 5); K > 1 divides the "
        "sampling variance of every mean by K at K× the eval time. The first clip of each prompt is the K = 1 set.")
    grid_prompts: int = Field(8, ge=0, description="Prompts shown in the video grid of the report.")

    @model_validator(mode="after")
    def _some_prompts(self) -> "EvalConfig":
        if self.n_seen + self.n_heldout == 0:
            raise ValueError("eval.n_seen + eval.n_heldout must be > 0")
        return self


class PairsConfig(Section):
    """Preference pair sources for Stage III (ALGORITHMS.md §8.2)."""

    on_policy: bool = Field(True, description="Hard negatives ranked from the current policy's samples.")
    n_prompts: int = Field(32, ge=1, description="Prompts sampled for on-policy candidates.")
    prompts_file: str | None = Field(
        None, description="Text file of candidate prompts, one a line (blank and # lines skipped), of which n_prompts "
        "are drawn instead of ShapeWorld captions; the ShapeWorld judges rank the pairs, so each must parse as a "
        "ShapeWorld prompt.")
    n_candidates: int = Field(8, ge=2, description="Samples per prompt (distinct seeds).")
    sem_tol: float = Field(0.05, ge=0, description="|Sem_a − Sem_b| bound (semantic agreement).")
    cos_min: float = Field(0.9, ge=-1, le=1, description="Embedding cosine lower bound.")
    q_gap: float = Field(0.1, ge=0, description="Minimum quality gap Q_a − Q_b (heads normalised over the pool).")
    min_spread: float = Field(0.05, gt=0, description="Smallest pool spread a quality head is normalised by "
                              "(preference/build.pool_quality), so rounding-level differences are no gap.")
    synthetic: tuple[Literal["reverse", "shuffle", "freeze", "stall"], ...] = Field(
        ("reverse", "shuffle", "freeze"), description="Synthetic temporal negative kinds (empty = off).")
    n_synthetic_clips: int = Field(32, ge=0, description="Good clips turned into synthetic pairs.")
    synthetic_from: Literal["policy", "world"] = Field(
        "policy", description="Where the good clips of synthetic pairs come from: the policy's best candidate per "
        "prompt (verifier ≥ good_min), or the ShapeWorld renderer's ground truth for the candidate prompts (the "
        "embedded stand-in for real videos).")
    good_min: float = Field(0.5, ge=0, le=1, description="Verifier score a policy clip needs to serve as a winner.")
    human: str | None = Field(None, description="JSONL of human-ranked pairs (annotation export).")


class DPOConfig(Section):
    """Stage III: Diffusion-DPO against the Stage II checkpoint (stages/dpo.py, ALGORITHMS.md §8)."""

    steps: int = Field(100, ge=1)
    batch_size: int = Field(8, ge=1, description="Pairs per step.")
    lr: float = Field(5e-6, gt=0)
    beta: float = Field(5000.0, gt=0, description="β_0 (per-element-mean errors; re-tune so |z| is O(1)).")
    beta_t: Literal["constant", "eps"] = "constant"
    beta_schedule: Literal["linear", "cosine", "constant"] = "linear"
    kappa: float = Field(0.8, gt=0, le=1, description="β(end) = κ·β_0.")
    drop_q: float = Field(0.25, ge=0, lt=1, description="Drop this quantile of smallest score gaps.")
    form: Literal["standard", "reference_free"] = "standard"
    backward: Literal["standard", "retain", "recompute"] = "recompute"
    t_sampler: Literal["logit_normal", "shifted_uniform"] = "logit_normal"
    grad_frames: int | None = Field(None, ge=1, description="Mixed resolution: latent frames of the window the "
                                    "preference gradient sees (a random window per pair); None = the whole clip.")
    grad_downsample: int = Field(1, ge=1, description="Mixed resolution: k×k average pooling of the latents for the "
                                 "preference gradient (1 = generation resolution).")
    lora_rank: int | None = Field(None, ge=1, description="LoRA rank on the Stage II policy (π_ref = the same "
                                  "network with adapters disabled); null = full fine-tune against a frozen copy.")
    lora_targets: tuple[str, ...] = ("q", "kv", "out")
    max_grad_norm: float = Field(1.0, gt=0)
    ckpt_every: int = Field(25, ge=1)
    log_every: int = Field(5, ge=1)
    min_pairs: int = Field(4, ge=1, description="Fewest usable pairs to train on (after drop_q).")
    on_too_few: Literal["skip", "error"] = Field(
        "skip", description="Fewer than min_pairs: skip the stage (its model = the Stage II model, logged and "
        "recorded in dpo/SKIPPED) or fail.")
    pairs: PairsConfig = PairsConfig()


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
