"""Fully sharded data parallelism (``run.parallel: fsdp``): the policy's parameters, gradients and optimiser state
are split over the ranks of a torchrun job with FSDP2 (``torch.distributed.fsdp.fully_shard``), the layout a model
that does not fit one device needs (DDP keeps a whole replica, its gradients and Adam's two moments per rank).

Each transformer block and the text encoder are one FSDP unit and the network is the root unit: a unit's parameters
are all-gathered just before its forward (and again for its backward) and freed after, and its gradients are
reduce-scattered in its backward, averaged over the ranks as DDP does. Parameters become ``DTensor`` shards, so the
optimiser must be built *after* :func:`shard_policy`, and checkpoints and exports go through the full-state
gathers below (every rank must call them; rank 0 receives the tensors). A checkpoint written under FSDP holds the
same full tensors as one written by one process, with the optimiser state keyed by parameter name
(:func:`optimizer_state`), so a run resumes under either strategy.

Collectives run inside every forward and backward of the policy, so all ranks must call the policy the same number
of times in the same order: fine for Stage I (one forward + backward per step) and Stage III (equal pair shards,
the same schedule on every rank); GRPO's random minibatches give ranks different numbers of calls, so there the
ranks with fewer pad with zero-weight calls (stages/grpo.update). Anything a single rank or an uneven share of
work does with the policy (building DPO pairs on rank 0, the BPGO reference prior) happens before sharding, and
the frozen reference copy is made before sharding and stays a plain module. A stage makes three calls:
:func:`prepare_training`, :func:`save_stage_checkpoint` and :func:`export_stage`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor

from vidtune.errors import VidtuneError
from vidtune.runlog import atomic_torch_save

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)  # whole tensors, on rank 0's CPU only


def fsdp_units(policy) -> list[nn.Module]:
    """The modules sharded as units of their own, inner first: each transformer block and the text encoder of the
    tiny DiT (a policy may name its own with ``fsdp_units()``); the network itself is the root unit."""
    if hasattr(policy, "fsdp_units"):
        return list(policy.fsdp_units())
    net = policy.net
    return [*net.blocks, net.text]


def fsdp_roots(policy) -> list[nn.Module]:
    """The networks sharded as root units (after their :func:`fsdp_units`): the tiny DiT, or what the policy names
    with ``fsdp_roots()`` (Wan: its one or two transformers; the frozen VAE and text encoder stay whole per rank)."""
    return list(policy.fsdp_roots()) if hasattr(policy, "fsdp_roots") else [policy.net]


def shard_policy(policy, world_size: int, device: torch.device, reduce: Literal["mean", "sum"] = "mean") -> None:
    """Shard the policy's networks (:func:`fsdp_roots`) over the ``world_size`` ranks of the current process group
    (FSDP2, one flat mesh dimension): every unit of :func:`fsdp_units`, then each root. Each backward reduces the
    ranks' gradients by ``reduce``: their mean (as DDP; per-rank means over equal shards) or their sum (per-rank
    shares of one loss, GRPO). The ranks must hold identical weights when this is called (loaded from the same files),
    since each keeps only its slice."""
    if is_sharded(policy):
        raise VidtuneError("the policy is sharded already")
    mesh = init_device_mesh(device.type, (world_size,))
    units = [*fsdp_units(policy), *fsdp_roots(policy)]
    for unit in units:
        fully_shard(unit, mesh=mesh)
        if reduce == "sum":  # plain SUM (gloo has no pre-multiplied sum)
            unit.set_gradient_divide_factor(1.0)
            unit.set_force_sum_reduction_for_comms(True)


def is_sharded(policy) -> bool:
    return any(isinstance(root, FSDPModule) for root in fsdp_roots(policy))


def full_state(policy, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The policy's whole tensors by name (its ``state_dict`` names) on rank 0's CPU, ``{}`` on the other ranks; a
    collective: every rank calls it. ``trainable_only`` keeps the parameters that train (a checkpoint's policy
    part, models/factory.trainable_state)."""
    state = get_model_state_dict(policy, options=FULL)
    if trainable_only:
        keep = {n for n, p in policy.named_parameters() if p.requires_grad}
        state = {k: v for k, v in state.items() if k in keep}
    return state


def optimizer_state(policy, opt: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimiser's state keyed by parameter name with whole tensors (rank 0; a collective), the form
    :func:`load_optimizer_state` restores into a sharded or a plain policy."""
    return get_optimizer_state_dict(policy, opt, options=FULL)


def load_optimizer_state(policy, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Restore :func:`optimizer_state` (every rank passes the same full state; each keeps its slices)."""
    set_optimizer_state_dict(policy, opt, optim_state_dict=state,
                             options=StateDictOptions(full_state_dict=True))


def checkpoint_state(policy, opt: torch.optim.Optimizer, **extra: Any) -> dict[str, Any]:
    """A stage checkpoint under FSDP (a collective; meaningful on rank 0): the trainable tensors as
    models/factory.trainable_state gives them, the name-keyed optimiser state and ``extra`` (step, counters)."""
    return {"model": full_state(policy, trainable_only=True), "opt": optimizer_state(policy, opt),
            "opt_by_name": True, **extra}


def by_position(policy, opt: torch.optim.Optimizer, state: dict[str, Any]) -> dict[str, Any]:
    """A name-keyed optimiser state (:func:`optimizer_state`) in ``opt.state_dict()``'s form, whose parameters are
    numbered in the order of ``opt.param_groups``: what a plain policy loads."""
    names = {p: n for n, p in policy.named_parameters()}
    index = {names[p]: i for i, p in enumerate(p for g in opt.param_groups for p in g["params"])}
    unknown = sorted(set(state["state"]) - set(index))
    if unknown:
        raise VidtuneError(f"optimiser state for parameters this policy does not train: {unknown[:3]}")
    groups = [{**g, "params": [index[n] for n in g["params"]]} for g in state["param_groups"]]
    return {"state": {index[n]: v for n, v in state["state"].items()}, "param_groups": groups}


def restore_optimizer(policy, opt: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """The optimiser part of a stage checkpoint, from either strategy: name-keyed (written under FSDP) through
    :func:`load_optimizer_state` into a sharded policy or :func:`by_position` into a plain one, else
    ``opt.load_state_dict`` (one process or DDP, policy not sharded)."""
    if state.get("opt_by_name"):
        if is_sharded(policy):
            load_optimizer_state(policy, opt, state["opt"])
        else:
            opt.load_state_dict(by_position(policy, opt, state["opt"]))
    elif is_sharded(policy):
        raise VidtuneError("this checkpoint's optimiser state was written without FSDP (indexed by position); "
                           "resume it with run.parallel=ddp or in one process")
    else:
        opt.load_state_dict(state["opt"])


def export_stage(policy, export: Callable[[Any, Any], Any], folder, *, fsdp: bool, lead: bool,
                 rebuild: Callable[[], Any]):
    """A stage's model folder, written by rank 0 with ``export(policy, folder)``; the other ranks return ``folder``.
    A sharded policy (``fsdp``) is gathered first (every rank joins) and rank 0 loads the whole tensors into a
    plain policy built by ``rebuild()`` (the stage's own construction: same structure, adapters, branches)."""
    state = full_state(policy) if fsdp else None
    if not lead:
        return folder
    if fsdp:
        plain = rebuild()
        plain.load_state_dict(state, strict=True)
        policy = plain
    return export(policy, folder)


def as_float(x: torch.Tensor) -> float:
    """A scalar tensor's value; a ``DTensor`` (a gradient norm over shards) is made whole first."""
    return float(x.full_tensor() if isinstance(x, DTensor) else x)


def uses_fsdp(recipe, world) -> bool:
    """Whether this rank's stage shards its policy: a multi-process job with ``run.parallel=fsdp``."""
    return world.size > 1 and recipe.run.parallel == "fsdp"


def save_stage_checkpoint(path, policy, opt: torch.optim.Optimizer, *, fsdp: bool, lead: bool, **extra: Any) -> None:
    """Rank 0 writes a stage checkpoint to ``path``: :func:`checkpoint_state` under FSDP (a collective every rank
    joins), else the trainable parameters (models/factory.trainable_state) and ``opt.state_dict()``, plus
    ``extra`` (step, counters)."""
    from vidtune.models.factory import trainable_state

    if fsdp:
        state = checkpoint_state(policy, opt, **extra)
    elif lead:
        state = {"model": trainable_state(policy), "opt": opt.state_dict(), **extra}
    else:
        return
    if lead:
        atomic_torch_save(state, path)


def prepare_training(policy, recipe, world, device: torch.device, lr: float, saved: dict | None,
                     reduce: Literal["mean", "sum"] = "mean") -> tuple[bool, list[nn.Parameter], torch.optim.Optimizer]:
    """(fsdp, trainable parameters, AdamW) for a stage's loop: the policy is sharded first when this rank's job
    uses FSDP (:func:`uses_fsdp`; gradients reduced by ``reduce``), since the optimiser must hold the shards, and
    the optimiser state of a checkpoint ``saved`` is restored from either strategy (:func:`restore_optimizer`)."""
    fsdp = uses_fsdp(recipe, world)
    if fsdp:
        shard_policy(policy, world.size, device, reduce=reduce)
    params = list(policy.trainable_parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    if saved is not None:
        restore_optimizer(policy, opt, saved)
    return fsdp, params, opt
