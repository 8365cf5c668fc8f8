"""Rollout workers: GRPO's SDE sampling on Ray actors of the pool's placement group (DESIGN.md §5).

Each worker holds a copy of the policy (shipped once through the object store at launch). Every iteration the policy
actor publishes its trainable weights once (``ray.put``; the LoRA adapters of a Wan policy, everything of the tiny
one) and each worker receives the object reference with its share of the iteration's prompt groups, loads the weights
and rolls out those groups as the rows of the whole batch (sampling/rollout.py: the initial and SDE noise are drawn
per global row, the noisy set and trained transitions for the whole batch), so the workers' rollouts, concatenated,
are row for row the rollout one process would make (to float rounding of the smaller batched forward). Trajectories
and prompt encodings come back as object references; only the policy actor, which updates on them, fetches them.
"""

from __future__ import annotations

from typing import Any

import torch

from vidtune.runtime.distributed import shard
from vidtune.sampling.rollout import RolloutSpec
from vidtune.types import Rollout


def concat_rollouts(parts: list[Rollout]) -> Rollout:
    """The rollouts of consecutive row ranges of one batch as one :class:`Rollout` (per-sample fields concatenated
    along the batch; the time grid, σ_s, group size, guidance and reduction are those of the batch)."""
    first = parts[0]
    for p in parts[1:]:
        if (p.group_size, p.guidance, p.reduction, p.noise_pool) != (first.group_size, first.guidance,
                                                                      first.reduction, first.noise_pool) \
                or not torch.equal(p.grid, first.grid) or not torch.equal(p.sigmas, first.sigmas):
            raise ValueError("rollout shards come from different rollout settings; cannot concatenate them")
    return Rollout(states=torch.cat([p.states for p in parts]), grid=first.grid, sigmas=first.sigmas,
                   train_steps=torch.cat([p.train_steps for p in parts]),
                   logp_old=torch.cat([p.logp_old for p in parts]), prompts=[q for p in parts for q in p.prompts],
                   seeds=[s for p in parts for s in p.seeds], group_size=first.group_size, guidance=first.guidance,
                   reduction=first.reduction, noise_pool=first.noise_pool, meta=dict(first.meta))


def concat_conds(parts: list[dict | None]) -> dict | None:
    """Prompt encodings (``Cond`` dicts of [rows, ...] tensors) of consecutive row ranges as one."""
    if parts[0] is None:
        return None
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


class RolloutWorker:
    """A plain class (wrapped with ``ray.remote`` at launch) holding a policy copy for SDE rollouts."""

    def __init__(self, policy: Any, threads: int) -> None:
        self.policy, self.threads = policy.eval(), threads

    def ready(self) -> bool:
        return True

    def rollout(self, weights: dict, prompts: list[str], images: torch.Tensor | None, group: int, spec: RolloutSpec,
                seed: int, rows: slice, batch: int) -> tuple[Rollout, dict, dict | None]:
        """Load ``weights`` (the policy actor's trainable parameters by name) and roll out ``prompts`` (G each) as
        rows ``rows`` of a batch of ``batch`` samples; returns the trajectories and the conditional and
        unconditional encodings."""
        from vidtune.stages.grpo import do_rollout

        torch.set_num_threads(self.threads)
        _, unexpected = self.policy.load_state_dict(weights, strict=False)
        if unexpected:
            raise KeyError(f"rollout worker: weights for parameters its policy copy lacks: {unexpected[:3]}")
        with torch.no_grad():
            return do_rollout(self.policy, prompts, group, spec, seed, images, rows, batch)


class RolloutFleet:
    """``n`` :class:`RolloutWorker` actors on the current placement group, each with ``fraction`` of its bundle."""

    def __init__(self, policy: Any, n: int, threads: int, fraction: float) -> None:
        import ray
        from ray.util.placement_group import get_current_placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        pg = get_current_placement_group()
        opts: dict[str, Any] = {"num_cpus": fraction, "max_restarts": 0}
        if pg is not None:
            opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)
        copy = ray.put(policy)
        self.workers = [ray.remote(RolloutWorker).options(**opts).remote(copy, threads) for _ in range(n)]
        ray.get([w.ready.remote() for w in self.workers])

    def rollout(self, policy: Any, prompts: list[str], images: torch.Tensor | None, group: int, spec: RolloutSpec,
                seed: int) -> tuple[Rollout, dict, dict | None]:
        """The whole batch of ``prompts`` × ``group`` rolled out by the workers with ``policy``'s current weights:
        worker w takes the prompt groups of its :func:`shard` (whole groups; the prompt count must be a multiple of
        the number of workers), published once as one object reference."""
        import ray

        n, b = len(self.workers), len(prompts) * group
        weights = ray.put({k: p.detach().cpu() for k, p in policy.named_parameters() if p.requires_grad})
        refs = []
        for w, worker in enumerate(self.workers):
            mine = shard(len(prompts), w, n)
            img = None if images is None else images[mine]
            refs.append(worker.rollout.remote(weights, prompts[mine], img, group, spec, seed,
                                              shard(b, w, n), b))
        parts = ray.get(refs)
        device = next(policy.parameters()).device
        ro = concat_rollouts([p[0] for p in parts])
        ro.states, ro.logp_old, ro.train_steps = (x.to(device) for x in (ro.states, ro.logp_old, ro.train_steps))
        cond, uncond = (concat_conds([p[i] for p in parts]) for i in (1, 2))
        move = (lambda c: None if c is None else {k: v.to(device) for k, v in c.items()})
        return ro, move(cond), move(uncond)

    def close(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w, no_restart=True)
        self.workers = []
