"""Recipe sections of Stage III (Diffusion-DPO and its pair sources)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from vidtune.config.grpo import GateConfig
from vidtune.config.section import Section


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
    dynamic_only: bool = Field(
        True, description="Only clips that are dynamic by the §10.2 dynamic-degree criterion serve as synthetic "
        "winners (§8.2): a static clip's reversed or frozen copy is no negative. Dropped clips are counted (static).")
    good_min: float = Field(0.5, ge=0, le=1, description="Verifier score a policy clip needs to serve as a winner.")
    human: str | None = Field(None, description="JSONL of human-ranked pairs (annotation export).")
    gates: tuple[GateConfig, ...] = Field(
        (), description="Gates (e.g. the safety gate) every on-policy candidate must pass to enter a pair (§8.2).")


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
