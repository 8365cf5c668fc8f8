"""BPGO priors that need no rollouts, and the record that ties a stored prior to its reward (ALGORITHMS.md §3).

``i2v_static_frame``: the training reward of each prompt's conditioning frame held still for the clip length. The
rollout-based ``t2v_reference`` prior lives with the rollouts (stages/grpo.reference_prior); the ``ema`` prior is
part of the signal state (math/bpgo_prior.py). A prior is stored with :func:`prior_record`; a run that resumes with
a different reward, prior kind or sampler refuses to use it (:func:`check_prior_record`).
"""

from __future__ import annotations

import json
from importlib.metadata import version
from typing import Any, Callable

import torch

from vidtune.config import GRPOConfig
from vidtune.errors import VidtuneError


def static_frame_prior(rewarder: Callable, prompts: list[str], images: torch.Tensor, n_frames: int,
                       batch: int = 32) -> torch.Tensor:
    """§3 ``i2v_static_frame`` prior R⁰_p: the training reward of the clip that repeats prompt p's conditioning frame
    ``images[p]`` ([P, 3, H, W] in [0, 1], at the training resolution) for ``n_frames`` frames. NaN where the reward
    is NaN (that prompt then has no usable prior: w_p = 1, no CRT term, counted as bpgo/no_prior).
    Biased low for motion-sensitive rewards (a still clip shows no motion), as §3 warns. ``rewarder(videos,
    prompts)`` returns a composition with ``scalar`` [B] (a reward pool); scored ``batch`` clips at a time."""
    if images.ndim != 4 or images.shape[1] != 3 or len(images) != len(prompts):
        raise VidtuneError(f"static-frame prior: need {len(prompts)} first frames [P, 3, H, W], got "
                           f"{tuple(images.shape)}")
    out = []
    for a in range(0, len(prompts), batch):
        clips = images[a:a + batch, None].expand(-1, n_frames, -1, -1, -1).contiguous()
        out.append(rewarder(clips, prompts[a:a + batch]).scalar.float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def prior_record(cfg: GRPOConfig) -> dict[str, Any]:
    """What a stored prior depends on: its kind, the training reward (heads, gates, their options) and, for the
    sampled prior, the rollout sampler and n_prior, plus the vidtune version that scored it."""
    rec: dict[str, Any] = {"prior": cfg.bpgo.prior, "reward": cfg.reward.model_dump(mode="json"),
                           "vidtune": version("vidtune")}
    if cfg.bpgo.prior == "t2v_reference":
        rec |= {"n_prior": cfg.bpgo.n_prior, "rollout": cfg.rollout.model_dump(mode="json")}
    return rec


def check_prior_record(stored: dict[str, Any] | None, current: dict[str, Any]) -> None:
    """§3: "a mismatch with the training reward is an error". Raises naming the fields that differ; a checkpoint
    without a record (written before records existed) is accepted."""
    if stored is None or stored == current:
        return
    diff = sorted(k for k in stored.keys() | current.keys() if stored.get(k) != current.get(k))
    detail = "; ".join(f"{k}: stored {json.dumps(stored.get(k))[:200]}, now {json.dumps(current.get(k))[:200]}"
                       for k in diff)
    raise VidtuneError(f"the checkpoint's BPGO prior was built for another reward or sampler ({detail}); "
                       "resume with the recipe it was built with, or start a new run directory")
