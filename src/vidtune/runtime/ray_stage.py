"""The policy actor: a stage's training loop as a Ray actor on the pool's one placement group (DESIGN.md §5).

Under ``run.runtime: ray`` GRPO does not train in the driver. The driver reserves the pool (one bundle with the
run's CPUs, and its GPU under ``run.device: cuda``) and starts the *policy actor* in it, which runs the stage's loop:
it opens the reward workers (runtime/ray_backend.py) and, with ``run.rollout_workers`` > 0, the rollout workers
(runtime/rollout_workers.py) on the same placement group, so rollout, reward and update take turns on the same
devices (the TeleBoost layout: no idle reward pool). Every role takes the same fraction of the bundle; the fractions
are Ray's bookkeeping, the compute quota is applied in the workers (thread budgets on CPU, MPS on GPU). Videos,
weights and trajectories move between the roles as object references. The driver waits for the export's path.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from vidtune.errors import VidtuneError
from vidtune.runtime.distributed import World


def pool_roles(recipe: Any) -> int:
    """Actors sharing the pool's bundle: the policy actor, the rollout workers and one worker per reward head and
    gate (runtime/reward_pool.worker_rewards)."""
    r = recipe.grpo.reward
    return 1 + recipe.run.rollout_workers + len(r.heads) + len(r.gates)


class PolicyActor:
    """A plain class (wrapped with ``ray.remote`` by :func:`run_on_pool`) that runs a stage's ``train`` as rank 0
    of 1 on the run's device and returns the exported model folder."""

    def ready(self) -> bool:
        return True

    def run(self, train: Callable[..., Path], recipe: Any, run_dir: Any, init: Any, progress: bool) -> str:
        from vidtune.models.factory import resolve_device

        return str(train(recipe, run_dir, init, progress, World(0, 1, 0), resolve_device(recipe.run.device)))


def run_on_pool(train: Callable[..., Path], recipe: Any, run_dir: Any, init: Any, progress: bool,
                ready_timeout_s: float = 120.0) -> Path:
    """Reserve the pool, run ``train`` in the policy actor on it, release everything (also on an error or ^C)."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    from vidtune.runtime.ray_backend import ensure_ray, role_share

    cpus = recipe.run.threads
    gpus = 1 if recipe.run.device.startswith("cuda") else 0
    owns = ensure_ray(cpus, gpus or None)
    bundle = {"CPU": float(cpus)} | ({"GPU": float(gpus)} if gpus else {})
    pg = placement_group([bundle], strategy="PACK")
    actor = None
    try:
        try:
            ray.get(pg.ready(), timeout=ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise VidtuneError(f"Ray could not reserve the pool {bundle} within {ready_timeout_s:.0f} s; the cluster "
                               f"has {ray.available_resources()} free") from None
        roles = pool_roles(recipe)
        actor = ray.remote(PolicyActor).options(
            num_cpus=role_share(cpus, roles), num_gpus=role_share(gpus, roles) if gpus else 0, max_restarts=0,
            scheduling_strategy=PlacementGroupSchedulingStrategy(pg, placement_group_bundle_index=0)).remote()
        return Path(ray.get(actor.run.remote(train, recipe, run_dir, init, progress)))
    finally:
        if actor is not None:
            ray.kill(actor, no_restart=True)
        remove_placement_group(pg)
        if owns:
            ray.shutdown()
