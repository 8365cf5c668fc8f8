"""LoRA adapters through peft on any policy module; reference = same module with adapters disabled."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn


def add_lora(module: nn.Module, rank: int, targets: tuple[str, ...], alpha: float | None = None) -> nn.Module:
    """Inject LoRA (rank r, α = r by default) into the linear layers whose names end in ``targets``; freeze every
    other parameter. Returns the same module."""
    cfg = LoraConfig(r=rank, lora_alpha=alpha or rank, target_modules=list(targets), lora_dropout=0.0)
    for p in module.parameters():
        p.requires_grad_(False)
    inject_adapter_in_model(cfg, module)
    return module


def lora_layers(module: nn.Module) -> Iterator[BaseTunerLayer]:
    return (m for m in module.modules() if isinstance(m, BaseTunerLayer))


@contextmanager
def adapters_disabled(module: nn.Module):
    """Run the base weights only (the reference policy when the trained policy is a LoRA of it)."""
    layers = list(lora_layers(module))
    for m in layers:
        m.enable_adapters(False)
    try:
        yield module
    finally:
        for m in layers:
            m.enable_adapters(True)


def merge_lora(module: nn.Module) -> nn.Module:
    """Fold the adapters into the base weights and remove them (for exporting a plain checkpoint)."""
    from peft.tuners.lora import LoraModel  # noqa: F401  (import registers the layer types)

    for name, m in list(module.named_modules()):
        if isinstance(m, BaseTunerLayer):
            m.merge()
            parent_name, _, child = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, child, m.get_base_layer())
    for p in module.parameters():
        p.requires_grad_(True)
    return module
