"""Execution backends (DESIGN.md §5, ALGORITHMS.md §9): the reward stage in-process or on Ray actors sharing one
placement group, grouped concurrent reward workers under profiled quotas, fault handling, and data-parallel training.

Public API: :class:`RewardPool` / :func:`make_reward_pool` (same contract as ``compose``), the backends
:class:`LocalBackend` and ``RayBackend`` (imported lazily: Ray is only loaded under ``runtime: ray``),
:class:`FaultInjector`, :class:`RetryableRewardError`, :class:`RewardWorkerError`; DDP and the shared launch
and collectives in :mod:`vidtune.runtime.distributed`, FSDP sharding and its checkpoints in :mod:`vidtune.runtime.fsdp`.
"""

from __future__ import annotations

from vidtune.runtime.faults import FaultInjector
from vidtune.runtime.local import LocalBackend
from vidtune.runtime.reward_pool import RewardPool, describe, make_backend, make_reward_pool
from vidtune.runtime.worker import RetryableRewardError, RewardWorker, RewardWorkerError


def __getattr__(name: str):
    if name == "RayBackend":
        from vidtune.runtime.ray_backend import RayBackend

        return RayBackend
    raise AttributeError(f"module 'vidtune.runtime' has no attribute {name!r}")


__all__ = ["FaultInjector", "LocalBackend", "RayBackend", "RetryableRewardError", "RewardPool", "RewardWorker",
           "RewardWorkerError", "describe", "make_backend", "make_reward_pool"]
