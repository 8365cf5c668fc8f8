"""The embedded generator: a pixel-space flow-matching video DiT for ShapeWorld (T2V and I2V).

Latents are the pixel video rescaled to [−1, 1] and laid out [B, 3, F, H, W], so ``encode_video``/``decode`` are
affine maps. The network predicts the clean clip x̂_0 and the policy returns the velocity v = (x_t − x̂_0)/t
("x-prediction, v-loss", Li & He 2025, arXiv 2511.13720): with 8×8 pixel patches wider than the token width, a
network asked for v (which contains the noise) cannot pass per-pixel noise through its bottleneck and samples stay
noisy, while the clean clip lies on a low-dimensional manifold it can represent. Image-to-video conditioning concatenates the clean first frame (at latent frame 0, zeros elsewhere)
and a mask channel to the input, the way Wan's I2V concatenates its condition latents and mask.
A model is saved as a folder ``{config.json, model.safetensors}``; ``builtin:base`` is the shipped base model,
``builtin:base_p244`` the finer-grid base (patch 2×4×4) that the pan-aware pretraining step continues.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from vidtune.errors import VidtuneError
from vidtune.math.flow_matching import velocity_from_x0
from vidtune.models.dit import VideoDiT
from vidtune.models.motion_branch import MotionBranch
from vidtune.models.refiner import PixelRefiner
from vidtune.models.policy import Cond
from vidtune.models.text import WordTokenizer
from vidtune.world.grammar import vocabulary

# shipped model folders under src/vidtune/assets: the 8×8-patch base (recipes/pretrain_base*.yaml, the default
# init), the 2×4×4-patch base (recipes/pretrain_base_p244.yaml) and its pan/order-aware continuation
# (recipes/pretrain_base_p244_pan.yaml, the init of recipes/sft_camera_p244.yaml)
BUILTIN = {"base": "base", "base_p244": "base_p244", "base_p244_pan": "base_p244_pan"}


@dataclass(frozen=True)
class TinyConfig:
    frames: int = 8
    size: int = 32
    patch: tuple[int, int, int] = (1, 8, 8)
    hidden: int = 128
    depth: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    text_len: int = 16
    text_layers: int = 2
    t_min: float = 0.05
    motion_branch: bool = False
    decoder_blocks: int = 1
    refiner: int = 0  # channels of the pixel-space refiner (models/refiner.py); 0 = none
    text_pos_gain: float = 0.0  # gain of the text encoder's boosted position table (dit.TextEncoder); 0 = none
    vocab: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        """Pixel height of generated clips (square: ``size``), the name stage code shares with ``WanConfig``."""
        return self.size

    @property
    def width(self) -> int:
        """Pixel width of generated clips (square: ``size``)."""
        return self.size

    @classmethod
    def from_dict(cls, d: dict) -> "TinyConfig":
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known - {"type"}
        if unknown:
            raise VidtuneError(f"unknown keys in tiny model config: {sorted(unknown)}")
        d = {k: v for k, v in d.items() if k in known}
        if "patch" in d:
            d["patch"] = tuple(d["patch"])
        if "vocab" in d:
            d["vocab"] = tuple(d["vocab"])
        return cls(**d)


class TinyVideoPolicy(nn.Module):
    """``VideoPolicy`` implementation for the embedded DiT."""

    latent_channels = 3

    def __init__(self, config: TinyConfig):
        super().__init__()
        if not config.vocab:
            config = TinyConfig(**{**asdict(config), "vocab": tuple(vocabulary())})
        self.config = config
        self.tokenizer = WordTokenizer(list(config.vocab), config.text_len)
        self.net = VideoDiT(
            in_channels=7, out_channels=3, frames=config.frames, size=config.size, patch=config.patch,
            hidden=config.hidden, depth=config.depth, heads=config.heads, mlp_ratio=config.mlp_ratio,
            vocab_size=self.tokenizer.size, text_len=config.text_len, text_layers=config.text_layers,
        )
        if config.motion_branch:
            self.net.attach_branch(MotionBranch(config.hidden), config.decoder_blocks)
        if config.refiner:
            self.net.attach_refiner(PixelRefiner(7, 3, config.hidden, config.refiner))
        if config.text_pos_gain:
            self.net.text.attach_position_boost(config.text_pos_gain)

    # ----------------------------------------------------------------------------------------- protocol
    def encode_prompts(self, prompts: list[str], images: torch.Tensor | None = None,
                       image_mask: torch.Tensor | None = None) -> Cond:
        """Token ids and mask; for I2V also the first frames ``images`` [B, 3, H, W] in [0, 1] and an optional
        per-row ``image_mask`` [B] (rows with mask 0 are text-only)."""
        cond = {k: v.to(self.device) for k, v in self.tokenizer(list(prompts)).items()}
        if images is not None:
            c = self.config
            if images.shape != (len(prompts), 3, c.size, c.size):
                raise VidtuneError(f"conditioning images must be [{len(prompts)}, 3, {c.size}, {c.size}], "
                                   f"got {tuple(images.shape)}")
            mask = torch.ones(len(prompts)) if image_mask is None else image_mask.float()
            cond["image"] = images.to(self.device).float()
            cond["image_mask"] = mask.to(self.device)
        return cond

    def encode_video(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 5 or video.shape[2] != 3:
            raise VidtuneError(f"expected a video batch [B, F, 3, H, W], got shape {tuple(video.shape)}")
        return (video * 2 - 1).permute(0, 2, 1, 3, 4).contiguous()

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        return ((latents.float().permute(0, 2, 1, 3, 4) + 1) / 2).clamp(0, 1)

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        c = self.config
        if (frames, height, width) != (c.frames, c.size, c.size):
            raise VidtuneError(
                f"this model generates {c.frames}x{c.size}x{c.size} clips, not {frames}x{height}x{width}"
            )
        return (3, frames, height, width)

    def image_condition(self, cond: Cond, latents: torch.Tensor) -> torch.Tensor:
        """[B, 4, F, H, W] (the size of ``latents``): the first frame in [−1, 1] at latent frame 0 plus a mask
        channel (zeros for T2V)."""
        batch, _, frames, height, width = latents.shape
        out = torch.zeros(batch, 4, frames, height, width, device=self.device)
        if "image" in cond:
            m = cond["image_mask"].view(batch, 1, 1, 1)
            image = cond["image"]
            if image.shape[-2:] != (height, width):  # a reduced-resolution clip (dpo.grad_downsample)
                image = torch.nn.functional.interpolate(image, size=(height, width), mode="area")
            out[:, :3, 0] = (image * 2 - 1) * m
            out[:, 3, 0] = m[:, 0]
        return out

    def velocity(self, latents: torch.Tensor, t: torch.Tensor, cond: Cond) -> torch.Tensor:
        return self.velocity_and_flow(latents, t, cond)[0]

    def velocity_and_flow(self, latents: torch.Tensor, t: torch.Tensor, cond: Cond):
        """(v [B, 3, F, H, W], flow [B, F−1, 2, H', W'] from the motion branch, or None without one)."""
        b, dt = latents.shape[0], self.dtype
        t = torch.as_tensor(t, device=latents.device).to(dt)
        t = t.expand(b) if t.ndim == 0 else t
        x = torch.cat([latents.to(dt), self.image_condition(cond, latents).to(dt)], dim=1)
        x0_hat, flow = self.net(x, t, cond["tokens"], cond["mask"], return_flow=True)
        return velocity_from_x0(latents.to(dt), x0_hat, t, self.config.t_min), flow

    def attach_motion_branch(self, decoder_blocks: int = 1) -> None:
        """Add the physics-aware branch (zero-initialised fusion: outputs unchanged) and record it in the config."""
        self.net.attach_branch(MotionBranch(self.config.hidden).to(self.device, self.dtype), decoder_blocks)
        self.config = TinyConfig(**{**asdict(self.config), "motion_branch": True, "decoder_blocks": decoder_blocks})

    def attach_refiner(self, channels: int) -> None:
        """Grow a pixel-space refiner (zero-initialised output: the model's output is unchanged) and record it in the
        config; a model that has one already is an error."""
        if self.config.refiner:
            raise VidtuneError(f"this model already has a refiner ({self.config.refiner} channels)")
        self.net.attach_refiner(PixelRefiner(7, 3, self.config.hidden, channels).to(self.device, self.dtype))
        self.config = TinyConfig(**{**asdict(self.config), "refiner": channels})

    def attach_text_positions(self, gain: float) -> None:
        """Grow the text encoder's boosted position table (zero-initialised: outputs unchanged) and record it in the
        config; a model that has one already is an error."""
        if self.config.text_pos_gain:
            raise VidtuneError(f"this model already has boosted text positions (gain {self.config.text_pos_gain})")
        self.net.text.attach_position_boost(gain)
        self.config = TinyConfig(**{**asdict(self.config), "text_pos_gain": gain})

    def freeze_backbone(self) -> list[torch.nn.Parameter]:
        """Freeze everything but the decoder-level modules (§7.3); returns the trainable parameters."""
        self.requires_grad_(False)
        params = []
        for m in self.net.decoder_modules():
            m.requires_grad_(True)
            params += list(m.parameters())
        return params

    def trainable_parameters(self):
        return [p for p in self.parameters() if p.requires_grad]

    @property
    def dtype(self) -> torch.dtype:
        return self.net.final.weight.dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    # ----------------------------------------------------------------------------------------- save/load
    def save_pretrained(self, folder: str | Path) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = {"type": "tiny_dit", **asdict(self.config)}
        tmp = folder / "config.json.tmp"
        tmp.write_text(json.dumps(cfg, indent=1))
        tmp.replace(folder / "config.json")
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(folder / "model.safetensors.tmp"))
        (folder / "model.safetensors.tmp").replace(folder / "model.safetensors")
        return folder


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise VidtuneError(f"unknown builtin model 'builtin:{name}' (available: {', '.join(BUILTIN)})")
    return Path(str(resources.files("vidtune") / "assets" / BUILTIN[name]))


def resolve_model_path(spec: str | Path) -> Path:
    spec = str(spec)
    return builtin_path(spec.split(":", 1)[1]) if spec.startswith("builtin:") else Path(spec)


def load_tiny(spec: str | Path) -> TinyVideoPolicy:
    """Load a tiny model folder (or ``builtin:<name>``) with a clear error for a missing or broken folder."""
    folder = resolve_model_path(spec)
    cfg_file, weights = folder / "config.json", folder / "model.safetensors"
    if not folder.is_dir():
        raise VidtuneError(f"checkpoint folder not found: {folder}")
    for f in (cfg_file, weights):
        if not f.is_file():
            raise VidtuneError(f"checkpoint folder {folder} has no {f.name}")
    try:
        cfg = json.loads(cfg_file.read_text())
    except json.JSONDecodeError as e:
        raise VidtuneError(f"{cfg_file} is not valid JSON: {e}") from None
    if cfg.get("type") != "tiny_dit":
        raise VidtuneError(f"{cfg_file}: expected type 'tiny_dit', got {cfg.get('type')!r}")
    model = TinyVideoPolicy(TinyConfig.from_dict(cfg))
    try:
        missing, unexpected = model.load_state_dict(load_file(str(weights)), strict=False)
    except RuntimeError as e:
        raise VidtuneError(f"weights in {weights} do not match {cfg_file}: {str(e).splitlines()[0]}") from None
    if missing or unexpected:
        raise VidtuneError(f"weights in {weights} do not match the config (missing {missing[:3]}, "
                           f"unexpected {unexpected[:3]})")
    return model.eval()
