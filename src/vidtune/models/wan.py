"""``VideoPolicy`` on diffusers' Wan components: Wan2.1 T2V / I2V and Wan2.2 two-expert models (DESIGN.md §4).

Latent space: x = (z − μ_VAE)/σ_VAE [B, 16, F, H, W] with z the causal VAE's latents (pixel frames 4k+1 → k+1
latent frames, spatial stride 8), normalised per channel exactly as ``WanPipeline`` does before decoding.
Velocity: diffusers' ``FlowMatchEulerDiscreteScheduler.step`` is x_{σ'} = x_σ + (σ' − σ)·v̂ with
x_σ = (1 − σ)·x_0 + σ·ε, so the transformer output v̂ is exactly our v = ε − x_0 at t = σ (t = 1 noise); the
transformer is called with ``timestep = 1000·t``, the scheduler's ``sigmas·num_train_timesteps`` (no sign flip).
Classifier-free guidance is applied outside (``sampling.ode.guided_velocity``).
Wan2.2 A14B: ``transformer`` (high noise) serves rows with 1000·t ≥ 1000·boundary_ratio, ``transformer_2`` the
others, row by row, as ``WanPipeline.__call__`` does per step.
I2V (Wan2.1-I2V-14B and Wan2.2-I2V-A14B layout, 36 input channels): the conditioning is the pipeline's
``[mask (4 ch), normalised VAE latents of (first frame, zeros…)]`` concatenated to x, plus the CLIP penultimate
hidden states when the transformer has ``image_dim`` (Wan2.1). Wan2.2 TI2V-5B image conditioning
(``expand_timesteps``, which overwrites latent frame 0) is not supported; its T2V mode is.
"""

from __future__ import annotations

from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from vidtune.errors import VidtuneError
from vidtune.models import wan_io
from vidtune.models.policy import Cond

DEFAULT_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")


@dataclass(frozen=True)
class WanConfig:
    """Options of a Wan policy (recipe ``model.options``); the architecture comes from the checkpoint."""

    frames: int = 81  # pixel frames of generated clips (4k+1)
    height: int = 480  # pixel height (multiple of 16 for Wan2.1)
    width: int = 832  # pixel width
    max_sequence_length: int = 512  # UMT5 tokens (prompts are padded with zeros to this length, as in diffusers)
    negative_prompt: str = ""  # what the unconditional prompt '' means (Wan's model card uses a long one)
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"  # transformer / text-encoder weights
    gradient_checkpointing: bool = False  # recompute each transformer block in backward
    text_cache_size: int = 4096  # prompts whose embeddings are kept (LRU); 0 = no cache
    sample_posterior: bool = False  # encode_video: sample the VAE posterior instead of its mode
    vae_batch_size: int = 4  # clips per VAE encode/decode call
    vae_tiling: bool = False  # diffusers' tiled VAE (lower peak memory at 480p/720p)
    lora_experts: tuple[str, ...] = ("transformer", "transformer_2")  # which experts get adapters (Wan2.2)

    @property
    def size(self) -> int:
        """Height = width for stage code written for square clips; an error for non-square clips."""
        if self.height != self.width:
            raise VidtuneError(f"this Wan policy makes {self.height}×{self.width} clips; code that reads "
                               "policy.config.size must use config.height and config.width")
        return self.height

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WanConfig":
        """Build from a recipe mapping; an unknown key is an error that suggests the closest valid one."""
        import difflib

        known = {f.name for f in fields(cls)}
        for k in d:
            if k not in known:
                close = difflib.get_close_matches(k, sorted(known), n=1)
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                raise VidtuneError(f"unknown Wan policy option '{k}'{hint}; valid: {sorted(known)}")
        d = dict(d)
        if "lora_experts" in d:
            d["lora_experts"] = tuple(d["lora_experts"])
        return cls(**d)


class WanVideoPolicy(nn.Module):
    """``VideoPolicy`` over a diffusers Wan pipeline's components (T2V, I2V, Wan2.2 two experts)."""

    def __init__(self, pipe, config: WanConfig = WanConfig(), source: str | None = None):
        super().__init__()
        self.pipe, self.config, self.source = pipe, config, source
        self.transformer = pipe.transformer
        self.transformer_2 = getattr(pipe, "transformer_2", None)
        self.vae, self.text_encoder = pipe.vae, pipe.text_encoder
        self.image_encoder = getattr(pipe, "image_encoder", None)
        if self.transformer is None:
            raise VidtuneError("the Wan pipeline has no `transformer`; vidtune trains the high-noise expert")
        for m in (self.vae, self.text_encoder, self.image_encoder):
            if m is not None:
                m.requires_grad_(False).eval()
        self.boundary_ratio = pipe.config.get("boundary_ratio") if self.transformer_2 is not None else None
        self.expand_timesteps = bool(pipe.config.get("expand_timesteps", False))
        vc, tc = self.vae.config, self.transformer.config
        self.latent_channels = int(vc.z_dim)
        self.temporal_stride, self.spatial_stride = int(vc.scale_factor_temporal), int(vc.scale_factor_spatial)
        self.vae_time = "causal"  # ViPO temporal alignment: math.vipo.latent_frame_sets(F, temporal_stride, vae_time)
        if tc.in_channels == self.latent_channels:
            self.kind = "t2v"
        elif tc.in_channels == 2 * self.latent_channels + self.temporal_stride:
            self.kind = "i2v"
            if self.expand_timesteps:
                raise VidtuneError("unsupported Wan checkpoint layout (I2V channels with expand_timesteps)")
        else:
            raise VidtuneError(f"unexpected Wan transformer in_channels={tc.in_channels} for a {self.latent_channels}"
                               f"-channel VAE (T2V: {self.latent_channels}, I2V: "
                               f"{2 * self.latent_channels + self.temporal_stride})")
        if self.kind == "i2v" and tc.image_dim is not None and self.image_encoder is None:
            raise VidtuneError("this Wan I2V transformer needs CLIP image embeddings but the pipeline has no "
                               "image_encoder (load it with WanImageToVideoPipeline)")
        wan_io.check_video_size(config.frames, config.height, config.width, self.temporal_stride,
                                self.spatial_stride, tuple(tc.patch_size))
        dt = wan_io.DTYPES[config.dtype]
        for tr in self.transformers():
            wan_io.cast_transformer(tr, dt)
            if config.gradient_checkpointing:
                tr.enable_gradient_checkpointing()
        if config.dtype != "float32":
            self.text_encoder.to(dt)
        wan_io.cast_transformer(self.vae, torch.float32)
        if config.vae_tiling:
            self.vae.enable_tiling()
        self._text_cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        # LoRA folders folded into the base weights, oldest first (None once unsaved adapters were merged), and
        # the folder the current adapters came from (None for fresh ones): save_pretrained records the chain.
        self.merged_lora: tuple[str, ...] | None = ()
        self._lora_folder: str | None = None

    # ----------------------------------------------------------------------------------------- construction
    @classmethod
    def from_components(cls, config: WanConfig = WanConfig(), *, transformer, vae, text_encoder, tokenizer,
                        scheduler=None, transformer_2=None, boundary_ratio: float | None = None,
                        image_encoder=None, image_processor=None, expand_timesteps: bool = False) -> "WanVideoPolicy":
        """Wrap already-built modules (tests, custom loading): a ``WanImageToVideoPipeline`` when an image encoder
        or a 36-channel transformer is given, else a ``WanPipeline``."""
        from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanPipeline

        scheduler = scheduler or FlowMatchEulerDiscreteScheduler(shift=3.0)
        common = dict(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                      transformer=transformer, transformer_2=transformer_2, boundary_ratio=boundary_ratio,
                      expand_timesteps=expand_timesteps)
        if image_encoder is not None or transformer.config.in_channels != vae.config.z_dim:
            pipe = WanImageToVideoPipeline(image_processor=image_processor, image_encoder=image_encoder, **common)
        else:
            pipe = WanPipeline(**common)
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe, config)

    @classmethod
    def from_pretrained(cls, spec: str | Path, config: WanConfig = WanConfig(),
                        base: str | Path | None = None, merge: bool = False) -> "WanVideoPolicy":
        """Load a diffusers Wan folder or hub id (e.g. ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``), or a folder written by
        :meth:`save_pretrained`: a full pipeline, or LoRA weights on top of ``base`` (default: the recorded base,
        with the recorded earlier stages' LoRA folders merged into it). ``merge`` also folds this folder's
        adapters in: the checkpoint as plain, trainable weights, the way a stage starts from it."""
        meta_file = Path(str(spec)) / "vidtune_wan.json"
        if meta_file.is_file():
            import json

            meta = json.loads(meta_file.read_text())
            if meta.get("kind") == "lora":
                base = base or meta.get("base")
                if not base:
                    raise VidtuneError(f"{spec} holds LoRA weights only and records no base model; pass base=…")
                policy = cls.from_pretrained(base, config)
                for folder in meta.get("merged", []):
                    policy.load_lora(folder).merge_lora()
                policy.load_lora(spec)
                return policy.merge_lora() if merge else policy
        return cls(wan_io.load_pipeline(spec, wan_io.DTYPES[config.dtype]), config, source=str(spec))

    # ----------------------------------------------------------------------------------------- protocol
    def transformers(self) -> list[nn.Module]:
        return [t for t in (self.transformer, self.transformer_2) if t is not None]

    def fsdp_units(self) -> list[nn.Module]:
        """FSDP units (runtime/fsdp.py): every transformer block of both experts; the transformers are the roots."""
        return [block for tr in self.transformers() for block in tr.blocks]

    def fsdp_roots(self) -> list[nn.Module]:
        return self.transformers()

    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.transformer.proj_out.weight.dtype

    def train(self, mode: bool = True) -> "WanVideoPolicy":
        """Only the transformers follow train/eval; the frozen encoders and the VAE stay in eval mode (UMT5 has
        dropout 0.1 in train mode, which would make text embeddings random)."""
        for tr in self.transformers():
            tr.train(mode)
        self.training = mode
        return self

    def _text_embeds(self, prompts: list[str]) -> torch.Tensor:
        """UMT5 embeddings [B, L, D] through ``pipe.encode_prompt`` (same cleaning, padding and zeroed tail as the
        pipeline), with an LRU cache keyed by prompt."""
        texts = [self.config.negative_prompt if p == "" else p for p in prompts]
        cache = self._text_cache
        missing = [t for t in dict.fromkeys(texts) if t not in cache]
        found = {t: cache[t] for t in dict.fromkeys(texts) if t in cache}
        if missing:
            with torch.no_grad():
                emb, _ = self.pipe.encode_prompt(missing, do_classifier_free_guidance=False,
                                                 max_sequence_length=self.config.max_sequence_length,
                                                 device=self.device)
            found.update(zip(missing, emb))
        out = torch.stack([found[t] for t in texts]).to(self.device)
        if self.config.text_cache_size > 0:
            for t, e in found.items():
                cache[t] = e
                cache.move_to_end(t)
            while len(cache) > self.config.text_cache_size:
                cache.popitem(last=False)
        return out

    def encode_prompts(self, prompts: list[str], images: torch.Tensor | None = None,
                       image_mask: torch.Tensor | None = None) -> Cond:
        """Conditioning {``prompt_embeds`` [B, L, D]} ('' = ``config.negative_prompt``); for I2V also
        ``condition`` [B, 4+C, F, H, W] (first-frame mask + latents of the first frame followed by zeros) and, for
        Wan2.1-I2V, ``image_embeds`` [B, N, D_img]. ``images`` [B, 3, H_px, W_px] in [0, 1]; rows with
        ``image_mask`` 0 get a zero condition (text-only). A T2V model rejects rows with an image."""
        prompts = list(prompts)
        cond: Cond = {"prompt_embeds": self._text_embeds(prompts)}
        b = len(prompts)
        use = None
        if images is not None:
            use = torch.ones(b, dtype=torch.bool) if image_mask is None else image_mask.to(torch.bool).cpu()
            if self.kind == "t2v":
                if bool(use.any()):
                    raise VidtuneError("this is a text-to-video Wan checkpoint: it cannot condition on images "
                                       f"({int(use.sum())} of {b} rows have image_mask=1); use an I2V checkpoint")
                return cond
        if self.kind == "i2v":
            if images is None:
                raise VidtuneError("this is an image-to-video Wan checkpoint: encode_prompts needs `images` "
                                   "[B, 3, H, W] (the first frames); an I2V recipe must provide them")
            cond.update(self._image_condition(images, use))
        return cond

    @torch.no_grad()
    def _image_condition(self, images: torch.Tensor, use: torch.Tensor) -> Cond:
        c, b = self.config, images.shape[0]
        if images.ndim != 4 or tuple(images.shape[1:]) != (3, c.height, c.width):
            raise VidtuneError(f"conditioning images must be [B, 3, {c.height}, {c.width}] in [0, 1], got "
                               f"{tuple(images.shape)}")
        img = images.float().to(self.device)
        video = torch.cat([img[:, :, None] * 2 - 1, img.new_zeros(b, 3, c.frames - 1, c.height, c.width)], dim=2)
        lat = torch.cat([self._vae_encode(video[i: i + c.vae_batch_size], sample=False)
                         for i in range(0, b, c.vae_batch_size)])
        _, _, f, h, w = lat.shape
        mask = wan_io.first_frame_mask(b, c.frames, self.temporal_stride, h, w).to(lat)
        keep = use.to(lat).to(lat.device).view(b, 1, 1, 1, 1)
        out: Cond = {"condition": torch.cat([mask, lat], dim=1) * keep}
        if self.transformer.config.image_dim is not None:
            pix = self.pipe.image_processor(images=img.cpu(), return_tensors="pt", do_rescale=False)["pixel_values"]
            enc = self.image_encoder(pixel_values=pix.to(self.device, self.image_encoder.dtype),
                                     output_hidden_states=True)
            out["image_embeds"] = enc.hidden_states[-2].float() * keep.view(b, 1, 1)
        return out

    def _vae_encode(self, video: torch.Tensor, sample: bool) -> torch.Tensor:
        """Video [B, 3, F, H, W] in [−1, 1] → normalised latents (VAE mode, or a posterior sample)."""
        dist = self.vae.encode(video.to(self.device, self.vae.dtype)).latent_dist
        return wan_io.normalise((dist.sample() if sample else dist.mode()).float(), self.vae)

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        """Pixel video [B, F_px, 3, H_px, W_px] in [0, 1] → normalised latents [B, 16, (F_px−1)/4+1, H/8, W/8]."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise VidtuneError(f"expected a video batch [B, F, 3, H, W], got shape {tuple(video.shape)}")
        self.latent_shape(*video.shape[1:2], *video.shape[3:])
        x = video.float().permute(0, 2, 1, 3, 4) * 2 - 1
        bs = self.config.vae_batch_size
        with torch.no_grad():
            return torch.cat([self._vae_encode(x[i: i + bs], self.config.sample_posterior)
                              for i in range(0, x.shape[0], bs)])

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalised latents [B, 16, F, H, W] → pixel video [B, 4(F−1)+1, 3, 8H, 8W] in [0, 1] (fp32)."""
        if latents.ndim != 5 or latents.shape[1] != self.latent_channels:
            raise VidtuneError(f"expected latents [B, {self.latent_channels}, F, H, W], got {tuple(latents.shape)}")
        bs, out = self.config.vae_batch_size, []
        for i in range(0, latents.shape[0], bs):
            z = wan_io.denormalise(latents[i: i + bs].float().to(self.device), self.vae)
            out.append(self.vae.decode(z.to(self.vae.dtype), return_dict=False)[0].float())
        return ((torch.cat(out) + 1) / 2).clamp(0, 1).permute(0, 2, 1, 3, 4).contiguous()

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        """(16, (frames−1)/4+1, height/8, width/8); a size the VAE or the patch grid cannot take is an error."""
        wan_io.check_video_size(frames, height, width, self.temporal_stride, self.spatial_stride,
                                tuple(self.transformer.config.patch_size))
        return (self.latent_channels, (frames - 1) // self.temporal_stride + 1, height // self.spatial_stride,
                width // self.spatial_stride)

    def expert_rows(self, t: torch.Tensor) -> list[tuple[nn.Module, torch.Tensor]]:
        """(transformer, row indices) pairs: Wan2.2 routes 1000·t ≥ 1000·boundary_ratio to ``transformer``."""
        if self.boundary_ratio is None:
            return [(self.transformer, torch.arange(t.shape[0], device=t.device))]
        high = t * 1000 >= self.boundary_ratio * 1000
        return [(tr, idx) for tr, idx in ((self.transformer, high.nonzero().flatten()),
                                          (self.transformer_2, (~high).nonzero().flatten())) if idx.numel()]

    def velocity(self, latents: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        """v_θ(x_t, t, c) [B, 16, F, H, W] in fp32: the transformer's flow prediction at ``timestep = 1000·t``
        (t of shape [B] or a scalar), with the I2V condition concatenated along channels."""
        b = latents.shape[0]
        t = torch.as_tensor(t, device=latents.device, dtype=torch.float32)
        t = t.expand(b) if t.ndim == 0 else t
        x = latents.to(self.device)
        if self.kind == "i2v":
            x = torch.cat([x, cond["condition"].to(x)], dim=1)
        groups = self.expert_rows(t.to(self.device))
        out = None if len(groups) == 1 else torch.empty(latents.shape, dtype=torch.float32, device=self.device)
        for tr, rows in groups:
            xr = x[rows].to(self.dtype)
            ts = t.to(self.device)[rows] * 1000
            if self.expand_timesteps:  # Wan2.2 TI2V-5B: one timestep per token (all equal without an image)
                p = tr.config.patch_size
                n_tok = (xr.shape[2] // p[0]) * (xr.shape[3] // p[1]) * (xr.shape[4] // p[2])
                ts = ts[:, None].expand(-1, n_tok)
            img = cond.get("image_embeds")
            v = tr(hidden_states=xr, timestep=ts, encoder_hidden_states=cond["prompt_embeds"][rows].to(self.dtype),
                   encoder_hidden_states_image=None if img is None else img[rows].to(self.dtype),
                   return_dict=False)[0].float()
            if out is None:
                return v
            out[rows] = v
        return out

    def trainable_parameters(self) -> list[nn.Parameter]:
        """Parameters with ``requires_grad`` (the LoRA adapters after :meth:`add_lora`, else the transformers)."""
        return [p for tr in self.transformers() for p in tr.parameters() if p.requires_grad]

    # ----------------------------------------------------------------------------------------- LoRA
    def add_lora(self, rank: int, targets: tuple[str, ...] = DEFAULT_LORA_TARGETS,
                 alpha: float | None = None) -> "WanVideoPolicy":
        """peft LoRA (rank r, α = r by default, no dropout) on the linear layers whose names end in ``targets``
        of the experts in ``config.lora_experts``; everything else is frozen. Adapter weights are kept in fp32
        even when the base weights are bf16 (peft casts the layer input)."""
        from peft import LoraConfig

        if rank < 1:
            raise VidtuneError(f"LoRA rank must be ≥ 1, got {rank}")
        names = {n.rsplit(".", 1)[-1] for tr in self.transformers() for n, _ in tr.named_modules()}
        full = {n for tr in self.transformers() for n, _ in tr.named_modules()}
        bad = [t for t in targets if t not in names and not any(n.endswith("." + t) for n in full)]
        if bad:
            raise VidtuneError(f"LoRA targets {bad} match no module of the Wan transformer (e.g. to_q, to_k, to_v, "
                               "to_out.0, ffn.net.0.proj, ffn.net.2, add_k_proj)")
        for name, tr in (("transformer", self.transformer), ("transformer_2", self.transformer_2)):
            tr_ok = tr is not None and name in self.config.lora_experts
            if tr is not None:
                tr.requires_grad_(False)
            if tr_ok:
                tr.add_adapter(LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets),
                                          lora_dropout=0.0))
                for p in tr.parameters():
                    if p.requires_grad:
                        p.data = p.data.float()
        self._lora_folder = None
        return self

    def has_lora(self) -> bool:
        return any(getattr(tr, "peft_config", None) for tr in self.transformers())

    @contextmanager
    def adapters_disabled(self):
        """The base weights only (the reference policy when the trained policy is a LoRA of it)."""
        from vidtune.models.lora import adapters_disabled

        with adapters_disabled(self):
            yield self

    def save_lora(self, folder: str | Path) -> Path:
        """LoRA weights in the diffusers format (``WanPipeline.save_lora_weights``), readable by
        ``pipe.load_lora_weights(folder)`` (and ``weight_name=…transformer_2…, load_into_transformer_2=True``)."""
        if not self.has_lora():
            raise VidtuneError("this Wan policy has no LoRA adapters to save (call add_lora first)")
        return wan_io.save_lora_files(folder, self.transformer, self.transformer_2)

    def load_lora(self, folder: str | Path, trainable: bool = False) -> "WanVideoPolicy":
        """Load LoRA weights written by :meth:`save_lora` into this policy (as adapter ``default``)."""
        wan_io.load_lora_files(self.pipe, folder)
        for tr in self.transformers():
            for n, p in tr.named_parameters():
                p.requires_grad_(trainable and "lora_" in n)
        self._lora_folder = str(Path(folder).resolve())
        return self

    def merge_lora(self) -> "WanVideoPolicy":
        """Fold the adapters into the base weights in place (a plain model again: every transformer weight
        trainable) and record where they came from in ``merged_lora``."""
        from vidtune.models.lora import merge_lora

        if self.has_lora() and self.merged_lora is not None:
            self.merged_lora = None if self._lora_folder is None else (*self.merged_lora, self._lora_folder)
        for tr in self.transformers():
            if getattr(tr, "peft_config", None):
                merge_lora(tr)
                del tr.peft_config  # a plain module again (peft warns on a leftover empty config)
                tr._hf_peft_config_loaded = False
            tr.requires_grad_(True)
        self._lora_folder = None
        return self

    def save_pretrained(self, folder: str | Path) -> Path:
        """With adapters: the LoRA files plus ``vidtune_wan.json`` naming the base and the LoRA folders merged into
        it (``merged_lora``, e.g. the earlier stages' outputs); without: the whole diffusers pipeline
        (``pipe.save_pretrained``). Either loads back with :meth:`from_pretrained`."""
        import json

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        merged: list[str] = []
        if self.has_lora():
            if self.merged_lora is None:
                raise VidtuneError("the base weights hold merged adapters that were never saved, so LoRA files "
                                   "alone cannot describe this policy; merge_lora() and save the whole pipeline")
            self.save_lora(folder)
            kind, merged = "lora", list(self.merged_lora)
        else:
            self.pipe.save_pretrained(str(folder))
            kind = "pipeline"
        meta = {"type": "wan", "kind": kind, "base": self.source, "merged": merged, "config": asdict(self.config)}
        (folder / "vidtune_wan.json").write_text(json.dumps(meta, indent=1))
        return folder
