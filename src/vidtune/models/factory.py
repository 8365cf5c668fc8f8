"""One entry point for stage code: build the tiny or the Wan policy from a recipe or a path, the device it runs on,
the few helpers whose behaviour differs between the two (LoRA injection, a no-copy LoRA reference, ViPO's latent
time layout, which prompts it can encode), and the trainable-parameters-only training state of a stage
checkpoint."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from vidtune.errors import VidtuneError


def _spec_kind(spec: str | Path) -> str:
    """'tiny' for ``builtin:*`` or a folder whose config.json says tiny_dit; 'wan' for a diffusers / vidtune-Wan
    folder or anything that looks like a hub id (``org/name`` that is not a local path)."""
    s = str(spec)
    if s.startswith("builtin:"):
        return "tiny"
    p = Path(s).expanduser()
    if p.is_dir():
        if (p / "model_index.json").is_file() or (p / "vidtune_wan.json").is_file():
            return "wan"
        cfg = p / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text()).get("type") == "tiny_dit":
                    return "tiny"
            except json.JSONDecodeError:
                pass
        raise VidtuneError(f"{p} is neither a vidtune tiny model (config.json with type tiny_dit) nor a Wan "
                           "checkpoint (model_index.json of a diffusers WanPipeline)")
    if p.exists():
        raise VidtuneError(f"model path {p} is a file, not a checkpoint folder")
    if s.count("/") == 1 and not s.startswith((".", "/", "~")):
        return "wan"
    raise VidtuneError(f"checkpoint folder not found: {s} (and it is not a hub id of the form org/name)")


def load_policy(recipe_or_spec: Any, options: dict | None = None):
    """The policy a recipe (``model`` section) or a spec names.

    ``recipe_or_spec``: a ``Recipe``, its ``ModelConfig``, or a string — ``builtin:base`` / a tiny folder (tiny),
    a diffusers Wan folder, a vidtune Wan LoRA folder or a hub id (Wan). ``options`` (Wan only) overrides
    ``model.options`` (``WanConfig`` fields). A tiny recipe with ``model.init = null`` builds a random model.
    A Wan LoRA folder (a stage's output) comes back with its adapters merged: plain trainable weights, like a
    tiny checkpoint, on which the next stage attaches fresh adapters."""
    from vidtune.config import ModelConfig, Recipe

    model_cfg = recipe_or_spec.model if isinstance(recipe_or_spec, Recipe) else recipe_or_spec
    if isinstance(model_cfg, ModelConfig):
        if model_cfg.type == "tiny":
            if model_cfg.init is None:
                if not isinstance(recipe_or_spec, Recipe):
                    raise VidtuneError("model.init is null: building a random tiny model needs the whole recipe")
                from vidtune.stages.pretrain import build_model

                return build_model(recipe_or_spec)
            return _load_tiny(model_cfg.init)
        return _load_wan(model_cfg.path or model_cfg.hub_id, {**model_cfg.options, **(options or {})})
    if isinstance(recipe_or_spec, (str, Path)):
        if _spec_kind(recipe_or_spec) == "tiny":
            return _load_tiny(recipe_or_spec)
        return _load_wan(recipe_or_spec, options or {})
    raise VidtuneError(f"load_policy expects a Recipe, a ModelConfig or a path/hub id, got "
                       f"{type(recipe_or_spec).__name__}")


def inference_policy(spec: str, recipe):
    """A checkpoint to sample from (``vidtune run``'s evaluations, ``eval``, ``sample``): a tiny folder, a Wan
    folder or hub id, or a stage's Wan LoRA folder, with the recipe's ``model.options``, in eval mode on
    ``run.device``."""
    return load_policy(spec, recipe.model.options).to(resolve_device(recipe.run.device)).eval()


def resolve_device(name: str) -> torch.device:
    """The torch device ``run.device`` names; CUDA (or a CUDA index) this machine does not have is an error naming
    the key, raised before any weight is loaded."""
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "without CUDA"
            raise VidtuneError(f"run.device={name}: CUDA is not available on this machine (torch {torch.__version__} "
                               f"built {build}, torch.cuda.is_available() is False); use run.device=cpu")
        n = torch.cuda.device_count()
        if device.index is not None and device.index >= n:
            raise VidtuneError(f"run.device={name}: this machine has {n} CUDA device(s), cuda:0 … cuda:{n - 1}")
    return device


def prompt_checker(policy) -> Callable[[str], object]:
    """A cheap test that ``policy`` can encode a prompt, to fail before any sampling: the tiny model's tokenizer
    (ShapeWorld words only, at most ``text_len`` tokens); nothing for Wan, whose UMT5 takes any text."""
    from vidtune.models.tiny import TinyVideoPolicy

    if isinstance(policy, TinyVideoPolicy):
        return lambda prompt: policy.tokenizer([prompt])
    return lambda prompt: None


def _load_tiny(spec):
    from vidtune.models.tiny import load_tiny

    return load_tiny(spec)


def _load_wan(spec, options: dict):
    from vidtune.models.wan import WanConfig, WanVideoPolicy

    return WanVideoPolicy.from_pretrained(spec, WanConfig.from_dict(options), merge=True)


def attach_lora(policy, rank: int, targets: tuple[str, ...], alpha: float | None = None, seed: int | None = None):
    """LoRA through peft on whichever network the policy trains: ``policy.add_lora`` (Wan: both experts, diffusers'
    adapter bookkeeping so ``save_lora`` works) or ``models.lora.add_lora(policy.net, …)`` (tiny). peft draws the
    A matrices from torch's global RNG; with ``seed`` they are a function of it and the global state is restored."""
    from vidtune.models.lora import add_lora

    with torch.random.fork_rng(enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        if hasattr(policy, "add_lora"):
            return policy.add_lora(rank, tuple(targets), alpha)
        add_lora(policy.net, rank, tuple(targets), alpha)
        return policy


class AdaptersOff:
    """π_ref as a view of a LoRA policy: every protocol call runs with the adapters disabled and without gradient,
    so a 14B model needs no frozen copy (ALGORITHMS.md Notation, "same network with its LoRA adapters disabled")."""

    def __init__(self, policy):
        self.policy = policy

    def __getattr__(self, name: str):
        return getattr(self.policy, name)

    @contextmanager
    def _off(self) -> Iterator[None]:
        from vidtune.models.lora import adapters_disabled

        with torch.no_grad(), adapters_disabled(self.policy):
            yield

    def velocity(self, latents, t, cond):
        with self._off():
            return self.policy.velocity(latents, t, cond)

    def encode_prompts(self, prompts, images=None, image_mask=None):
        return self.policy.encode_prompts(prompts, images=images, image_mask=image_mask)


def reference_policy(policy):
    """The reference π_ref: the adapters-disabled view when the policy carries LoRA layers, else a frozen copy."""
    from vidtune.models.lora import lora_layers

    if any(True for _ in lora_layers(policy)):
        return AdaptersOff(policy)
    import copy

    return copy.deepcopy(policy).eval().requires_grad_(False)


def vipo_time_layout(policy) -> tuple[str, int]:
    """(vae, stride) for ``math.vipo.vipo_map_batch``: ('causal', 4) for Wan, ('pixel', 1) for the tiny model."""
    return getattr(policy, "vae_time", "pixel"), int(getattr(policy, "temporal_stride", 1))


def trainable_state(policy) -> dict[str, torch.Tensor]:
    """The parameters that train, by name (a checkpoint's policy part): the frozen base, VAE and encoders of a Wan
    policy are rebuilt from ``init`` on resume instead of being written every checkpoint."""
    return {n: p.detach() for n, p in policy.named_parameters() if p.requires_grad}


def load_trainable_state(policy, state: dict[str, torch.Tensor]) -> None:
    """Restore :func:`trainable_state` (or a full ``state_dict``) into a policy rebuilt the way the stage built it;
    a trainable parameter missing from ``state`` or a name the policy lacks is an error."""
    missing, unexpected = policy.load_state_dict(state, strict=False)
    lost = sorted({n for n, p in policy.named_parameters() if p.requires_grad} & set(missing))
    if lost or unexpected:
        raise VidtuneError(f"the checkpoint does not match the policy (trainable parameters missing: {lost[:3]}, "
                           f"unknown names: {unexpected[:3]}); was the recipe changed since it was written?")
