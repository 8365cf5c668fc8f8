"""Recipe sections of Stage II (GRPO and its refinements: ViPO, BPGO, self-paced curriculum, joint reward)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from vidtune.config.section import Section


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
    noise_pool: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (1, 1, 1), description="Coarse exploration noise (project addition, ALGORITHMS.md §1): the SDE noise is "
        "constant over (F, H, W) blocks of these sizes, so it explores a d = D/(p_F·p_H·p_W)-dimensional subspace; "
        "(1, 1, 1) = the isotropic noise of the papers. Not with ViPO's dense reduction.")


class RewardHead(Section):
    """One reward head: a registered reward, its arguments, weight and curriculum component."""

    reward: str = Field(description="Registered reward name (rewards/base.py REGISTRY).")
    label: str | None = Field(None, description="Head name in logs (default: the reward name); unique.")
    kwargs: dict = Field(default_factory=dict, description="Arguments of the reward's factory.")
    weight: float = Field(1.0, ge=0, description="Weight in the fixed-weight sum (0 = monitored only).")
    component: Literal["visual", "temporal", "semantic"] | None = Field(
        None, description="Self-paced curriculum component this head feeds.")
    lo: float | None = Field(None, description="Lower bound for normalising to [0, 1] (curriculum); null = the 1st "
                             "percentile of the head's scores over the curriculum warm-up, then frozen.")
    hi: float | None = Field(None, description="Upper bound for normalising to [0, 1] (curriculum); null = the 99th "
                             "percentile of the head's warm-up scores.")


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
    prior: Literal["t2v_reference", "i2v_static_frame", "ema"] = Field(
        "t2v_reference", description="R⁰_p: mean reward of n_prior reference rollouts (T2V), the reward of the "
        "conditioning frame held still (I2V; needs grpo.images_dir), or a moving average of group means.")

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
        if self.bpgo.enabled and self.bpgo.prior == "i2v_static_frame" and self.images_dir is None:
            raise ValueError("grpo.bpgo.prior=i2v_static_frame scores each prompt's conditioning frame: it needs "
                             "grpo.images_dir (I2V)")
        if self.images_dir is not None and self.prompts_file is None:
            raise ValueError("grpo.images_dir needs grpo.prompts_file (first frames are matched to its prompts)")
        level = self.rollout.eta if self.rollout.schedule == "dance" else self.rollout.a
        if level == 0:
            raise ValueError(f"grpo.rollout noise level is 0 for schedule '{self.rollout.schedule}': no transition "
                             "is trainable and shared initial noise would give identical rollouts")
        if self.vipo.enabled and self.vipo.reduction == "channel_sum" and self.rollout.noise_pool != (1, 1, 1):
            raise ValueError(f"grpo.rollout.noise_pool {self.rollout.noise_pool} gives densities on the pooled grid, "
                             "which has no per-position reduction: use grpo.vipo.reduction=scalar or noise_pool "
                             "(1, 1, 1)")
        return self
