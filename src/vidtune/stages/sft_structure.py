"""Stage I structure scores of the model's own reconstruction (ALGORITHMS.md §7.2, ``source: reconstruction``).

ψ_b is the structural-instability score (metrics/structure.py, estimated flow, no object masks) of the one-step
prediction x̂_0 = x_t − t·v_θ(x_t, t, c) at t = ``recon_t`` (0.3), without gradient and decoded to pixels. The SFT
loop refreshes every clip's ψ every ``refresh_every`` steps (default one epoch); ψ̂'s percentiles come from a rolling
window of the most recent ``window`` scores (:class:`RollingScores`). Where the ``target`` source ranks how demanding
a clean clip is, this one up-weights the clips the model currently renders with geometric drift.
"""

from __future__ import annotations

import math
from collections import deque

import torch

from vidtune.math.flow_matching import interpolate, x0_from_velocity
from vidtune.math.structure_weights import ScorePercentiles, score_percentiles
from vidtune.metrics.structure import structural_instability
from vidtune.progress import track


def refresh_interval(n_clips: int, batch_size: int, refresh_every: int | None) -> int:
    """Steps between refreshes: ``refresh_every``, or one epoch ⌈n_clips / batch_size⌉ when unset."""
    return refresh_every if refresh_every is not None else max(1, math.ceil(n_clips / batch_size))


@torch.no_grad()
def one_step_reconstruction(policy, video: torch.Tensor, texts: list[str], t: float,
                            generator: torch.Generator) -> torch.Tensor:
    """§7.2: the decoded one-step prediction x̂_0 = x_t − t·v_θ(x_t, t, c), x_t = (1 − t)·x_0 + t·ε, of pixel clips
    ``video`` [B, F, 3, H, W] in [0, 1] → [B, F, 3, H, W] in [0, 1] (ε drawn from ``generator`` on the CPU)."""
    x0 = policy.encode_video(video.to(policy.device))
    eps = torch.randn(x0.shape, generator=generator).to(x0)
    tt = torch.full((len(x0),), t, device=x0.device)
    xt = interpolate(x0, eps, tt)
    v = policy.velocity(xt, tt, policy.encode_prompts(texts))
    return policy.decode(x0_from_velocity(xt, v.to(xt.dtype), tt)).float().clamp(0, 1).cpu()


def reconstruction_scores(policy, bank: torch.Tensor, texts: list[str], *, t: float, w_bg: float, w_obj: float,
                          seed: int, batch: int = 32, progress: bool = False) -> torch.Tensor:
    """ψ [N] of every clip of ``bank`` (uint8 [N, F, 3, H, W]) from the model's one-step reconstruction; the noise of
    clip i depends on (seed, i) only. Non-finite predictions give NaN (ψ̂ = 0, counted by the weights)."""
    was_training = policy.training
    policy.eval()
    out = []
    for a in track(range(0, len(bank), batch), "structure: reconstructions", disable=not progress):
        g = torch.Generator().manual_seed(seed * 1_000_003 + a)
        rec = one_step_reconstruction(policy, bank[a:a + batch].float() / 255.0, texts[a:a + batch], t, g)
        out += [structural_instability(r, None, w_bg, w_obj) if bool(torch.isfinite(r).all()) else math.nan
                for r in rec]
    policy.train(was_training)
    return torch.tensor(out, dtype=torch.float32)


class RollingScores:
    """The rolling window of the most recent ``size`` ψ scores whose percentiles normalise ψ (§7.2)."""

    def __init__(self, size: int = 1000, scores: list[float] | None = None) -> None:
        self.scores: deque[float] = deque(scores or [], maxlen=size)

    def add(self, psi: torch.Tensor) -> ScorePercentiles:
        self.scores.extend(psi.tolist())
        return score_percentiles(list(self.scores))
