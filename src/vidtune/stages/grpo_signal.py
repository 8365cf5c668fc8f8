"""Stage II reward → advantage pipeline (ALGORITHMS.md §0 steps 3–6), composing the math modules.

Exactly one combination runs: single reward · self-paced curriculum (§5) · joint balancing (§6); then BPGO's CRT
and per-prompt advantages (§2.1) and BPGO's RAS scale (§3). ViPO (§4) is applied afterwards by the stage.
The mutable pieces (auto-k, EMA prior, curriculum statistics) live in :class:`SignalState`, which the stage
checkpoints so a resumed run continues identically.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch

from vidtune.config import GRPOConfig
from vidtune.math.advantages import group_advantages
from vidtune.math.bpgo import bpgo_advantages
from vidtune.math.bpgo_prior import EmaPrior, SharpnessState, ema_prior_update, ema_prior_values
from vidtune.math.min_norm import joint_advantage, weighted_head_advantages
from vidtune.math.self_paced import (CompetenceState, competence_init, competence_step, normalise_affine,
                                     percentile_bounds)
from vidtune.math.self_paced_taros import taros_step

COMPONENTS = ("visual", "temporal", "semantic")


@dataclass
class SignalState:
    k_state: SharpnessState = field(default_factory=SharpnessState)
    ema_prior: EmaPrior = field(default_factory=EmaPrior)
    curriculum: CompetenceState | None = None
    warmup_heads: list[torch.Tensor] = field(default_factory=list)  # [B, N] raw head scores of the warm-up
    head_bounds: tuple[torch.Tensor, torch.Tensor] | None = None  # frozen (lo, hi) [N] after the warm-up


class Signal(NamedTuple):
    advantages: torch.Tensor  # [B] A (after any BPGO scale); per head [B, N] when joint combine = loss
    aux: torch.Tensor | None  # [B] Ã (BPGO CRT term) or None
    valid: torch.Tensor  # [B] bool
    head_weights: torch.Tensor | None  # joint c (combine = loss), else None
    logs: dict[str, Any]


def curriculum_bounds(heads: torch.Tensor, cfg: GRPOConfig, state: SignalState) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalisation bounds (lo, hi) [N] of the curriculum's heads (ALGORITHMS.md §5, components): a head's
    configured ``lo``/``hi`` where given, else the 1st/99th percentiles (:func:`percentile_bounds`) of its scores over
    the warm-up's iterations so far, including this one (``heads`` [B, N]); after ``curriculum.warmup_steps``
    iterations they are frozen in ``state``. A head with no finite warm-up score falls back to [0, 1]."""
    if state.head_bounds is None:
        state.warmup_heads.append(heads.detach().cpu())
        q_lo, q_hi = percentile_bounds(torch.cat(state.warmup_heads))
        q_lo, q_hi = torch.nan_to_num(q_lo, nan=0.0), torch.nan_to_num(q_hi, nan=1.0)
        if len(state.warmup_heads) >= cfg.curriculum.warmup_steps:
            state.head_bounds, state.warmup_heads = (q_lo, q_hi), []
    else:
        q_lo, q_hi = state.head_bounds
    lo = torch.tensor([q_lo[i] if h.lo is None else h.lo for i, h in enumerate(cfg.reward.heads)])
    hi = torch.tensor([q_hi[i] if h.hi is None else h.hi for i, h in enumerate(cfg.reward.heads)])
    return lo, hi


def component_rewards(heads: torch.Tensor, cfg: GRPOConfig, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """[B, N] head scores → [B, 3] curriculum components in [0, 1]: the mean over each component's heads of
    :func:`normalise_affine` with the bounds ``lo``, ``hi`` [N] (:func:`curriculum_bounds`)."""
    cols = []
    for comp in COMPONENTS:
        idx = [i for i, h in enumerate(cfg.reward.heads) if h.component == comp]
        cols.append(torch.stack([normalise_affine(heads[:, i], lo[i], hi[i]) for i in idx], 1).mean(1))
    return torch.stack(cols, 1)


def compute_signal(heads: torch.Tensor, scalar: torch.Tensor, valid: torch.Tensor, prior: torch.Tensor | None,
                   state: SignalState, cfg: GRPOConfig) -> tuple[Signal, SignalState]:
    """heads [B, N] (gated), scalar [B] (fixed-weight sum), valid [B], prior [P] (BPGO) → advantages."""
    g = cfg.group_size
    p = scalar.numel() // g
    logs: dict[str, Any] = {}
    adv_kw = dict(mode=cfg.advantage, std_floor=cfg.std_floor, adv_clip=cfg.adv_clip)

    if cfg.curriculum.enabled:
        comps = component_rewards(heads, cfg, *curriculum_bounds(heads, cfg, state)).view(p, g, 3)
        if cfg.curriculum.rule == "competence":
            st = state.curriculum or competence_init(3, cfg.curriculum.tau_init)
            step = competence_step(st, comps, valid.view(p, g), scope=cfg.curriculum.scope,
                                   warmup_steps=cfg.curriculum.warmup_steps)
            state.curriculum = step.state
            logs |= curriculum_logs(step)
            reward = step.reward.reshape(-1)
        else:
            step = taros_step(comps, valid.view(p, g), tau=cfg.curriculum.tau_init, beta=cfg.curriculum.taros_beta)
            logs.update({f"curriculum/w_{c}": float(step.w.mean(0)[i]) for i, c in enumerate(COMPONENTS)})
            reward = step.reward.reshape(-1)
        ga = group_advantages(reward, g, valid=valid, **adv_kw)
        return Signal(ga.advantages, None, ga.valid, None, logs | _adv_logs(ga)), state

    if cfg.joint.enabled:
        per_head = torch.stack([group_advantages(heads[:, i], g, valid=valid, mode=cfg.advantage, adv_clip=1e9,
                                                 std_floor=cfg.std_floor).advantages
                                for i in range(heads.shape[1])], 1)
        weights = torch.tensor([h.weight for h in cfg.reward.heads])
        ja = joint_advantage(per_head, valid, mode=cfg.joint.mode, weights=weights, a_max=cfg.adv_clip)
        c = ja.c if ja.c.ndim == 1 else ja.c.mean(0)
        logs.update({f"joint/c_{i}": float(c[i]) for i in range(len(c))})
        logs.update({"joint/objective": float(ja.objective), "joint/norm": float(ja.norm),
                     "joint/iterations": ja.iterations, "joint/degenerate": int(ja.degenerate)})
        base = group_advantages(scalar, g, valid=valid, **adv_kw)
        ok = base.valid & valid
        if cfg.joint.combine == "loss":
            per_head_w = weighted_head_advantages(per_head, ja.c, ok, a_max=cfg.adv_clip)
            return Signal(per_head_w, None, ok, ja.c, logs | _adv_logs(base)), state
        return Signal(ja.advantage, None, ok, None, logs | _adv_logs(base)), state

    if cfg.bpgo.enabled:
        b = cfg.bpgo
        r0 = prior if b.prior != "ema" else ema_prior_values(state.ema_prior, p)
        ba = bpgo_advantages(scalar, r0, g, k_state=state.k_state, ras=b.ras, crt=b.crt, alpha=b.alpha,
                             k_mode=b.k_mode, k_target=b.k_target, k_fixed=b.k_fixed, lam=b.lam,
                             ras_scales_crt=b.ras_scales_crt, valid=valid, **adv_kw)
        state.k_state = ba.k_state
        if b.prior == "ema":
            state.ema_prior = ema_prior_update(state.ema_prior, ba.base.group_mean, momentum=b.ema_momentum)
        logs.update({"bpgo/w_mean": float(ba.weights.mean()), "bpgo/w_min": float(ba.weights.min()),
                     "bpgo/w_max": float(ba.weights.max()), "bpgo/k": ba.k, "bpgo/no_prior": ba.no_prior,
                     "bpgo/ras_saturated": ba.ras_saturated, "bpgo/crt_below_fraction": ba.crt_below_fraction,
                     "bpgo/delta_mean": float(torch.nanmean(ba.delta))})
        return Signal(ba.advantages, ba.aux_advantages, ba.base.valid, None, logs | _adv_logs(ba.base)), state

    ga = group_advantages(scalar, g, valid=valid, **adv_kw)
    return Signal(ga.advantages, None, ga.valid, None, logs | _adv_logs(ga)), state


def curriculum_logs(step) -> dict[str, Any]:
    """§5 "logged each step": w, c, d, u, m, sd, τ per component (means over groups under ``scope: group``), the
    phase (argmax w; the most frequent group phase under ``scope: group``) and the count of stale components."""
    logs: dict[str, Any] = {}
    for key in ("w", "c", "d", "u", "m", "sd", "tau"):
        v = getattr(step, key).reshape(-1, 3).float().mean(0)
        logs |= {f"curriculum/{key}_{c}": float(v[i]) for i, c in enumerate(COMPONENTS)}
    logs["curriculum/phase"] = COMPONENTS[int(step.phase.reshape(-1).mode().values)]
    logs["curriculum/stale"] = int(step.stale.sum())
    return logs


def _adv_logs(ga) -> dict[str, Any]:
    return {"degenerate_group": ga.degenerate_groups, "invalid_reward": ga.invalid_count,
            "adv_clipped_fraction": ga.clipped_fraction,
            "group_std_mean": float(torch.nan_to_num(ga.group_std).mean())}
