"""Between-stage diagnostics: reward-hacking divergence, reward saturation, drift from the reference."""

from __future__ import annotations

from typing import NamedTuple

import torch


class Alarm(NamedTuple):
    fired: bool
    message: str
    values: dict


def window_mean(series: list[float], k: int, tail: bool) -> float:
    vals = [v for v in series if v == v]
    if not vals:
        return float("nan")
    part = vals[-k:] if tail else vals[:k]
    return sum(part) / len(part)


def divergence_alarm(train_reward: list[float], heldout_before: float, heldout_after: float, k: int = 5,
                     tol: float = 0.02) -> Alarm:
    """Reward hacking: the training reward rises (mean of the last k logged values minus the first k > tol) while
    the held-out judge falls (after − before < −tol)."""
    d_train = window_mean(train_reward, k, True) - window_mean(train_reward, k, False)
    d_held = heldout_after - heldout_before
    fired = bool(d_train > tol and d_held < -tol)
    msg = (f"training reward {d_train:+.3f} while held-out judge {d_held:+.3f}: possible reward hacking" if fired
           else "training reward and held-out judge move together")
    return Alarm(fired, msg, {"train_reward_change": d_train, "heldout_change": d_held})


def saturation_alarm(group_std: list[float], k: int = 5, floor: float = 0.01) -> Alarm:
    """Reward saturation: the mean within-group reward std over the last k steps fell below ``floor`` (groups no
    longer rank their samples, so advantages vanish)."""
    last = window_mean(group_std, k, True)
    fired = bool(last == last and last < floor)
    return Alarm(fired, f"mean group std over the last {k} steps = {last:.4f}" + (" < floor: saturated" if fired
                                                                                else ""), {"group_std": last})


@torch.no_grad()
def velocity_drift(policy, reference, latents: torch.Tensor, t: torch.Tensor, cond: dict) -> float:
    """Mean squared difference of the two policies' velocities on fixed inputs (0 when identical)."""
    return float((policy.velocity(latents, t, cond) - reference.velocity(latents, t, cond)).square().mean())
