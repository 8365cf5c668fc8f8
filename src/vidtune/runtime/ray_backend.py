"""Ray backend: reward workers as Ray actors on ONE placement group (DESIGN.md §5).

The placement group has one bundle holding the node's pool of devices (all its CPUs, and its GPUs). Every actor
takes a fraction of that bundle (``num_cpus``/``num_gpus`` < 1), so several reward workers share a device, and the
policy actor and rollout workers sit in the same bundle (runtime/ray_stage.py, runtime/rollout_workers.py):
rollout, reward and update take turns on the same devices and no reward pool stays idle. Fractions are only Ray's
bookkeeping; the real compute quota is applied inside the worker: a thread budget per call on CPU,
``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` at launch on GPU (docs/scaling.md).

Reward workers are the plain :class:`RewardWorker` host wrapped with ``ray.remote`` at launch, holding the same
reward instance (shipped once through the object store, which also keeps the pristine copy used on a restart).
Videos travel as object references (``put``). A worker whose process dies, or whose call passes its deadline, is
killed, relaunched from that copy and its call resubmitted, at most ``max_retries`` times per call; only the first
successful result of a call is kept, so no sample is lost or counted twice.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

from vidtune.errors import VidtuneError
from vidtune.math.makespan import mps_percentage
from vidtune.runtime.local import Call, RetryStats
from vidtune.runtime.worker import Outcome, RewardWorker


def ensure_ray(num_cpus: int | None = None, num_gpus: int | None = None, address: str | None = None) -> bool:
    """Connect to the cluster at ``address``, or start a local Ray (no dashboard, token auth off unless
    RAY_AUTH_MODE is set: ENVIRONMENT.md §4; workers at the normal priority unless RAY_worker_niceness is set),
    unless Ray is already initialised in this process; True when this call initialised it (then the caller shuts
    it down)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address)
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        # Ray starts its workers at nice 15; the policy actor is the training job itself, so keep the default priority
        os.environ.setdefault("RAY_worker_niceness", "0")
        ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    return True


def role_share(total: float, n: int) -> float:
    """Ray fraction of the bundle per actor when ``n`` actors share it: total/n, at most 1 (Ray wants whole numbers
    above 1), rounded down to 1e-4 so the fractions never add up to more than the bundle."""
    return math.floor(min(1.0, total / max(1, n)) * 1e4) / 1e4


class RayBackend:
    """Backend protocol of :class:`vidtune.runtime.local.LocalBackend`, on Ray actors (module doc).

    ``num_cpus``/``num_gpus``: the devices of the pool (default: what the running Ray cluster has). ``timeout_s``:
    deadline of one reward call (a profile call gets a multiple). ``extra_roles``: actors beyond the reward workers
    that will share the bundle (rollout worker, policy actor), counted when splitting the fractions.
    """

    name, concurrent = "ray", True

    def __init__(self, num_cpus: int | None = None, num_gpus: int = 0, timeout_s: float = 300.0,
                 max_retries: int = 2, address: str | None = None, extra_roles: int = 0,
                 ready_timeout_s: float = 120.0) -> None:
        import ray

        if timeout_s <= 0 or max_retries < 0:
            raise ValueError(f"need timeout_s > 0 and max_retries >= 0, got {timeout_s}, {max_retries}")
        self._owns_ray = ensure_ray(num_cpus, num_gpus or None, address)
        res = ray.cluster_resources()
        self.n_cores = int(num_cpus or res.get("CPU", 1))
        self.n_gpus = int(num_gpus or 0)
        if self.n_cores > res.get("CPU", 0) or self.n_gpus > res.get("GPU", 0):
            if self._owns_ray:
                ray.shutdown()
            raise VidtuneError(f"pool of {self.n_cores} CPU / {self.n_gpus} GPU asked, the running Ray cluster has "
                               f"{res.get('CPU', 0):g} CPU / {res.get('GPU', 0):g} GPU")
        self.device = "cuda" if self.n_gpus else "cpu"
        self.timeout_s, self.max_retries, self.ready_timeout_s = timeout_s, max_retries, ready_timeout_s
        self.extra_roles = extra_roles
        self.stats = RetryStats()
        self.pg, self._own_pg = None, False
        self.actors: dict[str, Any] = {}
        self._refs: dict[str, Any] = {}  # worker key → object ref of the pristine reward
        self._mps: dict[str, int] = {}  # worker key → MPS active-thread percentage (GPU)

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self, rewards: Mapping[str, Any]) -> None:
        """Create the placement group (or, inside an actor placed in one, share that: the policy actor's pool) and
        one actor per reward (worker key → reward instance); wait until they are up."""
        import ray
        from ray.util.placement_group import get_current_placement_group, placement_group

        bundle = {"CPU": float(self.n_cores)} | ({"GPU": float(self.n_gpus)} if self.n_gpus else {})
        self.pg = get_current_placement_group()  # inside the policy actor: its pool (runtime/ray_stage.py)
        self._own_pg = self.pg is None
        if self._own_pg:
            self.pg = placement_group([bundle], strategy="PACK")
        try:
            ray.get(self.pg.ready(), timeout=self.ready_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise VidtuneError(f"Ray could not reserve the pool {bundle} within {self.ready_timeout_s:.0f} s; "
                               f"cluster has {ray.available_resources()} free (another pool still open?)") from None
        n = len(rewards) + self.extra_roles
        self._cpu, self._gpu = role_share(self.n_cores, n), role_share(self.n_gpus, n) if self.n_gpus else 0.0
        self._refs = {k: ray.put(r) for k, r in rewards.items()}
        self.actors = {k: self._launch(k) for k in rewards}
        ray.get([a.ready.remote() for a in self.actors.values()], timeout=self.ready_timeout_s)

    def _options(self, env: Mapping[str, str] | None = None) -> dict:
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        opts = {"num_cpus": self._cpu, "num_gpus": self._gpu, "max_restarts": 0,
                "scheduling_strategy": PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0)}
        return opts | ({"runtime_env": {"env_vars": dict(env)}} if env else {})

    def _launch(self, key: str):
        import ray

        env = {"CUDA_MPS_ACTIVE_THREAD_PERCENTAGE": str(self._mps[key])} if key in self._mps else None
        return ray.remote(RewardWorker).options(**self._options(env)).remote(key, self._refs[key])

    def restart(self, key: str) -> None:
        """Kill worker ``key`` (if still alive) and relaunch it from the pristine reward; wait until it answers."""
        import ray

        ray.kill(self.actors[key], no_restart=True)
        self.actors[key] = self._launch(key)
        ray.get(self.actors[key].ready.remote(), timeout=self.ready_timeout_s)
        self.stats.restarts += 1

    def set_quotas(self, quotas: Mapping[str, float]) -> None:
        """GPU: relaunch the workers whose MPS percentage ⌈100·q⌉ changes (MPS reads it when the CUDA context is
        created). CPU: nothing to do, the thread budget travels with each call."""
        if self.device != "cuda":
            return
        for key, q in quotas.items():
            if self._mps.get(key) != (pct := mps_percentage(q)):
                self._mps[key] = pct
                self.restart(key)

    def put(self, obj: Any) -> Any:
        """Place ``obj`` in the object store once; actors receive the reference, not a copy per call."""
        import ray

        return ray.put(obj)

    def close(self) -> None:
        """Kill the actors, remove the placement group, and shut Ray down if this backend started it."""
        import ray
        from ray.util.placement_group import remove_placement_group

        if not ray.is_initialized():
            return
        for a in self.actors.values():
            ray.kill(a, no_restart=True)
        self.actors = {}
        if self.pg is not None and self._own_pg:
            remove_placement_group(self.pg)
        self.pg = None
        if self._owns_ray:
            ray.shutdown()

    # ------------------------------------------------------------------------------------------ calls
    def run(self, calls: Sequence[Call]) -> dict[str, Any]:
        """Submit every call at once (they run concurrently, one per worker) and collect one result per call.
        A dead worker (``RayActorError``, ``WorkerCrashedError``), a call past its deadline, or a retryable outcome
        → restart the worker and resubmit, bounded by ``max_retries`` (:class:`RewardWorkerError` beyond)."""
        import ray
        from ray.exceptions import RayActorError, WorkerCrashedError

        if len({c.label for c in calls}) != len(calls):
            raise ValueError("run(): at most one call per worker at a time")
        pending: dict[Any, tuple[Call, int, float]] = {}

        def submit(call: Call, attempt: int) -> None:
            ref = getattr(self.actors[call.label], call.method).remote(*call.args)
            pending[ref] = (call, attempt, time.monotonic() + self.timeout_s * call.timeout_scale)

        def retry(call: Call, attempt: int, cause: str) -> None:
            self.stats.record(call.label, attempt, self.max_retries, cause)
            self.restart(call.label)
            submit(call, attempt + 1)

        for call in calls:
            if call.label not in self.actors:
                raise KeyError(f"no reward worker '{call.label}'; started: {sorted(self.actors)}")
            submit(call, 0)
        out: dict[str, Any] = {}
        while pending:
            wait = max(0.0, min(d for _, _, d in pending.values()) - time.monotonic())
            done, _ = ray.wait(list(pending), num_returns=1, timeout=wait)
            for ref in done:
                call, attempt, _ = pending.pop(ref)
                try:
                    res = ray.get(ref)
                except (RayActorError, WorkerCrashedError) as e:
                    retry(call, attempt, f"worker died ({type(e).__name__})")
                    continue
                if isinstance(res, Outcome) and res.retryable:
                    retry(call, attempt, f"{type(res.error).__name__}: {res.error}")
                else:
                    out[call.label] = res
            now = time.monotonic()
            late = [ref for ref, (_, _, deadline) in pending.items() if now >= deadline]
            finished = set(ray.wait(late, num_returns=len(late), timeout=0)[0]) if late else set()
            for ref in late:  # a restart above may have blocked while this call finished: collect it instead
                if ref not in finished:
                    call, attempt, _ = pending.pop(ref)
                    retry(call, attempt, f"timed out after {self.timeout_s * call.timeout_scale:.1f} s")
        return out
