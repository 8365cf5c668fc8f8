"""Recipe sections every stage reads: the run, the ShapeWorld canvas, the model, sampling, flow times, evaluation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from vidtune.config.section import Section


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
        "builtin:base", description="Weights to start from: a model folder, 'builtin:base' (shipped), "
        "'builtin:base_p244' (the shipped 2×4×4-patch base) or null (random).")

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


class EvalConfig(Section):
    """Evaluation between stages and `vidtune eval` (stages/evaluate.py)."""

    n_seen: int = Field(48, ge=0, description="Instruction prompts with compositions seen in training.")
    n_heldout: int = Field(48, ge=0, description="Prompts with held-out colour/shape compositions.")
    seed: int = Field(1000, description="Seed of the prompt set and of the sampling noise (fixed across stages).")
    samples_per_prompt: int = Field(
        1, ge=1, description="K clips per prompt, each from its own fixed seed (VBench samples 5); K > 1 divides the "
        "sampling variance of every mean by K at K× the eval time. The first clip of each prompt is the K = 1 set.")
    grid_prompts: int = Field(8, ge=0, description="Prompts shown in the video grid of the report.")
    i2v: bool = Field(False, description="Image-to-video: condition each prompt on the first frame of its "
                      "ground-truth rendering (the layout is given; what is judged is how the clip goes on).")

    @model_validator(mode="after")
    def _some_prompts(self) -> "EvalConfig":
        if self.n_seen + self.n_heldout == 0:
            raise ValueError("eval.n_seen + eval.n_heldout must be > 0")
        return self
