"""Per-rank training state and step time of DDP vs FSDP (``run.parallel``) on the shipped base, 2 gloo ranks.

Each strategy runs in fresh processes (``torch.multiprocessing.spawn``, one thread per rank): the shipped DiT with
AdamW, the flow-matching loss on random clips, a global batch split over the ranks. Per rank it records the bytes of
the parameters, gradients and Adam state that rank holds (local shards under FSDP), and the median step time.
Writes benchmarks/results/fsdp_memory.json.

    .venv/bin/python benchmarks/fsdp_memory.py [--batch 8] [--steps 6]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

OUT = Path(__file__).parent / "results" / "fsdp_memory.json"


def local_bytes(tensors) -> int:
    """Bytes this rank stores for ``tensors`` (a DTensor counts its local shard)."""
    from torch.distributed.tensor import DTensor

    total = 0
    for t in tensors:
        t = t.to_local() if isinstance(t, DTensor) else t
        total += t.numel() * t.element_size()
    return total


def rank_main(rank: int, world: int, port: int, strategy: str, batch: int, steps: int, out: str) -> None:
    import torch.distributed as dist

    from vidtune.models.tiny import load_tiny
    from vidtune.runtime.distributed import ForwardWith, cleanup, init_process_group, wrap_ddp
    from vidtune.runtime.fsdp import shard_policy

    torch.set_num_threads(1)
    init_process_group(rank, world, port=port, backend="gloo")
    policy = load_tiny("builtin:base").train()
    step = ForwardWith(policy, lambda pol, xt, t, cond, target: (pol.velocity(xt, t, cond) - target).square().mean())
    if strategy == "fsdp":
        shard_policy(policy, world, torch.device("cpu"))
    else:
        step = wrap_ddp(step)
    params = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(rank)
    shape = (batch // world, 3, policy.config.frames, policy.config.size, policy.config.size)
    cond = policy.encode_prompts(["a red circle falls"] * shape[0])
    times = []
    for _ in range(steps):
        x0, noise = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
        t = torch.rand(shape[0], generator=g) * 0.9 + 0.05
        xt = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * noise
        start = time.perf_counter()
        loss = step(xt, t, cond, noise - x0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    row = {"strategy": strategy, "rank": rank, "world_size": world, "global_batch": batch,
           "param_bytes": local_bytes(params), "grad_bytes": local_bytes(p.grad for p in params),
           "adam_bytes": local_bytes(v for s in opt.state.values() for v in s.values()
                                     if torch.is_tensor(v) and v.ndim > 0),
           "step_s_median": statistics.median(times[1:])}
    rows = [None] * world
    dist.all_gather_object(rows, row)
    if rank == 0:
        Path(out).write_text(json.dumps(rows))
    cleanup()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    import tempfile

    from vidtune.runtime.distributed import spawn

    result = {"ranks": 2, "threads_per_rank": 1, "model": "builtin:base", "runs": []}
    for strategy in ("ddp", "fsdp"):
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            spawn(rank_main, 2, strategy, args.batch, args.steps, f.name)
            result["runs"] += json.loads(Path(f.name).read_text())
    by = {s: [r for r in result["runs"] if r["strategy"] == s] for s in ("ddp", "fsdp")}
    state = {s: max(r["param_bytes"] + r["grad_bytes"] + r["adam_bytes"] for r in rows) for s, rows in by.items()}
    result["state_bytes_per_rank"] = state
    result["fsdp_over_ddp_state"] = state["fsdp"] / state["ddp"]
    result["step_s"] = {s: statistics.median(r["step_s_median"] for r in rows) for s, rows in by.items()}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: result[k] for k in ("state_bytes_per_rank", "fsdp_over_ddp_state", "step_s")}, indent=1))


if __name__ == "__main__":
    main()
