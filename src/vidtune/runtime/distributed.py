"""Data-parallel training through torch.distributed (DDP or FSDP; gloo on CPU, NCCL on GPU): launch, shards, collectives.

DDP averages gradients over ranks, so with equal shards of a global batch and a per-rank *mean* loss the gradients
equal single-process gradients on the whole batch (tests/integration/test_runtime.py checks it with 2 gloo ranks).
Stage I SFT trains under DDP. Stages II and III call ``backward`` several times per optimiser step, a number that
may differ between ranks (GRPO's random minibatches, DPO's decoupled schedules), so they accumulate their local
gradient and reduce it once per step with :func:`all_reduce_gradients` instead. :func:`run_as_rank` runs a stage's
loop as one rank of a torchrun job; :func:`gather_rows`, :func:`gather_objects` and :func:`reduce_over_ranks` give
every rank the statistics that one process would compute over the whole batch.

``run.parallel=fsdp`` shards the policy instead of replicating it (runtime/fsdp.py); the helpers here serve both.
On GPUs the same loops run with NCCL, one device per rank (``torchrun`` or ``accelerate launch`` set
RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT).

Under ``runtime: ray`` a torchrun job keeps one reward pool, on rank 0 (stages/grpo_rewards.py). See
docs/scaling.md.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from typing import Any, Literal, NamedTuple, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from vidtune.errors import VidtuneError

T = TypeVar("T")
Reduction = Literal["sum", "mean", "min", "max"]


def free_port() -> int:
    """A free TCP port on localhost for the rendezvous of a single-machine process group."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_process_group(rank: int, world_size: int, *, addr: str | None = None, port: int | None = None,
                       backend: str | None = None) -> None:
    """Join the default process group: TCP rendezvous at ``addr:port`` (default: MASTER_ADDR/MASTER_PORT from the
    environment, as set by torchrun/accelerate), backend gloo on CPU and NCCL when CUDA is available."""
    if not 0 <= rank < world_size:
        raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
    addr = addr or os.environ.get("MASTER_ADDR", "127.0.0.1")
    port = port or int(os.environ.get("MASTER_PORT", "0")) or None
    if port is None:
        raise ValueError("no rendezvous port: pass port= or set MASTER_PORT")
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    dist.init_process_group(backend, init_method=f"tcp://{addr}:{port}", rank=rank, world_size=world_size)


class ForwardWith(nn.Module):
    """``forward(*args) = fn(module, *args)``: DDP synchronises the gradients of what runs inside its forward, so a
    step that is not one ``forward`` call (the policy's ``velocity`` plus a loss) is wrapped here before DDP; the
    parameters are ``module``'s."""

    def __init__(self, module: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.module, self.fn = module, fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.module, *args, **kwargs)


def wrap_ddp(module: nn.Module, *, device: torch.device | str | None = None,
             find_unused_parameters: bool = False, **kwargs: Any) -> DistributedDataParallel:
    """Wrap ``module`` in DDP on the current process group: on CPU (gloo) no device ids; on CUDA the module is moved
    to ``device`` (default cuda:<LOCAL_RANK>) and that device is its only one. Parameters are broadcast from rank 0
    at construction, so every rank starts from the same weights."""
    if not dist.is_initialized():
        raise RuntimeError("wrap_ddp: no process group; call init_process_group(rank, world_size, port=...) first")
    dev = torch.device(device) if device is not None else None
    if dev is None and torch.cuda.is_available() and dist.get_backend() == "nccl":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if dev is not None and dev.type == "cuda":
        return DistributedDataParallel(module.to(dev), device_ids=[dev.index], output_device=dev.index,
                                       find_unused_parameters=find_unused_parameters, **kwargs)
    return DistributedDataParallel(module, find_unused_parameters=find_unused_parameters, **kwargs)


class World(NamedTuple):
    """This process's place in a data-parallel job."""

    rank: int
    size: int
    local_rank: int  # rank on this machine: the CUDA device index


def launched_world() -> World:
    """The job torchrun (or accelerate) launched this process into, from RANK / WORLD_SIZE / LOCAL_RANK in the
    environment; a plain process is rank 0 of 1."""
    env = os.environ
    return World(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")), int(env.get("LOCAL_RANK", "0")))


def rank_device(device: torch.device, world: World) -> torch.device:
    """The device of this rank: a CUDA device without an index becomes cuda:<LOCAL_RANK> in a multi-process job
    (one GPU per rank); anything else is kept."""
    if device.type == "cuda" and device.index is None and world.size > 1:
        return torch.device("cuda", world.local_rank)
    return device


def join_launched_group(world: World, device: torch.device) -> bool:
    """Join the process group of a launched multi-process job (rendezvous at MASTER_ADDR/MASTER_PORT; NCCL when the
    model is on CUDA, gloo on CPU). Returns True when this call created the group (the caller leaves it with
    :func:`cleanup`); a single process, or a group that already exists, returns False."""
    if world.size == 1 or dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    init_process_group(world.rank, world.size, backend="nccl" if device.type == "cuda" else "gloo")
    return True


def check_world(world: World, batch_key: str, batch: int) -> None:
    """A multi-process stage needs a batch (recipe key ``batch_key``, value ``batch``) that splits into equal
    shards, so that averages over ranks are averages over the batch. Any policy runs data-parallel: under DDP each
    rank holds a whole copy, under FSDP the tiny DiT or the Wan transformers are sharded (runtime/fsdp.py)."""
    if world.size > 1 and batch % world.size:
        raise VidtuneError(f"{batch_key}={batch} does not split over WORLD_SIZE={world.size} ranks; use a multiple "
                           "of the number of processes")


def run_as_rank(loop: Callable[[World, torch.device], T], world: World, device: torch.device) -> T:
    """``loop(world, device)`` as this process's rank of ``world``: joins the launched process group (one device per
    rank, :func:`rank_device`) and leaves it afterwards; the barrier of :func:`cleanup` holds the other ranks until
    rank 0 has written the stage's outputs. A plain process runs ``loop`` as rank 0 of 1."""
    device = rank_device(device, world)
    joined = join_launched_group(world, device)
    out = loop(world, device)
    if joined:
        cleanup()
    return out


def run_stage(train: Callable[..., T], check: Callable[[Any, World], None], recipe: Any, run_dir: Any, init: Any,
              progress: bool) -> T:
    """A stage's ``run``: ``check(recipe, world)`` for the launched world (a plain process is rank 0 of 1), then
    ``train(recipe, run_dir, init, progress, world, device)`` as this process's rank (:func:`run_as_rank`) on
    ``run.device``."""
    from vidtune.models.factory import resolve_device

    world = launched_world()
    check(recipe, world)
    return run_as_rank(lambda w, dev: train(recipe, run_dir, init, progress, w, dev), world,
                       resolve_device(recipe.run.device))


def _comm_device() -> torch.device:
    """Where collectives take their tensors: the current CUDA device under NCCL, else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def reduce_over_ranks(value: torch.Tensor, op: Reduction = "mean") -> torch.Tensor:
    """The sum, mean, min or max of a (detached) tensor over all ranks, e.g. a logged loss or a statistic each rank
    computed on its shard; the tensor itself without a process group. Every rank gets the same result."""
    if not dist.is_initialized():
        return value
    out = value.detach().to(_comm_device(), copy=True)
    dist.all_reduce(out, op={"sum": dist.ReduceOp.SUM, "mean": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN,
                             "max": dist.ReduceOp.MAX}[op])
    out = out.to(value.device)
    return out / dist.get_world_size() if op == "mean" else out


def gather_rows(value: torch.Tensor) -> torch.Tensor:
    """The ranks' equal-size shards of a batch concatenated along dim 0 in rank order, i.e. the whole batch when each
    rank holds its :func:`shard`; the tensor itself without a process group."""
    if not dist.is_initialized():
        return value
    part = value.detach().to(_comm_device()).contiguous()
    parts = [torch.empty_like(part) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, part)
    return torch.cat(parts).to(value.device)


def gather_objects(obj: T) -> list[T]:
    """Every rank's (picklable) ``obj`` in rank order, e.g. dicts of counters whose keys may differ between ranks;
    ``[obj]`` without a process group."""
    if not dist.is_initialized():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: T, src: int = 0) -> T:
    """Rank ``src``'s (picklable) ``obj`` on every rank (what the others pass is ignored); ``obj`` itself without a
    process group."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_gradients(params: Iterable[nn.Parameter], op: Literal["sum", "mean"]) -> None:
    """Replace each parameter's ``.grad`` by its sum (or mean) over all ranks, once per optimiser step.

    The local gradient may have been accumulated over any number of backward passes, and that number may differ
    between ranks: the reduction is linear, so reducing the accumulated gradient equals reducing every backward's
    (which DDP does, but only when every rank runs the same forward/backward sequence). ``sum`` suits losses that
    the ranks' shares add up to (each rank normalised by the whole batch), ``mean`` per-rank means over equal
    shards. A parameter without a gradient on some rank counts as zero there; one without a gradient on every rank
    keeps ``None`` (as in one process, the optimiser then skips it). All gradients travel in one flat buffer per
    dtype. No-op without a process group."""
    if not dist.is_initialized():
        return
    params = [p for p in params if p.requires_grad]
    has = reduce_over_ranks(torch.tensor([p.grad is not None for p in params], dtype=torch.int32), "max")
    used = [p for p, h in zip(params, has.tolist()) if h]
    for dtype in sorted({p.dtype for p in used}, key=str):
        group = [p for p in used if p.dtype == dtype]
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in group])
        flat = reduce_over_ranks(flat, op)
        for p, g in zip(group, flat.split([p.numel() for p in group])):
            p.grad = g.view_as(p).to(p.device)


def shard(n: int, rank: int, world_size: int) -> slice:
    """The rows of rank ``rank`` in a global batch of ``n``: contiguous, equal sizes (n divisible by world size, so
    that the average of per-rank means is the global mean)."""
    if n % world_size:
        raise ValueError(f"global batch {n} is not divisible by world size {world_size}")
    k = n // world_size
    return slice(rank * k, (rank + 1) * k)


def spawn(fn: Callable[..., None], world_size: int, *args: Any) -> None:
    """Run ``fn(rank, world_size, port, *args)`` in ``world_size`` fresh processes (torch.multiprocessing spawn)
    with one free rendezvous port; raises if any rank fails."""
    import torch.multiprocessing as mp

    mp.spawn(fn, args=(world_size, free_port(), *args), nprocs=world_size, join=True)


def cleanup() -> None:
    """Leave the process group (safe to call when none was joined). All ranks meet at a barrier first: a rank that
    tears down while a peer still talks to it over gloo makes the peer abort ("terminate called ...")."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
