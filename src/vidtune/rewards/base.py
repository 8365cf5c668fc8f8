"""The ``Reward`` protocol, input validation shared by every reward, and the name → factory table.

A reward is a plain class: ``reward(videos, prompts, **context) -> RewardOutput`` with ``videos`` a float tensor
[B, F, 3, H, W] in [0, 1]. Bad input is an error naming what is wrong (shape, dtype, range, batch, empty prompt);
a sample with non-finite pixels is *flagged*: its score is NaN and ``details[b]["invalid"]`` says why, so the GRPO
stack excludes it (ALGORITHMS.md §0, invalid values).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch

from vidtune.errors import VidtuneError
from vidtune.types import RewardOutput


@runtime_checkable
class Reward(Protocol):
    name: str
    range: tuple[float, float]

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> RewardOutput: ...


def check_inputs(videos: torch.Tensor, prompts: list[str], reward: str) -> torch.Tensor:
    """Validate a reward's inputs; returns a bool [B] of samples with finite pixels."""
    if not isinstance(videos, torch.Tensor):
        raise VidtuneError(f"{reward}: videos must be a torch.Tensor, got {type(videos).__name__}")
    if videos.ndim != 5 or videos.shape[2] != 3:
        raise VidtuneError(f"{reward}: videos must be [B, F, 3, H, W], got shape {tuple(videos.shape)}")
    if not videos.is_floating_point():
        raise VidtuneError(f"{reward}: videos must be float in [0, 1], got dtype {videos.dtype}")
    if len(prompts) != videos.shape[0]:
        raise VidtuneError(f"{reward}: {videos.shape[0]} videos but {len(prompts)} prompts")
    for i, p in enumerate(prompts):
        if not isinstance(p, str) or not p.strip():
            raise VidtuneError(f"{reward}: prompt {i} is empty")
    finite = torch.isfinite(videos.flatten(1)).all(1)
    vals = videos[finite]
    if vals.numel() and (float(vals.min()) < -1e-3 or float(vals.max()) > 1 + 1e-3):
        raise VidtuneError(f"{reward}: pixel values must be in [0, 1], got [{float(vals.min()):.3g}, "
                           f"{float(vals.max()):.3g}] (decode latents / divide uint8 by 255 first)")
    return finite


REGISTRY: dict[str, Callable[..., Reward]] = {}


def register(name: str):
    """Class decorator adding a reward factory to :data:`REGISTRY` under ``name``."""

    def deco(factory):
        REGISTRY[name] = factory
        return factory

    return deco


BUILTIN_MODULES = ("verifier", "soft_verifier", "temporal", "perceptual", "safety", "scorer", "noisy", "vlm_judge",
                   "dino_features", "clip_scorer")  # the last three import transformers only to build a model


def load_builtins() -> None:
    """Import the built-in reward modules so that their ``@register`` decorators fill :data:`REGISTRY`."""
    import importlib

    for m in BUILTIN_MODULES:
        importlib.import_module(f"vidtune.rewards.{m}")


def build_reward(name: str, **kwargs: Any) -> Reward:
    """Instantiate a registered reward; an unknown name or argument is an error naming it."""
    import difflib
    import inspect

    load_builtins()
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise VidtuneError(f"unknown reward '{name}'{hint}; available: {', '.join(sorted(REGISTRY))}")
    factory = REGISTRY[name]
    params = inspect.signature(factory).parameters
    bad = [k for k in kwargs if k not in params]
    if bad:
        raise VidtuneError(f"reward '{name}' has no argument(s) {bad}; valid: {sorted(params)}")
    return factory(**kwargs)
