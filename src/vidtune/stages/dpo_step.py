"""One Diffusion-DPO step with the three backward schedules of ALGORITHMS.md §8.3.

``standard``: both branches forward with graph, one joint backward. ``retain``: both forward with graph, the
coefficients η from detached values, then backward winner and loser separately. ``recompute``: both forward
without graph (loss, η, metrics), then forward+backward the winner and forward+backward the loser, so at most one
branch's activations are alive. All three accumulate the same gradient (tested); the reference runs once per
branch without gradient. Winner and loser share t and ε (§8.1).
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch

from vidtune.math.dpo import DPOLoss, decoupled_coefficients, dpo_loss
from vidtune.math.flow_matching import interpolate, per_sample_mse, velocity_target

Schedule = Literal["standard", "retain", "recompute"]


class DPOBatch(NamedTuple):
    x0_w: torch.Tensor  # [N, C, F, H, W] winner latents
    x0_l: torch.Tensor  # loser latents
    cond: dict  # conditioning of the N prompts
    t: torch.Tensor  # [N] shared flow times
    eps: torch.Tensor  # [N, C, F, H, W] shared noise
    weights: torch.Tensor  # [N] ω


def branch_error(policy, x0: torch.Tensor, b: DPOBatch) -> torch.Tensor:
    """e^y = (1/D)·Σ (v(x_t^y, t, c) − (ε − x_0^y))² per pair → [N] (ALGORITHMS.md §8.1)."""
    return per_sample_mse(policy.velocity(interpolate(x0, b.eps, b.t), b.t, b.cond), velocity_target(x0, b.eps))


def dpo_step(policy, reference, b: DPOBatch, *, beta: float, beta_t: str = "constant",
             form: Literal["standard", "reference_free"] = "standard", schedule: Schedule = "recompute") -> DPOLoss:
    """Accumulate ∇L of the Diffusion-DPO loss into ``policy``'s .grad and return the loss terms (detached)."""
    e_ref_w = e_ref_l = None
    if form == "standard":
        with torch.no_grad():
            e_ref_w, e_ref_l = branch_error(reference, b.x0_w, b), branch_error(reference, b.x0_l, b)
    kw = dict(beta=beta, beta_t=beta_t, weights=b.weights, form=form)
    match schedule:
        case "standard":
            e_w, e_l = branch_error(policy, b.x0_w, b), branch_error(policy, b.x0_l, b)
            out = dpo_loss(e_w, e_l, b.t, e_ref_w, e_ref_l, **kw)
            out.loss.backward()
        case "retain":
            e_w, e_l = branch_error(policy, b.x0_w, b), branch_error(policy, b.x0_l, b)
            out = dpo_loss(e_w.detach(), e_l.detach(), b.t, e_ref_w, e_ref_l, **kw)
            co = decoupled_coefficients(out.z, b.t, **kw)
            (co.winner * e_w).sum().backward()
            (co.loser * e_l).sum().backward()
        case "recompute":
            with torch.no_grad():
                e_w, e_l = branch_error(policy, b.x0_w, b), branch_error(policy, b.x0_l, b)
            out = dpo_loss(e_w, e_l, b.t, e_ref_w, e_ref_l, **kw)
            co = decoupled_coefficients(out.z, b.t, **kw)
            (co.winner * branch_error(policy, b.x0_w, b)).sum().backward()
            (co.loser * branch_error(policy, b.x0_l, b)).sum().backward()
        case _:
            raise ValueError(f"unknown DPO backward schedule {schedule!r}")
    return DPOLoss(*(x.detach() if isinstance(x, torch.Tensor) else x for x in out))
