"""Fault injection for drills and tests: a wrapper that makes a reward crash, hang or fail transiently on its first
``times`` calls, then behave normally.

The call count lives in files under ``state_dir`` (a relaunched Ray worker is a fresh process and must still know
that the fault already happened). Every successful call appends one line per scored sample to
``state_dir/<tag>.ledger`` (``call <n> pid <pid> sample <i> <prompt>``), so a test can check that each sample of
a batch was scored exactly once by a successful call.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from vidtune.runtime.worker import RetryableRewardError

Mode = Literal["crash", "hang", "retryable"]


class FaultInjector:
    """Wraps ``reward``: on calls 1 … ``times`` it ``crash``es (the process exits at once, as after a segfault or an
    out-of-memory kill), ``hang``s (sleeps ``hang_s`` seconds, then answers), or raises :class:`RetryableRewardError`;
    later calls go to ``reward``. ``name``, ``range`` and the gate flags are the wrapped reward's."""

    def __init__(self, reward: Any, state_dir: str | Path, mode: Mode = "crash", times: int = 1,
                 hang_s: float = 60.0, tag: str | None = None) -> None:
        if mode not in ("crash", "hang", "retryable") or times < 0:
            raise ValueError(f"mode must be crash/hang/retryable and times >= 0, got {mode!r}, {times}")
        self.reward, self.mode, self.times, self.hang_s = reward, mode, times, hang_s
        self.state_dir = Path(state_dir)
        self.tag = tag or f"{getattr(reward, 'name', 'reward')}-{mode}"
        self.state_dir.mkdir(parents=True, exist_ok=True)

    def __getattr__(self, attr: str) -> Any:
        if attr == "reward":  # not yet set (unpickling): no recursion
            raise AttributeError(attr)
        return getattr(self.reward, attr)

    def _next_call(self) -> int:
        """Number this call 1, 2, … across processes (one marker file per call, created exclusively)."""
        n = 1
        while True:
            try:
                (self.state_dir / f"{self.tag}.call{n}").touch(exist_ok=False)
                return n
            except FileExistsError:
                n += 1

    def __call__(self, videos, prompts: list[str], **context: Any):
        n = self._next_call()
        if n <= self.times:
            if self.mode == "crash":
                os._exit(13)  # no cleanup, no exception: the worker process is simply gone
            if self.mode == "hang":
                time.sleep(self.hang_s)
            else:
                raise RetryableRewardError(f"injected transient failure on call {n}")
        out = self.reward(videos, prompts, **context)
        with open(self.state_dir / f"{self.tag}.ledger", "a") as f:
            f.writelines(f"call {n} pid {os.getpid()} sample {i} {p}\n" for i, p in enumerate(prompts))
        return out

    def ledger(self) -> list[str]:
        """Lines written by successful calls so far."""
        path = self.state_dir / f"{self.tag}.ledger"
        return path.read_text().splitlines() if path.exists() else []
