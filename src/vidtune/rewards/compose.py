"""Reward composition: gates first, then per-head scores and their fixed-weight sum (ALGORITHMS.md §6.4, §0).

``build(rewards, gates)`` instantiates :class:`RewardSpec` / :class:`GateSpec` entries from the registry;
``compose(composite, videos, prompts)`` returns heads [B, N] (the per-component scores the self-paced curriculum, §5,
and joint balancing, §6, consume), the scalar Σ_i w_i·r_i (single/fixed mode), the gate mask and counters.

Gates (§6.4): gate k fails a sample when its reward's own predicate (``RewardOutput.gate_failed``) says so or its
score is below ``min_score``. A gate that raises, or returns a non-finite score, fails closed (``fail_closed``; safety
gates always). A sample failing any gate has every head and its scalar set to the smallest floor among its failed
gates; ``gate/<label>/failed`` counts them. Non-finite head scores stay NaN (the sample is invalid, §0); a reward
returning the wrong batch size is a hard error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch
from torch import Tensor

from vidtune.errors import ConfigError, VidtuneError
from vidtune.rewards.base import Reward, build_reward, check_inputs
from vidtune.types import RewardOutput


@dataclass(frozen=True)
class RewardSpec:
    name: str  # registry name
    kwargs: Mapping[str, Any] = field(default_factory=dict)  # factory arguments
    weight: float = 1.0  # w_i ≥ 0 in the scalar Σ_i w_i·r_i (0 = monitored head only)
    label: str | None = None  # head name (default: name); unique

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]):
        """Build from a recipe mapping; unknown keys are a ConfigError naming them."""
        bad = sorted(set(d) - {f.name for f in fields(cls)})
        if bad:
            raise ConfigError(f"{cls.__name__}: unknown key(s) {bad}; valid: {[f.name for f in fields(cls)]}")
        return cls(**d)


@dataclass(frozen=True)
class GateSpec:
    name: str  # registry name
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    floor: float | None = None  # f_k; None = smallest lower bound of the heads' ranges (failures rank last)
    min_score: float | None = None  # extra predicate: fail when score < min_score (any reward can gate with it)
    fail_closed: bool = True  # error / non-finite score → fail (safety gates cannot turn this off)
    label: str | None = None

    from_dict = classmethod(RewardSpec.from_dict.__func__)


@dataclass
class Composite:
    """Built heads and gates (the output of :func:`build`)."""

    heads: list[tuple[str, float, Reward]]  # (label, weight, reward)
    gates: list[tuple[str, GateSpec, Reward, float]]  # (label, spec, reward, floor)

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(label for label, _, _ in self.heads)


def _labels(specs: Sequence[RewardSpec | GateSpec], kind: str) -> list[str]:
    labels = [s.label or s.name for s in specs]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ConfigError(f"{kind} labels must be unique; repeated: {dup} (set 'label' to tell them apart)")
    return labels


def build(rewards: Sequence[RewardSpec], gates: Sequence[GateSpec] = ()) -> Composite:
    """Instantiate heads and gates from the registry, checking weights, floors and pass predicates up front."""
    if not rewards:
        raise ConfigError("compose: at least one reward head is required")
    heads = []
    for label, s in zip(_labels(rewards, "reward"), rewards):
        if not (math.isfinite(s.weight) and s.weight >= 0):
            raise ConfigError(f"reward '{label}': weight must be finite and ≥ 0, got {s.weight!r}")
        heads.append((label, float(s.weight), build_reward(s.name, **dict(s.kwargs))))
    lowest = min(float(r.range[0]) for _, _, r in heads)
    built = []
    for label, g in zip(_labels(gates, "gate"), gates):
        reward = build_reward(g.name, **dict(g.kwargs))
        if not getattr(reward, "is_gate", False) and g.min_score is None:
            raise ConfigError(f"gate '{label}': reward '{g.name}' has no pass predicate; set min_score")
        if getattr(reward, "always_fail_closed", False) and not g.fail_closed:
            raise ConfigError(f"gate '{label}': '{g.name}' is a safety gate, it always fails closed; drop fail_closed")
        floor = lowest if g.floor is None else float(g.floor)
        if not math.isfinite(floor):
            raise ConfigError(f"gate '{label}': floor must be finite, got {g.floor!r}")
        built.append((label, g, reward, floor))
    return Composite(heads, built)


class Composition(NamedTuple):
    heads: Tensor  # [B, N] per-head scores after gating (NaN = invalid sample)
    scalar: Tensor  # [B] Σ_i w_i·r_i after gating
    head_names: tuple[str, ...]
    gate_failed: Tensor  # [B] bool, failed any gate
    floor: Tensor  # [B] floor applied (NaN where no gate failed)
    counters: dict[str, int]  # gate/<label>/{failed,error,nonfinite}, head/<label>/nonfinite, gated, invalid_reward
    outputs: dict[str, RewardOutput]  # raw outputs by label (heads and gates: details, maps)
    errors: dict[str, str]  # gate label → the exception a gate raised (it failed closed or was skipped)


def _scores(label: str, out: RewardOutput, b: int) -> Tensor:
    s = torch.as_tensor(out.scores).detach().float().cpu().reshape(-1)
    if s.numel() != b:
        raise VidtuneError(f"reward '{label}' returned {s.numel()} scores for a batch of {b}")
    return s


def gate_decision(scores: Tensor, own_failed: Tensor | None, min_score: float | None, fail_closed: bool) -> Tensor:
    """ALGORITHMS.md §6.4 pass predicate → failed [B]: the reward's own flag, or score < min_score; a non-finite
    score fails when ``fail_closed`` and passes otherwise."""
    failed = torch.zeros(scores.shape, dtype=torch.bool) if own_failed is None else own_failed.reshape(-1).bool()
    if min_score is not None:
        failed |= scores < min_score
    bad = ~torch.isfinite(scores)
    return failed | bad if fail_closed else failed & ~bad


def apply_gates(heads: Tensor, scalar: Tensor, failed: Tensor, floors: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """ALGORITHMS.md §6.4: rows of ``heads`` [B, N] and ``scalar`` [B] that fail any gate (``failed`` [B, K]) take
    the smallest floor among their failed gates (``floors`` [K]). Returns (heads, scalar, floor [B], NaN = none)."""
    floor = torch.where(failed, floors.to(heads.dtype)[None, :], torch.full_like(failed, math.inf, dtype=heads.dtype))
    floor = floor.amin(1) if failed.shape[1] else torch.full_like(scalar, math.inf)
    hit = torch.isfinite(floor)
    floor = torch.where(hit, floor, torch.full_like(floor, math.nan))
    return torch.where(hit[:, None], floor[:, None], heads), torch.where(hit, floor, scalar), floor


def compose(composite: Composite, videos: Tensor, prompts: list[str], **context: Any) -> Composition:
    """Run gates, then heads; gate, sum and count (module doc). Bad input raises before any reward runs."""
    check_inputs(videos, prompts, "compose")
    b, counters, outputs, errors = len(prompts), {}, {}, {}
    failed = torch.zeros(b, len(composite.gates), dtype=torch.bool)
    for k, (label, spec, reward, _) in enumerate(composite.gates):
        try:
            out = reward(videos, prompts, **context)
        except Exception as e:  # noqa: BLE001 — a gate that errors fails closed (§6.4)
            errors[label] = f"{type(e).__name__}: {e}"
            counters[f"gate/{label}/error"] = 1
            failed[:, k] = spec.fail_closed or getattr(reward, "always_fail_closed", False)
        else:
            s = _scores(label, out, b)
            outputs[label] = out
            counters[f"gate/{label}/nonfinite"] = int((~torch.isfinite(s)).sum())
            failed[:, k] = gate_decision(s, out.gate_failed, spec.min_score, spec.fail_closed)
        counters[f"gate/{label}/failed"] = int(failed[:, k].sum())
    cols = []
    for label, _, reward in composite.heads:
        outputs[label] = reward(videos, prompts, **context)
        cols.append(_scores(label, outputs[label], b))
        counters[f"head/{label}/nonfinite"] = int((~torch.isfinite(cols[-1])).sum())
    heads = torch.stack(cols, 1)
    w = torch.tensor([wt for _, wt, _ in composite.heads])
    scalar = (heads[:, w > 0] * w[w > 0]).sum(1) if bool((w > 0).any()) else torch.zeros(b)
    floors = torch.tensor([f for *_, f in composite.gates], dtype=torch.float32)
    heads, scalar, floor = apply_gates(heads, scalar, failed, floors)
    counters["gated"] = int(failed.any(1).sum())
    counters["invalid_reward"] = int((~torch.isfinite(scalar)).sum())
    return Composition(heads, scalar, composite.head_names, failed.any(1), floor, counters, outputs, errors)
