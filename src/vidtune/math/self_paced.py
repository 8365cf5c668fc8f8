"""Self-paced reward curriculum, project rule `competence` (ALGORITHMS.md §5).

Pure functions: the EMA/threshold state is an explicit `CompetenceState` passed in and returned. The published
alternative (`taros`) is in `vidtune.math.self_paced_taros`. fp32, or fp64 for fp64 input.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from vidtune.math.numerics import compute_dtype

Scope = Literal["batch", "group"]


def normalise_affine(r: Tensor, lo: Tensor | float, hi: Tensor | float) -> Tensor:
    """Component score → [0, 1] (ALGORITHMS.md §5, components): clip((r − lo_j)/(hi_j − lo_j), 0, 1).

    r: [..., J]; lo, hi: [J] or floats (configured bounds, or `percentile_bounds` of the warm-up scores, as
    stages/grpo_signal.curriculum_bounds does). hi ≤ lo degenerates to a step at lo (0 below, 1 above; 0 at
    r = lo). Non-finite r stays non-finite (invalid).
    """
    dt = compute_dtype(r)
    lo, hi = (torch.as_tensor(x, dtype=dt, device=r.device) for x in (lo, hi))
    span = torch.where(hi > lo, hi - lo, torch.full_like(hi - lo, torch.finfo(dt).tiny))
    return ((r.to(dt) - lo) / span).clamp(0.0, 1.0)


def percentile_bounds(scores: Tensor, low: float = 0.01, high: float = 0.99) -> tuple[Tensor, Tensor]:
    """(lo_j, hi_j) = (Q_0.01, Q_0.99) of a component's warm-up scores (ALGORITHMS.md §5, components without bounds).

    scores: [n, J], non-finite entries ignored (linear interpolation between order statistics). Returns two [J]
    tensors (NaN for a component without finite scores); freeze them after the warm-up.
    """
    dt = compute_dtype(scores)
    s = scores.to(dt)
    s = torch.where(torch.isfinite(s), s, torch.full_like(s, float("nan")))
    return torch.nanquantile(s, low, dim=0), torch.nanquantile(s, high, dim=0)


class CompetenceWeights(NamedTuple):
    w: Tensor  # component weights, [..., J], sum 1
    c: Tensor  # competence c_j
    d: Tensor  # discriminativeness d_j
    u: Tensor  # done-ness u_j
    logit: Tensor  # logit_j
    phase: Tensor  # argmax_j w_j, [...] int64


def competence_weights(
    m: Tensor, sd: Tensor, tau: Tensor | float, *, s_c: float = 20.0, sd0: float = 0.02, n_h: float = 4.0,
    eps_w: float = 1e-6, delta: float = 0.05, gamma: float = 1.0, temperature: float = 1.0,
) -> CompetenceWeights:
    """Curriculum weights of the project rule (ALGORITHMS.md §5, `curriculum.rule: competence`).

    m: m_j, sd: sd_j, [..., J] (J ordered components; leading dims = groups for scope `group`); tau: τ_j, [J] or float.
        c_j = sigmoid(s_c·(m_j − τ_j));  d_j = 1/(1 + (sd0/sd_j)^n_h) = sd_j^n_h/(sd_j^n_h + sd0^n_h)  (0 at sd_j = 0)
        u_j = 1 − (1 − c_j)·d_j;  logit_j = log(Π_{i<j} u_i + ε_w) + log(1 − u_j + δ) + γ·d_j
        w = softmax(logit / T_w);  phase = argmax_j w_j
    Limits: with d ≡ 1, logit_j = log(Π_{i<j} c_i + ε_w) + log(1 − c_j + δ) + γ; all components done → w ≈ uniform.
    """
    dt = compute_dtype(m)
    m, sd = m.to(dt), sd.to(dt)
    tau = torch.as_tensor(tau, dtype=dt, device=m.device)
    c = torch.sigmoid(s_c * (m - tau))
    p = sd.clamp_min(0) ** n_h
    d = p / (p + sd0**n_h)
    u = 1.0 - (1.0 - c) * d
    prefix = torch.cumprod(torch.cat([torch.ones_like(u[..., :1]), u[..., :-1]], dim=-1), dim=-1)
    logit = torch.log(prefix + eps_w) + torch.log(1.0 - u + delta) + gamma * d
    w = torch.softmax(logit / temperature, dim=-1)
    return CompetenceWeights(w, c, d, u, logit, w.argmax(dim=-1))


class CompetenceState(NamedTuple):
    step: int  # rollout batches seen
    m: Tensor  # EMA of the batch mean m_j, [J] (0 until first seen)
    sd: Tensor  # EMA of the mean within-group spread sd_j, [J] (0 until first seen)
    seen_m: Tensor  # [J] bool, m_j initialised (the EMA starts from the first value)
    seen_sd: Tensor  # [J] bool
    tau: Tensor  # thresholds τ_j, [J]
    collected: Tensor  # warm-up per-group means R̄_{p,j}, [n, J] (NaN where a group had no valid score)
    frozen: bool  # τ frozen after the warm-up


def competence_init(num_components: int = 3, tau_init: float = 0.75, dtype: torch.dtype = torch.float32,
                    ) -> CompetenceState:
    """Initial `CompetenceState` (ALGORITHMS.md §5): τ_j = τ_init, no statistics, nothing collected."""
    z = torch.zeros(num_components, dtype=dtype)
    no = torch.zeros(num_components, dtype=torch.bool)
    return CompetenceState(0, z, z.clone(), no, no.clone(), torch.full_like(z, tau_init),
                           torch.zeros(0, num_components, dtype=dtype), False)


def group_moments(r: Tensor, ok: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-group mean and unbiased std over valid entries: r, ok [P, G, J] → (mean [P, J] NaN if none valid,
    std_u [P, J] NaN if < 2 valid, count [P, J])."""
    n = ok.sum(dim=1).to(r.dtype)
    x = torch.where(ok, r, torch.zeros((), dtype=r.dtype, device=r.device))
    mean = x.sum(dim=1) / n
    var = torch.where(ok, (x - mean[:, None]) ** 2, torch.zeros((), dtype=r.dtype, device=r.device)).sum(1) / (n - 1)
    nan = torch.full_like(mean, float("nan"))
    return torch.where(n > 0, mean, nan), torch.where(n > 1, var.clamp_min(0).sqrt(), nan), n


class CurriculumStep(NamedTuple):
    reward: Tensor  # r̃ = Σ_j w_j·r_j, [P, G] (non-finite where any component is; §2.1 then marks it invalid)
    w: Tensor  # [J] (scope batch) or [P, J] (scope group)
    c: Tensor
    d: Tensor
    u: Tensor
    m: Tensor  # statistics the weights used: EMA [J] (batch) or per-group [P, J] (group)
    sd: Tensor
    tau: Tensor  # τ_j used this step, [J]
    phase: Tensor  # argmax_j w_j: 0-d (batch) or [P] (group), int64
    stale: Tensor  # [J] bool: component kept previous EMA statistics (no valid score / no group with ≥ 2) — counted
    state: CompetenceState  # state for the next step


def competence_step(
    state: CompetenceState, rewards: Tensor, valid: Tensor | None = None, *, scope: Scope = "batch",
    momentum: float = 0.8, warmup_steps: int = 20, quantile: float = 0.9, tau_lo: float = 0.5, tau_hi: float = 0.95,
    s_c: float = 20.0, sd0: float = 0.02, n_h: float = 4.0, eps_w: float = 1e-6, delta: float = 0.05,
    gamma: float = 1.0, temperature: float = 1.0,
) -> CurriculumStep:
    """One step of the self-paced curriculum, project rule (ALGORITHMS.md §5, statistics + thresholds + scope).

    rewards: r_{p,g,j} normalised to [0, 1], [P, G, J]; valid: [P, G] bool (non-finite entries are invalid too).
    m_j = mean of valid r_{·,j}; sd_j = mean over groups with ≥ 2 valid of std_u(r_{p,·,j}); each EMA'd with
    momentum μ_c (ema ← μ·ema + (1−μ)·x, first value taken as is); a component without data keeps its EMA (stale).
    τ_j = τ_init for the first N_w = warmup_steps steps while R̄_{p,j} are collected; after step N_w the thresholds
    become clip(Q_q(collected R̄_{·,j}), τ_lo, τ_hi) and stay frozen (τ_init kept for a component never seen).
    scope batch: `competence_weights` of the EMA statistics; group: per prompt from that group's raw m, sd (falling
    back to this step's batch values, then the EMA, for a group with < 1 / < 2 valid scores).
    """
    dt = compute_dtype(rewards)
    r = rewards.to(dt)
    ok = torch.isfinite(r) if valid is None else torch.isfinite(r) & valid.to(torch.bool)[..., None]
    g_mean, g_std, n = group_moments(r, ok)
    has_m, has_sd = n.sum(0) > 0, (n > 1).any(0)
    m_now = torch.where(ok, r, torch.zeros((), dtype=dt, device=r.device)).sum((0, 1)) / n.sum(0).clamp_min(1)
    sd_now = torch.nan_to_num(g_std).sum(0) / (n > 1).sum(0).clamp_min(1)

    def ema(old: Tensor, new: Tensor, seen: Tensor, has: Tensor) -> Tensor:
        old, seen = old.to(device=r.device, dtype=dt), seen.to(r.device)
        return torch.where(has, torch.where(seen, momentum * old + (1 - momentum) * new, new), old)

    m_ema, sd_ema = ema(state.m, m_now, state.seen_m, has_m), ema(state.sd, sd_now, state.seen_sd, has_sd)
    tau = state.tau.to(device=r.device, dtype=dt)
    kw = dict(s_c=s_c, sd0=sd0, n_h=n_h, eps_w=eps_w, delta=delta, gamma=gamma, temperature=temperature)
    match scope:
        case "batch":
            m_use, sd_use = m_ema, sd_ema
        case "group":
            m_use = torch.where(torch.isnan(g_mean), torch.where(has_m, m_now, m_ema), g_mean)
            sd_use = torch.where(torch.isnan(g_std), torch.where(has_sd, sd_now, sd_ema), g_std)
        case _:
            raise ValueError(f"curriculum.scope must be 'batch' or 'group', got {scope!r}")
    cw = competence_weights(m_use, sd_use, tau, **kw)
    w_b = cw.w if scope == "group" else cw.w.expand(r.shape[0], -1)
    reward = (r * w_b[:, None, :]).sum(-1)
    collected, frozen, tau_next = state.collected, state.frozen, tau
    if not frozen:
        if state.step < warmup_steps:
            collected = torch.cat([collected.to(device=r.device, dtype=dt), g_mean])
        if state.step + 1 >= warmup_steps:
            q = torch.nanquantile(collected, quantile, dim=0) if collected.shape[0] else torch.full_like(tau, torch.nan)
            tau_next, frozen = torch.where(torch.isnan(q), tau, q.clamp(tau_lo, tau_hi)), True
    new = CompetenceState(state.step + 1, m_ema, sd_ema, state.seen_m.to(r.device) | has_m,
                          state.seen_sd.to(r.device) | has_sd, tau_next, collected, frozen)
    return CurriculumStep(reward, cw.w, cw.c, cw.d, cw.u, m_use, sd_use, tau, cw.phase, ~(has_m & has_sd), new)
