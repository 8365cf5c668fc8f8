"""Loading, dtype handling, latent normalisation and LoRA files for the Wan policy (models/wan.py).

Everything here follows diffusers' Wan pipelines (``WanPipeline``, ``WanImageToVideoPipeline``, diffusers 0.42):
latents are normalised per channel with the VAE's ``latents_mean``/``latents_std`` exactly as the pipelines do
before decoding, the causal VAE maps 4k+1 pixel frames to k+1 latent frames, and LoRA weights are written with
``WanPipeline.save_lora_weights`` so that ``pipe.load_lora_weights(folder)`` reads them back. ``tiny_wan_components``
builds random 2-layer components from configs (ENVIRONMENT.md §3a/§3b) for tests and timing benchmarks.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vidtune.errors import VidtuneError

PIPELINE_KINDS = {"WanPipeline": "t2v", "WanImageToVideoPipeline": "i2v"}
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
LORA_WEIGHTS_2 = "pytorch_lora_weights_transformer_2.safetensors"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# --------------------------------------------------------------------------------------------- loading


def pipeline_class_name(spec: str | Path) -> str:
    """The diffusers pipeline class recorded in ``model_index.json`` of a local folder or a hub repo id.

    A local folder without ``model_index.json``, or a checkpoint of another pipeline class, is an error naming the
    path and what was found (so a tiny-DiT folder or a random directory fails before any weight is read)."""
    path = Path(str(spec)).expanduser()
    if path.exists():
        index = path / "model_index.json"
        if not path.is_dir() or not index.is_file():
            found = sorted(p.name for p in path.iterdir())[:8] if path.is_dir() else "a file"
            raise VidtuneError(f"{path} is not a Wan checkpoint: no model_index.json (a diffusers pipeline folder "
                               f"from WanPipeline.save_pretrained); found {found}")
        try:
            cls = json.loads(index.read_text()).get("_class_name")
        except json.JSONDecodeError as e:
            raise VidtuneError(f"{index} is not valid JSON: {e}") from None
    else:
        from diffusers import DiffusionPipeline

        try:
            cls = DiffusionPipeline.load_config(str(spec)).get("_class_name")
        except Exception as e:  # offline, unknown repo, no model_index.json on the hub
            raise VidtuneError(f"cannot read model_index.json of '{spec}': neither a local folder nor a reachable "
                               f"hub repo ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if cls not in PIPELINE_KINDS:
        raise VidtuneError(f"'{spec}' is not a Wan checkpoint: its model_index.json names pipeline {cls!r}; "
                           f"expected one of {sorted(PIPELINE_KINDS)} (e.g. Wan-AI/Wan2.1-T2V-1.3B-Diffusers)")
    return cls


def load_pipeline(spec: str | Path, dtype: torch.dtype = torch.float32):
    """``WanPipeline``/``WanImageToVideoPipeline.from_pretrained(spec)``: the transformer(s) and the text/image
    encoders in ``dtype`` (their ``_keep_in_fp32_modules`` stay fp32), the VAE always in fp32 (as the Wan model
    cards recommend). Works for a local folder or a hub id (respecting ``HF_HUB_OFFLINE``)."""
    import diffusers
    from diffusers import AutoencoderKLWan

    cls_name = pipeline_class_name(spec)
    cls = getattr(diffusers, cls_name)
    try:
        vae = AutoencoderKLWan.from_pretrained(str(spec), subfolder="vae", dtype=torch.float32)
        pipe = cls.from_pretrained(str(spec), vae=vae, dtype=dtype)
    except (OSError, ValueError, EnvironmentError) as e:
        raise VidtuneError(f"loading Wan checkpoint '{spec}' failed: {str(e).splitlines()[0]}") from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def cast_transformer(transformer: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast weights to ``dtype`` except the modules the model keeps in fp32 (rope, time embedder, norms, the
    output scale/shift table) — the layout ``from_pretrained(torch_dtype=…)`` produces, without its warning."""
    keep = set(getattr(transformer, "_keep_in_fp32_modules", None) or ())
    for name, p in list(transformer.named_parameters()) + list(transformer.named_buffers()):
        if p.is_floating_point():
            p.data = p.data.to(torch.float32 if keep & set(name.split(".")) else dtype)
    return transformer


# --------------------------------------------------------------------------------------------- latents


def latent_stats(vae: nn.Module, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) [1, C, 1, 1, 1] of the VAE config, as used by the diffusers Wan pipelines."""
    c = vae.config
    mean = torch.tensor(c.latents_mean, dtype=dtype, device=device).view(1, c.z_dim, 1, 1, 1)
    std = torch.tensor(c.latents_std, dtype=dtype, device=device).view(1, c.z_dim, 1, 1, 1)
    return mean, std


def normalise(z: torch.Tensor, vae: nn.Module) -> torch.Tensor:
    """Raw VAE latents → model latents: (z − mean) / std (``WanImageToVideoPipeline.prepare_latents``)."""
    mean, std = latent_stats(vae, z.device, z.dtype)
    return (z - mean) / std


def denormalise(x: torch.Tensor, vae: nn.Module) -> torch.Tensor:
    """Model latents → raw VAE latents: x·std + mean (the decode branch of ``WanPipeline.__call__``)."""
    mean, std = latent_stats(vae, x.device, x.dtype)
    return x * std + mean


def check_video_size(frames: int, height: int, width: int, stride_t: int, stride_s: int,
                     patch: tuple[int, int, int]) -> None:
    """Raise a ``VidtuneError`` naming the size that does not fit the causal VAE (4k+1 frames for stride 4) or the
    spatial stride × transformer patch (multiples of 16 for Wan2.1)."""
    if frames < 1 or (frames - 1) % stride_t:
        k = max(0, round((frames - 1) / stride_t))
        raise VidtuneError(f"frames={frames} does not fit the causal Wan VAE (temporal stride {stride_t}): use "
                           f"{stride_t}k+1 frames, e.g. {stride_t * k + 1} or {stride_t * (k + 1) + 1}")
    lat_f = (frames - 1) // stride_t + 1
    if lat_f % patch[0]:
        raise VidtuneError(f"frames={frames} gives {lat_f} latent frames, not a multiple of the transformer's "
                           f"temporal patch {patch[0]}")
    m_h, m_w = stride_s * patch[1], stride_s * patch[2]
    if height % m_h or width % m_w or height <= 0 or width <= 0:
        raise VidtuneError(f"height×width = {height}×{width} must be positive multiples of {m_h}×{m_w} "
                           f"(VAE spatial stride {stride_s} × transformer patch {patch[1]}×{patch[2]})")


def first_frame_mask(batch: int, frames: int, stride_t: int, lat_h: int, lat_w: int) -> torch.Tensor:
    """The I2V mask channels [B, s_T, F_lat, H, W] of ``WanImageToVideoPipeline.prepare_latents``: pixel frame 0 is
    known (repeated s_T times so it fills latent frame 0), every other frame unknown."""
    m = torch.zeros(batch, 1, frames, lat_h, lat_w)
    m[:, :, 0] = 1
    m = torch.cat([m[:, :, :1].repeat_interleave(stride_t, dim=2), m[:, :, 1:]], dim=2)
    return m.view(batch, -1, stride_t, lat_h, lat_w).transpose(1, 2)


# --------------------------------------------------------------------------------------------- LoRA files


def lora_metadata(transformer: nn.Module) -> dict[str, Any]:
    """The peft ``LoraConfig`` of the default adapter as a dict (rank, alpha, targets) for the LoRA file header."""
    cfg = transformer.peft_config["default"].to_dict()
    return {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg.items()}


def save_lora_files(folder: str | Path, transformer: nn.Module, transformer_2: nn.Module | None) -> Path:
    """Write the adapters in the diffusers LoRA format: ``pytorch_lora_weights.safetensors`` (``transformer``) and,
    for Wan2.2 two-expert models, ``pytorch_lora_weights_transformer_2.safetensors``; both load with
    ``pipe.load_lora_weights(folder[, weight_name=…, load_into_transformer_2=True])``."""
    from diffusers import WanPipeline
    from peft import get_peft_model_state_dict

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for tr, name in ((transformer, LORA_WEIGHTS), (transformer_2, LORA_WEIGHTS_2)):
        if tr is None or not getattr(tr, "peft_config", None):
            continue
        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(tr).items()}
        WanPipeline.save_lora_weights(folder, transformer_lora_layers=state, weight_name=name,
                                      transformer_lora_adapter_metadata=lora_metadata(tr))
    return folder


def load_lora_files(pipe, folder: str | Path, adapter_name: str = "default") -> None:
    """Load a folder written by :func:`save_lora_files` into a diffusers Wan pipeline (both experts if present)."""
    folder = Path(folder)
    if not (folder / LORA_WEIGHTS).is_file() and not (folder / LORA_WEIGHTS_2).is_file():
        raise VidtuneError(f"{folder} holds no LoRA weights ({LORA_WEIGHTS} or {LORA_WEIGHTS_2})")
    if (folder / LORA_WEIGHTS).is_file():
        pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHTS, adapter_name=adapter_name)
    if (folder / LORA_WEIGHTS_2).is_file():
        if getattr(pipe, "transformer_2", None) is None:
            raise VidtuneError(f"{folder} has LoRA weights for transformer_2 but the model has one transformer")
        pipe.load_lora_weights(str(folder), weight_name=LORA_WEIGHTS_2, adapter_name=adapter_name,
                               load_into_transformer_2=True)


# --------------------------------------------------------------------------------------------- tiny components


def tiny_wan_components(seed: int = 0, *, i2v: bool = False, two_experts: bool = False,
                        dim: int = 24, layers: int = 2, ffn: int = 32) -> dict[str, Any]:
    """Random Wan components built from configs (ENVIRONMENT.md §3a/§3b), for CPU tests and timing: a 13.9k-param
    causal VAE (strides 4, 8), a 2-layer UMT5 encoder with a byte-level tokenizer, and a 2-layer transformer
    (``dim`` = heads·head_dim). ``i2v`` adds a tiny CLIP image encoder (Wan2.1-I2V layout: 36 input channels and
    image embeddings); ``two_experts`` adds ``transformer_2`` with ``boundary_ratio`` 0.875 (Wan2.2 A14B layout)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanTransformer3DModel
    from transformers import ByT5Tokenizer, UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=384, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4, relative_attention_num_buckets=8,
        dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)).eval()

    def transformer():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=dim // 2,
            in_channels=36 if i2v else 16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=ffn,
            num_layers=layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads", rope_max_seq_len=32,
            image_dim=4 if i2v else None)

    out: dict[str, Any] = dict(transformer=transformer(), transformer_2=transformer() if two_experts else None,
                               vae=vae, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
                               text_encoder=text_encoder, tokenizer=ByT5Tokenizer(),
                               boundary_ratio=0.875 if two_experts else None)
    if i2v:
        from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModelWithProjection

        out["image_encoder"] = CLIPVisionModelWithProjection(CLIPVisionConfig(
            hidden_size=4, projection_dim=4, num_hidden_layers=2, num_attention_heads=2, image_size=16,
            intermediate_size=16, patch_size=4)).eval()
        out["image_processor"] = CLIPImageProcessor(crop_size=16, size=16)
    return out
