"""The reward stage on a backend: ``pool(videos, prompts)`` returns the same :class:`Composition` as
``compose(composite, videos, prompts)`` (gates first, then heads, the same counters), locally or on Ray.

Every gate and head of the composite becomes one reward worker (key ``gate:<label>`` / ``head:<label>``). Scores
are computed by the workers; the Composition is then assembled by :func:`vidtune.rewards.compose.compose` itself,
run on stand-ins that replay each worker's output or re-raise its exception, so gating, floors, counters and error
texts cannot drift from the in-process definition.

Scheduling (ALGORITHMS.md §9, concurrent backends only): on the first batch of each shape (plans are kept per
batch shape: §9 re-profiles when batch size or resolution changes) each worker is profiled alone at every usable
CPU thread budget (median of ``repeats`` after ``warmup``); the profiles go on the quota grid
(:func:`cpu_profile_grid`) and :func:`plan_reward_groups` picks the groups and quotas. Groups run one after
another, the workers of a group concurrently with their thread budgets. Predicted (Σ_g T*(g)) and measured
makespans are logged every call (``last_logs``, ``history``, logger ``vidtune.runtime``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from vidtune.errors import VidtuneError
from vidtune.math.makespan import MakespanPlan, cpu_thread_budget, plan_reward_groups
from vidtune.rewards.base import check_inputs
from vidtune.rewards.compose import Composite, Composition, compose
from vidtune.runtime.local import Call, LocalBackend
from vidtune.runtime.worker import Outcome, RewardWorkerError, cpu_budgets, cpu_profile_grid, step_profile_grid

log = logging.getLogger("vidtune.runtime")
GPU_PROFILE_QUOTAS = (0.2, 0.3, 0.5, 1.0)  # MPS percentages profiled on a GPU (each needs a worker relaunch)


class _Replay:
    """Stands in for a reward inside ``compose``: returns the worker's output or raises its exception; any other
    attribute (``name``, ``range``, ``is_gate``, ``always_fail_closed``) is the original reward's."""

    def __init__(self, original: Any, outcome: Outcome) -> None:
        self._original, self._outcome = original, outcome

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._original, attr)

    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any):
        if self._outcome.error is not None:
            raise self._outcome.error
        return self._outcome.output


def worker_rewards(composite: Composite) -> dict[str, Any]:
    """Worker key → reward instance for every gate (``gate:<label>``) and head (``head:<label>``)."""
    return {f"gate:{label}": r for label, _, r, _ in composite.gates} | \
        {f"head:{label}": r for label, _, r in composite.heads}


def serial_plan(keys: Sequence[str]) -> MakespanPlan:
    """Every worker alone at the full quota, in name order (no profile: predicted makespan NaN)."""
    names = sorted(keys)
    return MakespanPlan(tuple((k,) for k in names), tuple((1.0,) for _ in names), math.nan, math.nan)


class RewardPool:
    """The reward stage of ``composite`` on ``backend`` (``"local"``, ``"ray"`` or a backend object).

    ``schedule``: ``"profile"`` (profile, then the §9 plan; concurrent backends only, local runs serially),
    ``"serial"`` (one worker at a time at the full quota), or ``"fixed"`` (plan from ``profiles``: worker key →
    10 runtimes on the quota grid, e.g. from an earlier run). Use as ``pool(videos, prompts, **context)``;
    ``close()`` (or ``with``) releases the workers.
    """

    def __init__(self, composite: Composite, backend: str | Any = "local", *, schedule: str = "profile",
                 profiles: Mapping[str, Sequence[float]] | None = None, repeats: int = 3, warmup: int = 1,
                 seed: int = 0, **backend_kwargs: Any) -> None:
        if schedule not in ("profile", "serial", "fixed"):
            raise VidtuneError(f"schedule must be 'profile', 'serial' or 'fixed', got {schedule!r}")
        if schedule == "fixed" and not profiles:
            raise VidtuneError("schedule='fixed' needs profiles (worker key → 10 runtimes on the quota grid)")
        self.composite, self.schedule, self.repeats, self.warmup, self.seed = composite, schedule, repeats, warmup, seed
        self.rewards = worker_rewards(composite)
        self.backend = make_backend(backend, **backend_kwargs) if isinstance(backend, str) else backend
        try:
            self.backend.start(self.rewards)
        except BaseException:
            self.backend.close()
            raise
        self.profiles: dict[str, list[float]] = {k: list(v) for k, v in (profiles or {}).items()}
        self.plan: MakespanPlan | None = None
        self._plans: dict[tuple, tuple[MakespanPlan, dict[str, list[float]]]] = {}  # batch shape → (plan, profiles)
        self._pinned = False
        self.last_logs: dict[str, float] = {}
        self.history: deque[dict[str, Any]] = deque(maxlen=1000)  # the latest stages

    # ------------------------------------------------------------------------------------------ scheduling
    def profile(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> dict[str, list[float]]:
        """Profile every worker alone on this batch (ALGORITHMS.md §9) → worker key → C(q) on the quota grid."""
        b, n = self.backend, self.backend.n_cores
        vref, scale = b.put(videos), self.repeats + self.warmup

        def alone(key: str, budgets: list) -> dict:  # one worker at a time: a profile is a runtime alone on the pool
            args = (vref, prompts, context, budgets, self.repeats, self.warmup)
            return b.run([Call(key, "profile", args, scale * len(budgets))])[key]

        if getattr(b, "device", "cpu") == "cuda":  # MPS: one relaunch of every worker per profiled quota
            measured: dict[str, dict[float, float]] = {k: {} for k in self.rewards}
            for q in GPU_PROFILE_QUOTAS:
                b.set_quotas({k: q for k in self.rewards})
                for k in sorted(self.rewards):
                    measured[k][q] = alone(k, [None])[None]
            self.profiles = {k: step_profile_grid(m) for k, m in measured.items()}
        else:
            budgets = sorted({k for k in cpu_budgets(n).values() if k is not None})
            self.profiles = {k: cpu_profile_grid(alone(k, budgets), n) for k in sorted(self.rewards)}
        return self.profiles

    def replan(self) -> MakespanPlan:
        """The §9 plan of the current profiles (serial when the backend runs calls one at a time)."""
        if not self.backend.concurrent or self.schedule == "serial" or not self.profiles:
            self.plan = serial_plan(self.rewards)
        else:
            missing = sorted(set(self.rewards) - set(self.profiles))
            if missing:
                raise VidtuneError(f"no profile for reward worker(s) {missing}; have {sorted(self.profiles)}")
            self.plan = plan_reward_groups({k: self.profiles[k] for k in self.rewards}, seed=self.seed)
            self._apply_quotas(self.plan)
        log.info("reward plan (%s): %s", self.backend.name, describe(self.plan))
        return self.plan

    def set_plan(self, plan: MakespanPlan | None) -> None:
        """Pin ``plan`` for every later call, whatever the batch shape (benchmarks, a plan from an earlier run);
        None unpins (back to one profiled plan per batch shape)."""
        if plan is not None:
            keys = sorted(k for g in plan.groups for k in g)
            if keys != sorted(self.rewards):
                raise VidtuneError(f"plan covers {keys}, the pool's workers are {sorted(self.rewards)}")
            self._apply_quotas(plan)
        self.plan, self._pinned = plan, plan is not None

    def _apply_quotas(self, plan: MakespanPlan) -> None:
        """Hand the plan's quotas to the backend (GPU: MPS percentages need a worker relaunch)."""
        if hasattr(self.backend, "set_quotas"):
            self.backend.set_quotas({k: q for g, qs in zip(plan.groups, plan.quotas) for k, q in zip(g, qs)})

    def _threads(self, q: float) -> int | None:
        """Thread budget of quota q on CPU; None on GPU (the MPS percentage was set at launch)."""
        return None if getattr(self.backend, "device", "cpu") == "cuda" else cpu_thread_budget(q, self.backend.n_cores)

    # ------------------------------------------------------------------------------------------ the call
    def __call__(self, videos: torch.Tensor, prompts: list[str], **context: Any) -> Composition:
        """Score the batch on the workers, group by group, and compose (module doc). Same contract as
        ``compose(composite, videos, prompts, **context)``."""
        check_inputs(videos, prompts, "reward pool")
        shape = tuple(videos.shape)
        if not self._pinned and shape in self._plans:  # one plan per batch shape (BPGO prior vs training batch)
            self.plan, self.profiles = self._plans[shape]
            self._apply_quotas(self.plan)
        elif not self._pinned:
            if self.schedule == "profile" and self.backend.concurrent:
                self.profile(videos, prompts, **context)
            self._plans[shape] = (self.replan(), dict(self.profiles))
        plan, vref, outcomes, measured = self.plan, self.backend.put(videos), {}, []
        stats0 = self.backend.stats.as_dict()
        for group, quotas in zip(plan.groups, plan.quotas):
            t0 = time.perf_counter()
            calls = [Call(k, "score", (vref, prompts, context, self._threads(q))) for k, q in zip(group, quotas)]
            outcomes |= self.backend.run(calls)
            measured.append(time.perf_counter() - t0)
        lost = sorted(set(self.rewards) - set(outcomes))
        if lost:  # cannot happen unless a backend breaks its contract: never compose from a partial stage
            raise RewardWorkerError(f"reward worker(s) {lost} returned no result")
        replayed = Composite(
            heads=[(lb, w, _Replay(r, outcomes[f"head:{lb}"])) for lb, w, r in self.composite.heads],
            gates=[(lb, s, _Replay(r, outcomes[f"gate:{lb}"]), f) for lb, s, r, f in self.composite.gates])
        result = compose(replayed, videos, prompts, **context)
        stats = {k: v - stats0[k] for k, v in self.backend.stats.as_dict().items()}
        logs = {"runtime/reward_predicted_s": plan.makespan, "runtime/reward_measured_s": sum(measured),
                "runtime/reward_serial_predicted_s": plan.serial_makespan, "runtime/reward_groups": len(plan.groups),
                "runtime/reward_restarts": stats["restarts"], "runtime/reward_retries": stats["retries"]}
        self.last_logs = {k: float(v) for k, v in logs.items() if math.isfinite(v)}  # no prediction without a profile
        self.history.append({"groups": [list(g) for g in plan.groups], "measured_group_s": measured,
                             "worker_s": {k: o.seconds for k, o in outcomes.items()}, **self.last_logs})
        log.info("reward stage (%s): predicted %.3f s, measured %.3f s, %d group(s), %d restart(s)",
                 self.backend.name, plan.makespan, sum(measured), len(plan.groups), stats["restarts"])
        return result

    compose = __call__

    def close(self) -> None:
        """Release the workers (and Ray, if the backend started it)."""
        self.backend.close()

    def __enter__(self) -> "RewardPool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def describe(plan: MakespanPlan) -> str:
    """One line: groups with quotas, predicted and serial makespans."""
    groups = " | ".join(", ".join(f"{k}@{q:g}" for k, q in zip(g, qs)) for g, qs in zip(plan.groups, plan.quotas))
    return f"[{groups}] predicted {plan.makespan:.3f} s (serial {plan.serial_makespan:.3f} s)"


def make_backend(kind: str, **kwargs: Any):
    """``"local"`` → :class:`LocalBackend`, ``"ray"`` → :class:`vidtune.runtime.ray_backend.RayBackend`."""
    if kind == "local":
        return LocalBackend(**kwargs)
    if kind == "ray":
        from vidtune.runtime.ray_backend import RayBackend

        return RayBackend(**kwargs)
    raise VidtuneError(f"unknown runtime {kind!r}; expected 'local' or 'ray'")


def make_reward_pool(composite: Composite, runtime: str = "local", threads: int | None = None,
                     **kwargs: Any) -> RewardPool:
    """The pool a recipe asks for (``run.runtime``): local → in-process serial; ray → the scheduled Ray pool with
    ``threads`` cores (default: all of the running cluster's)."""
    if runtime == "ray" and threads is not None:
        kwargs.setdefault("num_cpus", threads)
    return RewardPool(composite, runtime, **kwargs)


__all__ = ["GPU_PROFILE_QUOTAS", "RewardPool", "describe", "make_backend", "make_reward_pool",
           "serial_plan", "worker_rewards"]
