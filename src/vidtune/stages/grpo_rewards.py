"""The reward stage of a GRPO iteration, in one process or across the ranks of a data-parallel job.

Every rank needs the whole batch's rewards (the signal is computed on the whole batch, stages/grpo_signal.py). Two
ways to get them:

* ``runtime: local``: each rank scores its own rollouts in its own process (the reward stage runs on all ranks in
  parallel) and the per-sample scores are all-gathered (:func:`score_shards`).
* ``runtime: ray``: there is one reward pool, on rank 0's Ray cluster (DESIGN.md §5: one pool of workers shared by
  the job). Every rank sends its videos to rank 0, which scores the whole batch at once and sends the scores back
  (:func:`score_on_lead`). The reward workers see the batch exactly as in one process, and one pool serves the
  job instead of one Ray cluster per rank.

Both return :class:`BatchScores` of the whole batch, identical on every rank.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from vidtune.runtime.distributed import broadcast_object, gather_objects, gather_rows


class BatchScores(NamedTuple):
    heads: torch.Tensor  # [B, N] per-head scores of the whole batch after gating (NaN = invalid)
    scalar: torch.Tensor  # [B] combined scores after gating
    head_names: tuple[str, ...]
    counters: dict[str, int]  # reward-stage counters of the whole batch (rewards/compose.py)
    logs: dict  # the pool's runtime logs (runtime/reward_pool.py), rank 0's under a shared pool


def merge_counters(parts: list[dict[str, int]]) -> dict[str, int]:
    """The reward-stage counters of the whole batch from the ranks' (rewards/compose.py): counts add up; a gate's
    ``error`` flag (1 when it raised on a rank's batch) is 1 when it raised on any rank."""
    out: dict[str, int] = {}
    for part in parts:
        for k, v in part.items():
            out[k] = max(out.get(k, 0), v) if k.endswith("/error") else out.get(k, 0) + v
    return out


def score_shards(pool, videos: torch.Tensor, prompts: list[str]) -> BatchScores:
    """This rank's rollouts scored by its own ``pool``, the scores all-gathered in rank order (one process: the batch
    itself). A collective: every rank calls it with its equal shard."""
    c = pool(videos, prompts)
    return BatchScores(gather_rows(c.heads), gather_rows(c.scalar), c.head_names,
                       merge_counters(gather_objects(c.counters)), dict(pool.last_logs))


def score_on_lead(pool, videos: torch.Tensor, prompts: list[str], lead: bool) -> BatchScores:
    """The whole batch scored by rank 0's ``pool`` (``None`` on the other ranks): the ranks' videos and prompts are
    gathered in rank order, rank 0 scores them in one call and every rank receives the result. A collective."""
    all_videos, all_prompts = gather_rows(videos), [p for part in gather_objects(list(prompts)) for p in part]
    out = None
    if lead:
        c = pool(all_videos, all_prompts)
        out = BatchScores(c.heads, c.scalar, c.head_names, dict(c.counters), dict(pool.last_logs))
    return broadcast_object(out)
