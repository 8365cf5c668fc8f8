"""The reward worker host shared by both backends, CPU thread budgets and the quota → profile-grid mapping.

A :class:`RewardWorker` holds one plain reward object (the same instance class as in-process; under Ray the host is
wrapped with ``ray.remote`` at launch). It never lets a reward's own exception escape: the exception is *returned*
inside an :class:`Outcome`, so that the pool can replay it through :func:`vidtune.rewards.compose.compose` exactly as
the in-process path would see it (a gate that raises fails closed, a head that raises is an error). Only a lost
process (crash, kill, timeout) or a :class:`RetryableRewardError` leads to a restart and a retry (reward_pool.py).
"""

from __future__ import annotations

import math
import os
import pickle
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import torch

from vidtune.errors import VidtuneError
from vidtune.math.makespan import QUOTA_GRID, cpu_thread_budget


class RetryableRewardError(VidtuneError):
    """Raised by a reward for a transient failure (a lost connection to a judge, a busy device): the pool restarts
    its worker and retries the whole batch instead of recording the error as the reward's result."""


class RewardWorkerError(VidtuneError):
    """A reward worker kept crashing, timing out or raising :class:`RetryableRewardError` past its retry budget."""


class Outcome(NamedTuple):
    """One call of a reward on a batch: exactly one of ``output`` / ``error`` is set."""
    label: str
    output: Any  # RewardOutput
    error: BaseException | None
    retryable: bool  # error is a RetryableRewardError: restart the worker and retry
    seconds: float  # wall time of the reward call inside the worker
    threads: int  # thread budget the call ran with
    pid: int  # worker process id (a restart changes it under Ray)


def set_thread_budget(threads: int) -> None:
    """Apply a CPU quota inside the current process: torch intra-op threads and OpenCV threads = ``threads``."""
    if threads < 1:
        raise ValueError(f"thread budget must be >= 1, got {threads}")
    torch.set_num_threads(threads)
    try:
        import cv2

        cv2.setNumThreads(threads)
    except ImportError:  # pragma: no cover - OpenCV is a project dependency
        pass


def _portable(err: BaseException) -> BaseException:
    """The exception itself when it survives pickling (Ray ships it back), else a same-named stand-in, so that
    ``f"{type(e).__name__}: {e}"`` (compose's gate error text) is the same under both backends."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001
        return type(type(err).__name__, (Exception,), {})(str(err))


class RewardWorker:
    """Host of one reward: ``score`` a batch under a thread budget, ``profile`` it at several budgets."""

    def __init__(self, label: str, reward: Any) -> None:
        self.label, self.reward = label, reward

    def ready(self) -> int:
        """The worker's process id (a cheap call that proves the worker is up)."""
        return os.getpid()

    def score(self, videos: torch.Tensor, prompts: list[str], context: Mapping[str, Any],
              threads: int | None = None) -> Outcome:
        """Run the reward once on the batch with ``threads`` threads (None: leave the process setting alone); a
        raised exception is returned, not raised."""
        if threads is not None:
            set_thread_budget(threads)
        t0 = time.perf_counter()
        try:
            out, err = self.reward(videos, prompts, **dict(context)), None
        except Exception as e:  # noqa: BLE001 — the pool decides (replay through compose, or retry)
            out, err = None, _portable(e)
        return Outcome(self.label, out, err, isinstance(err, RetryableRewardError), time.perf_counter() - t0,
                       torch.get_num_threads() if threads is None else threads, os.getpid())

    def profile(self, videos: torch.Tensor, prompts: list[str], context: Mapping[str, Any],
                budgets: Sequence[int | None], repeats: int = 3, warmup: int = 1) -> dict[int | None, float]:
        """ALGORITHMS.md §9 profile: for each thread budget (None: the process setting, e.g. an MPS-limited GPU
        worker), ``warmup`` untimed calls then the median of ``repeats`` timed calls (s). A reward that raises is
        timed all the same (its error is its result)."""
        out = {}
        for k in budgets:
            times = [self.score(videos, prompts, context, k).seconds for _ in range(warmup + repeats)]
            out[k] = statistics.median(times[warmup:])
        return out


def cpu_budgets(n_cores: int, quotas: Iterable[float] = QUOTA_GRID) -> dict[float, int | None]:
    """Quota → CPU thread budget max(1, round(q·n_cores)) (ALGORITHMS.md §9), or None when that budget exceeds
    q·n_cores: one such worker would take more than its share of the cores, so Σ q ≤ 1 would no longer bound the
    threads of a group by the core count (on 2 cores: q < 0.5 and q ∈ {0.8, 0.9} are unusable)."""
    out = {}
    for q in quotas:
        k = cpu_thread_budget(q, n_cores)
        out[q] = k if k <= q * n_cores + 1e-9 else None
    return out


def cpu_profile_grid(measured: Mapping[int, float], n_cores: int) -> list[float]:
    """A profile on the quota grid Q from runtimes measured per thread budget: C(q) = measured[budget(q)], +inf
    where the budget is unusable (:func:`cpu_budgets`) or was not measured."""
    return [math.inf if k is None else float(measured.get(k, math.inf)) for k in cpu_budgets(n_cores).values()]


def step_profile_grid(measured: Mapping[float, float]) -> list[float]:
    """A profile on Q from runtimes measured at a few quotas (GPU/MPS): C(q) = the best runtime measured at a quota
    ≤ q (a worker may use less than its quota), +inf below the smallest measured quota."""
    pts = sorted((float(q), float(c)) for q, c in measured.items())
    return [min((c for p, c in pts if p <= q + 1e-9), default=math.inf) for q in QUOTA_GRID]
