"""SDE rollouts with stored transitions and per-step log-probabilities, and their recomputation under π_θ.

ALGORITHMS.md §1 "Rollout procedure". The math (step mean/std, Gaussian log-density, reductions) is imported from
:mod:`vidtune.math.sde`; this module owns the loop, the random streams and the bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch

from vidtune.errors import ConfigError
from vidtune.math.flow_matching import time_grid
from vidtune.math.sde import (ISOTROPIC, Pool, noise_level, pooled_shape, reduce_logprob, sde_step, subspace_lift,
                              subspace_logprob)
from vidtune.models.policy import Cond, VideoPolicy
from vidtune.sampling.ode import guided_velocity, seeded_noise
from vidtune.types import Rollout


@dataclass(frozen=True)
class RolloutSpec:
    """Sampler settings of Stage II rollouts (ALGORITHMS.md §1 Defaults)."""

    steps: int = 16
    shift: float = 1.0
    schedule: Literal["dance", "flow_grpo"] = "dance"
    eta: float = 0.3
    a: float = 0.7
    guidance: float = 1.0
    share_init_noise: bool = True
    train_fraction: float = 0.6
    final_step: Literal["ode", "sde"] = "ode"
    sde_window: tuple[int, int, int] | None = None  # (w, lo, hi) or None
    reduction: Literal["scalar", "dense"] = "scalar"
    noise_pool: Pool = ISOTROPIC  # coarse exploration noise (§1 "Coarse noise"); (1, 1, 1) = isotropic
    micro_batch: int | None = None  # samples per velocity forward (a memory knob); None = the whole batch

    def validate(self) -> None:
        s = self.steps
        if s < 2:
            raise ConfigError(f"rollout.steps must be >= 2 (the final transition is never trained), got {s}")
        level = self.eta if self.schedule == "dance" else self.a
        if level <= 0:
            raise ConfigError(f"rollout noise level is 0 ({self.schedule}): no transition is stochastic, so none "
                              "is trainable and shared initial noise would give identical rollouts")
        if self.sde_window is not None:
            w, lo, hi = self.sde_window
            if not (w >= 1 and 0 <= lo and lo + w <= hi <= s - 1):
                raise ConfigError(f"rollout.sde_window (w={w}, lo={lo}, hi={hi}) must satisfy 1 <= w, "
                                  f"0 <= lo, lo + w <= hi <= steps - 1 = {s - 1}")
        if len(self.noise_pool) != 3 or min(self.noise_pool) < 1:
            raise ConfigError(f"rollout.noise_pool must be three block sizes >= 1 (F, H, W), got {self.noise_pool}")
        if tuple(self.noise_pool) != ISOTROPIC and self.reduction == "dense":
            raise ConfigError(f"rollout.noise_pool {tuple(self.noise_pool)} gives a density on the pooled grid, "
                              "which has no per-position (ViPO dense) reduction; that reduction needs (1, 1, 1)")


def trained_per_sample(spec: RolloutSpec) -> int:
    """Trained transitions per sample (§1 step 5): the window's w (it lies within the first S − 1 transitions), else
    n = max(1, ⌊f·(S−1)⌋) of the S − 1 transitions before the final one."""
    if spec.sde_window is not None:
        return spec.sde_window[0]
    return min(spec.steps - 1, max(1, int(spec.train_fraction * (spec.steps - 1))))


def noisy_set(spec: RolloutSpec, generator: torch.Generator) -> torch.Tensor:
    """Bool [S]: transitions taken as SDE steps (§1 step 3–4). One window draw per rollout batch."""
    s = spec.steps
    noisy = torch.ones(s, dtype=torch.bool)
    if spec.sde_window is not None:
        w, lo, hi = spec.sde_window
        k = int(torch.randint(lo, hi - w + 1, (1,), generator=generator))
        noisy[:] = False
        noisy[k : k + w] = True
    if spec.final_step == "ode":
        noisy[s - 1] = False
    return noisy


def trainable_steps(spec: RolloutSpec, noisy: torch.Tensor, batch: int, generator: torch.Generator) -> torch.Tensor:
    """[B, n] trained transitions per sample (§1 step 5): noisy minus the final one; without a window
    n = max(1, ⌊f·(S−1)⌋) of them drawn without replacement independently per sample; with a window, all."""
    cand = torch.nonzero(noisy[: spec.steps - 1]).flatten()
    if spec.sde_window is not None:
        return cand.expand(batch, -1).clone()
    n = min(len(cand), trained_per_sample(spec))
    rows = [cand[torch.randperm(len(cand), generator=generator)[:n]].sort().values for _ in range(batch)]
    return torch.stack(rows)


def chunked_velocity(policy: VideoPolicy, x: torch.Tensor, t: torch.Tensor, cond: Cond, uncond: Cond | None,
                     guidance: float, micro_batch: int | None) -> torch.Tensor:
    """Guided v_θ in fp32 computed over slices of ``micro_batch`` rows (None: one call), so that the peak activation
    memory is that of one slice; the rows' values do not depend on the slicing beyond float rounding."""
    n = x.shape[0] if micro_batch is None else micro_batch

    def rows(c: Cond | None, i: int) -> Cond | None:
        return None if c is None else {k: v[i: i + n] for k, v in c.items()}

    return torch.cat([guided_velocity(policy, x[i: i + n], t[i: i + n], rows(cond, i), rows(uncond, i),
                                      guidance).float() for i in range(0, x.shape[0], n)])


def _sigmas(spec: RolloutSpec, grid: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
    sig = noise_level(grid[:-1], grid[1:], spec.schedule, spec.eta, spec.a)
    return torch.where(noisy, sig, torch.zeros_like(sig))


@torch.no_grad()
def rollout(policy: VideoPolicy, cond: Cond, uncond: Cond | None, prompts: list[str], group_size: int,
            spec: RolloutSpec, seed: int, latent_shape: Sequence[int], rows: slice = slice(None),
            batch: int | None = None) -> Rollout:
    """G rollouts per prompt (``cond``/``prompts`` already repeated G times, prompt-major) with stored states,
    σ_s and ``logp_old`` of every trained transition (§1 steps 1–5). States and log-probabilities are on the
    policy's device; the noise is drawn by CPU generators, so it does not depend on the device.

    Data parallelism: ``prompts``/``cond``/``uncond`` may hold the rows ``rows`` (whole groups) of a batch of
    ``batch`` samples (default: they are the batch). The draws are those of the whole batch: the noisy set and the
    trained transitions come from the batch generator drawn for all ``batch`` samples and sliced, the initial and
    SDE noise from per-sample seeds of the global row index. So the ranks' rollouts together are, row for row, the
    single-process rollout (to float rounding of the batched velocity)."""
    spec.validate()
    pool = tuple(spec.noise_pool)
    try:
        coarse = pooled_shape(tuple(latent_shape), pool)
    except ValueError as e:
        raise ConfigError(f"rollout.noise_pool: {e}") from None
    b, total = len(prompts), len(prompts) if batch is None else batch
    index = range(total)[rows]
    if len(index) != b:
        raise ValueError(f"{b} prompts for the {len(index)} rows {rows} of a batch of {total}")
    if total % group_size or b % group_size or index.start % group_size:
        raise ValueError(f"batch {total} (rows {rows}) is not made of whole groups of the group size {group_size}")
    batch_gen = torch.Generator().manual_seed(seed)
    grid = time_grid(spec.steps, spec.shift)
    noisy = noisy_set(spec, batch_gen)
    sigmas = _sigmas(spec, grid, noisy)
    train = trainable_steps(spec, noisy, total, batch_gen)[rows]
    init_seeds = [seed * 7919 + (i // group_size if spec.share_init_noise else i) * 104729 + 1 for i in index]
    sample_gens = [torch.Generator().manual_seed(seed * 15485863 + i * 2 + 1) for i in index]

    x = seeded_noise(init_seeds, tuple(latent_shape), device=policy.device)
    states = [x]
    logps = torch.zeros((b, spec.steps) + ((() if spec.reduction == "scalar" else tuple(coarse[1:]))),
                        device=x.device)
    for s in range(spec.steps):
        t = torch.full((b,), float(grid[s]), device=x.device)
        v = chunked_velocity(policy, x, t, cond, uncond, spec.guidance, spec.micro_batch)
        if not torch.isfinite(v).all():
            raise FloatingPointError(f"non-finite velocity at transition {s}; rollout batch discarded")
        step = sde_step(x, v, grid[s], grid[s + 1], sigmas[s], pool)
        if sigmas[s] > 0:
            z = torch.stack([torch.randn(coarse, generator=g) for g in sample_gens]).to(x.device)
            x_next = step.mean + step.std * subspace_lift(z, pool)
            logps[:, s] = reduce_logprob(subspace_logprob(x_next, step.mean, step.std, pool), spec.reduction)
        else:
            x_next = step.mean
        states.append(x_next)
        x = x_next
    logp_old = torch.stack([logps[i, train[i]] for i in range(b)])
    return Rollout(states=torch.stack(states, 1), grid=grid, sigmas=sigmas, train_steps=train, logp_old=logp_old,
                   prompts=list(prompts), seeds=init_seeds, group_size=group_size, guidance=spec.guidance,
                   reduction=spec.reduction, noise_pool=pool, meta={"spec": spec, "seed": seed})


class TransitionEval(NamedTuple):
    """One stored transition re-evaluated under the current parameters (with gradient)."""

    logp: torch.Tensor  # [n] scalar or [n, F, H, W] dense log π_θ(x_{s+1} | x_s) (on the noise subspace)
    velocity: torch.Tensor  # [n, C, F, H, W] (guided) v_θ(x_s, t_s)
    x: torch.Tensor  # [n, C, F, H, W] x_s
    t: torch.Tensor  # [n] t_s
    dt: torch.Tensor  # [n] Δt_s
    sigma: torch.Tensor  # [n] σ_s


def transition_eval(policy: VideoPolicy, ro: Rollout, cond: Cond, uncond: Cond | None, rows: torch.Tensor,
                    step_col: int) -> TransitionEval:
    """log π_θ(x_{s+1} | x_s) of column ``step_col`` of ``train_steps`` for the samples ``rows`` (§1 step 6), with
    gradient. Uses exactly the stored states, grid, σ, guidance and reduction of the rollout."""
    s = ro.train_steps[rows, step_col]
    x, x_next = ro.states[rows, s], ro.states[rows, s + 1]
    c = {k: v[rows] for k, v in cond.items()}
    u = None if uncond is None else {k: v[rows] for k, v in uncond.items()}
    v = guided_velocity(policy, x, ro.grid[s].float(), c, u, ro.guidance).float()
    step = sde_step(x, v, ro.grid[s].double(), ro.grid[s + 1].double(), ro.sigmas[s].double(), ro.noise_pool)
    logp = reduce_logprob(subspace_logprob(x_next, step.mean, step.std, ro.noise_pool), ro.reduction)
    return TransitionEval(logp, v, x, *(z.float().to(x.device) for z in (ro.grid[s], ro.grid[s + 1] - ro.grid[s],
                                                                          ro.sigmas[s])))
