"""In-process backend: reward workers are plain :class:`RewardWorker` hosts run one after another in the driver.

There is no second process, so there is nothing to restart and nothing to time out: the only fault handled is a
reward raising :class:`RetryableRewardError`, which is retried on the same instance (bounded). Group concurrency
does not apply (``concurrent = False``): torch and OpenCV thread settings are process-wide, so the in-process path
runs the serial plan and leaves the process thread settings alone (``threads`` of a call is ignored).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from vidtune.runtime.worker import Outcome, RewardWorker, RewardWorkerError


class Call(NamedTuple):
    """One method call on one worker: ``method`` is ``"score"`` or ``"profile"`` of :class:`RewardWorker`."""
    label: str  # worker key
    method: str
    args: tuple
    timeout_scale: float = 1.0  # deadline = timeout_s × this (a profile runs several reward calls)


class RetryStats:
    """Fault counters of a backend (cumulative): restarts of workers, retried calls, and their causes."""

    def __init__(self) -> None:
        self.restarts, self.retries, self.causes = 0, 0, []

    def record(self, label: str, attempt: int, max_retries: int, cause: str) -> None:
        """Count one failed attempt of ``label``; past ``max_retries`` retries it is a :class:`RewardWorkerError`."""
        self.causes.append(f"{label}: {cause}")
        if attempt >= max_retries:
            raise RewardWorkerError(f"reward worker '{label}' failed {attempt + 1} time(s), retry budget "
                                    f"{max_retries} spent; last cause: {cause}")
        self.retries += 1

    def as_dict(self) -> dict[str, int]:
        return {"restarts": self.restarts, "retries": self.retries}


class LocalBackend:
    """Backend protocol (shared with :class:`vidtune.runtime.ray_backend.RayBackend`): ``start(rewards)``,
    ``put(obj)``, ``run(calls) -> {label: result}``, ``stats``, ``close()``; attributes ``name``, ``concurrent``,
    ``device``, ``n_cores``."""

    name, concurrent, device = "local", False, "cpu"

    def __init__(self, max_retries: int = 2, n_cores: int | None = None) -> None:
        import torch

        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries, self.n_cores = max_retries, n_cores or torch.get_num_threads()
        self.workers: dict[str, RewardWorker] = {}
        self.stats = RetryStats()

    def start(self, rewards: Mapping[str, Any]) -> None:
        """Host each reward (by worker key) in an in-process :class:`RewardWorker`; the instances are shared."""
        self.workers = {k: RewardWorker(k, r) for k, r in rewards.items()}

    def put(self, obj: Any) -> Any:
        """Data stays where it is in-process."""
        return obj

    def run(self, calls: Sequence[Call]) -> dict[str, Any]:
        """Run the calls one after another; a retryable outcome is retried up to ``max_retries`` times."""
        out = {}
        for call in calls:
            if call.label not in self.workers:
                raise KeyError(f"no reward worker '{call.label}'; started: {sorted(self.workers)}")
            for attempt in range(self.max_retries + 1):
                if call.method == "profile":  # times the reward at thread budgets, then restores the process
                    res = _restoring_threads(self.workers[call.label].profile, *call.args)
                else:  # threads of the call ignored: the process setting stays
                    res = self.workers[call.label].score(*call.args[:3], None)
                if not (isinstance(res, Outcome) and res.retryable):
                    out[call.label] = res
                    break
                self.stats.record(call.label, attempt, self.max_retries, f"{type(res.error).__name__}: {res.error}")
        return out

    def close(self) -> None:
        self.workers = {}


def _restoring_threads(fn, *args):
    """``fn(*args)`` with the process's torch and OpenCV thread settings restored afterwards."""
    import cv2
    import torch

    from vidtune.runtime.worker import set_thread_budget

    t, c = torch.get_num_threads(), cv2.getNumThreads()
    try:
        return fn(*args)
    finally:
        set_thread_budget(t)
        cv2.setNumThreads(c)
