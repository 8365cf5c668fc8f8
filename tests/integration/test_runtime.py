"""Runtime at scale (issue 9): the reward pool gives the same Composition in-process and on Ray (2 CPUs), crashed
or hung reward workers are restarted and their batch retried with every sample scored once, the CPU quota grid, and
DDP (2 gloo processes) gradients equal single-process gradients on the same global batch."""

from __future__ import annotations

import math
import os
import sys
from collections import Counter

import pytest
import torch

from vidtune.config import WorldConfig
from vidtune.errors import VidtuneError
from vidtune.math.flow_matching import interpolate, per_sample_mse, velocity_target, weighted_fm_loss
from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
from vidtune.rewards.base import build_reward
from vidtune.rewards.compose import Composite, GateSpec, RewardSpec, build, compose
from vidtune.runtime import FaultInjector, RetryableRewardError, RewardPool, RewardWorkerError
from vidtune.runtime.worker import cpu_budgets, cpu_profile_grid, step_profile_grid
from vidtune.world.dataset import examples, to_tensor
from vidtune.world.grammar import caption
from vidtune.world.render import render

SAFETY = {"colours": ["magenta"], "words": ["pour"]}


class RaisingGate:
    """A gate whose scoring always raises (compose records the error text and fails the gate closed)."""
    name, range, is_gate = "raising", (0.0, 1.0), True

    def __call__(self, videos, prompts, **context):
        raise ValueError("judge unavailable")


@pytest.fixture(scope="session")
def ray_session():
    """One Ray for the file: 2 CPUs, no dashboard, no token file; shut down at the end."""
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["HF_HUB_OFFLINE"] = "1"
    ray = pytest.importorskip("ray")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # RaisingGate travels by value
    ray.init(num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def clips():
    """8 ShapeWorld clips (8 × 32 × 32) rendered with vidtune.world.render, and their instruction captions."""
    world = WorldConfig(p_pour=0.2)
    exs = examples(8, 3, world, "any")
    videos = torch.stack([to_tensor(render(e.scene, e.seed, world.frames, world.size).video) for e in exs])
    return videos, [caption(e.scene) for e in exs]


def _composite(with_raising_gate: bool = True) -> Composite:
    comp = build([RewardSpec("verifier"), RewardSpec("motion_smoothness"), RewardSpec("freeze", weight=0.5),
                  RewardSpec("gravity", {"not_applicable": 1.0})], [GateSpec("safety", SAFETY)])
    if with_raising_gate:
        comp.gates.append(("raising", GateSpec("raising"), RaisingGate(), 0.0))
    return comp


def _assert_same(a, b) -> None:
    for field in ("heads", "scalar", "floor"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0, equal_nan=True)
    assert torch.equal(a.gate_failed, b.gate_failed)
    assert (a.head_names, a.counters, a.errors) == (b.head_names, b.counters, b.errors)


def test_ray_pool_equals_local_and_compose(ray_session, clips):
    videos, prompts = clips
    comp = _composite()
    reference = compose(comp, videos, prompts)
    assert reference.counters["gate/safety/failed"] > 0 and reference.errors["raising"].startswith("ValueError")
    with RewardPool(comp, "local") as local:
        _assert_same(local(videos, prompts), reference)
    with RewardPool(comp, "ray", timeout_s=120) as pool:
        _assert_same(pool(videos, prompts), reference)
        plan, logs = pool.plan, pool.last_logs
        assert sorted(k for g in plan.groups for k in g) == sorted(pool.rewards)
        assert all(sum(qs) <= 1 + 1e-9 and min(qs) >= 0.5 for qs in plan.quotas)  # 2 cores: ≥ 1 core each
        assert len(plan.groups) < len(pool.rewards)  # the scheduler ran workers concurrently
        assert plan.makespan <= plan.serial_makespan
        assert math.isfinite(logs["runtime/reward_predicted_s"]) and logs["runtime/reward_measured_s"] > 0
        assert logs["runtime/reward_restarts"] == 0
    with pytest.raises(VidtuneError, match="4 CPU"):  # more than the cluster has: a clear error, not a hang
        RewardPool(comp, "ray", num_cpus=4)


def test_ray_crashed_and_hung_workers_are_restarted_once(ray_session, clips, tmp_path):
    videos, prompts = clips
    crash = FaultInjector(build_reward("verifier"), tmp_path, "crash", times=1)
    hang = FaultInjector(build_reward("freeze"), tmp_path, "hang", times=1, hang_s=120)
    comp = Composite(heads=[("verifier", 1.0, crash), ("freeze", 1.0, hang),
                            ("motion_smoothness", 1.0, build_reward("motion_smoothness"))], gates=[])
    flat = {k: [1.0] * 10 for k in ("head:verifier", "head:freeze", "head:motion_smoothness")}
    with RewardPool(comp, "ray", schedule="fixed", profiles=flat, timeout_s=6, max_retries=2) as pool:
        assert pool.plan is None
        result = pool(videos, prompts)
        assert len(pool.plan.groups) == 1  # all three ran concurrently: the crash and the hang hit one iteration
        assert pool.last_logs["runtime/reward_restarts"] == 2 and pool.last_logs["runtime/reward_retries"] == 2
    plain = Composite(heads=[("verifier", 1.0, crash.reward), ("freeze", 1.0, hang.reward),
                             ("motion_smoothness", 1.0, build_reward("motion_smoothness"))], gates=[])
    _assert_same(result, compose(plain, videos, prompts))
    for injector in (crash, hang):  # exactly one successful call (the retry), every sample in it exactly once
        lines = injector.ledger()
        assert {ln.split()[1] for ln in lines} == {"2"}
        assert Counter(int(ln.split()[5]) for ln in lines) == Counter(range(len(prompts)))


def test_local_retryable_errors_retry_then_give_up(clips, tmp_path):
    videos, prompts = clips
    flaky = FaultInjector(build_reward("gravity", not_applicable=1.0), tmp_path, "retryable", times=1, tag="once")
    comp = Composite(heads=[("gravity", 1.0, flaky)], gates=[])
    with RewardPool(comp, "local", max_retries=1) as pool:
        _assert_same(pool(videos, prompts), compose(Composite([("gravity", 1.0, flaky.reward)], []), videos, prompts))
        assert pool.last_logs["runtime/reward_retries"] == 1
    stuck = FaultInjector(flaky.reward, tmp_path, "retryable", times=5, tag="stuck")
    with RewardPool(Composite([("gravity", 1.0, stuck)], []), "local", max_retries=2) as pool:
        with pytest.raises(RewardWorkerError, match="head:gravity.*retry budget 2.*RetryableRewardError"):
            pool(videos, prompts)
    assert issubclass(RetryableRewardError, Exception) and len(stuck.ledger()) == 0


def test_cpu_quota_grid():
    assert [cpu_budgets(2)[q] for q in (0.1, 0.4, 0.5, 0.7, 0.8, 0.9, 1.0)] == [None, None, 1, 1, None, None, 2]
    grid = cpu_profile_grid({1: 3.0, 2: 2.0}, 2)
    assert grid[4:7] == [3.0] * 3 and grid[9] == 2.0 and all(math.isinf(grid[i]) for i in (0, 3, 7, 8))
    assert step_profile_grid({0.3: 5.0, 1.0: 2.0})[:3] == [math.inf, math.inf, 5.0]
    with pytest.raises(Exception, match="schedule"):
        RewardPool(_composite(False), "local", schedule="fastest")


# ---------------------------------------------------------------------------------------------- DDP
def _tiny() -> TinyVideoPolicy:
    torch.manual_seed(0)
    return TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 8, 8), hidden=32, depth=2, heads=2,
                                      text_layers=1)).double()


def _global_batch():
    """4 clips (4 × 16 × 16), captions, flow times and noise, all fixed by seeds."""
    world = WorldConfig(frames=4, size=16)
    exs = examples(4, 11, world, "any")
    video = torch.stack([to_tensor(e.render(world).video) for e in exs]).double()
    g = torch.Generator().manual_seed(5)
    t = torch.rand(4, generator=g, dtype=torch.float64) * 0.9 + 0.05
    eps = torch.randn(4, 3, 4, 16, 16, generator=g, dtype=torch.float64)
    return video, [caption(e.scene) for e in exs], t, eps


def _fm_loss(policy, video, prompts, t, eps):
    """L_FM = mean_b e_b on the given rows (ALGORITHMS.md §7.1)."""
    x0 = policy.encode_video(video)
    v = policy.velocity(interpolate(x0, eps, t), t, policy.encode_prompts(prompts))
    return weighted_fm_loss(per_sample_mse(v, velocity_target(x0, eps)))


def _ddp_rank(rank: int, world: int, port: int, out: str) -> None:
    from vidtune.runtime.distributed import ForwardWith, cleanup, init_process_group, shard, wrap_ddp

    torch.set_num_threads(1)
    init_process_group(rank, world, port=port, backend="gloo")
    try:
        policy = _tiny()
        model = wrap_ddp(ForwardWith(policy, _fm_loss))
        video, prompts, t, eps = _global_batch()
        rows = shard(len(prompts), rank, world)
        model(video[rows], prompts[rows], t[rows], eps[rows]).backward()
        if rank == 0:
            torch.save({n: p.grad for n, p in policy.named_parameters() if p.grad is not None}, out)
    finally:
        cleanup()


def test_ddp_two_gloo_ranks_match_single_process(tmp_path):
    from vidtune.runtime.distributed import spawn

    out = str(tmp_path / "ddp_grads.pt")
    spawn(_ddp_rank, 2, out)
    ddp = torch.load(out)
    policy = _tiny()
    _fm_loss(policy, *_global_batch()).backward()
    single = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert ddp.keys() == single.keys() and len(single) > 10
    for name, grad in single.items():
        torch.testing.assert_close(ddp[name], grad, rtol=1e-6, atol=1e-9, msg=lambda m, n=name: f"{n}: {m}")
