"""MetricsWriter mirrors every scalar row to TensorBoard event files (run.tensorboard), read back here with
TensorBoard's own EventAccumulator; a resumed stage replaces the replayed steps instead of showing them twice."""

import time

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog

from vidtune.config import load_recipe
from vidtune.runlog import MetricsWriter, read_metrics, rewind_metrics, tensorboard_dir


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), …]} of every scalar event under ``log_dir``."""
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_scalars_are_written_with_their_step(tmp_path):
    w = MetricsWriter(tmp_path / "metrics.jsonl", "sft")
    for step in (5, 10, 15):
        w.log(step, loss=1.0 / step, grad_norm=torch.tensor(0.5 * step), psi_missing=step // 5,
              per_head=[1.0, 2.0], info={"a": 1}, note="text")
    got = scalars(tensorboard_dir(tmp_path / "metrics.jsonl", "sft"))
    assert tensorboard_dir(tmp_path / "metrics.jsonl", "sft") == tmp_path / "tensorboard" / "sft"
    assert set(got) == {"loss", "grad_norm", "psi_missing"}  # lists, dicts and strings are skipped
    for row in read_metrics(tmp_path / "metrics.jsonl", "sft"):
        for tag in got:
            assert dict(got[tag])[row["step"]] == pytest.approx(row[tag], rel=1e-6)
    assert [s for s, _ in got["loss"]] == [5, 10, 15]


def test_switch_off_writes_no_events(tmp_path):
    assert load_recipe(None).run.tensorboard is True
    assert load_recipe(None, ["run.tensorboard=false"]).run.tensorboard is False
    w = MetricsWriter(tmp_path / "metrics.jsonl", "dpo", tensorboard=False)
    w.log(1, loss=0.5)
    assert read_metrics(tmp_path / "metrics.jsonl", "dpo")[0]["loss"] == 0.5
    assert not (tmp_path / "tensorboard").exists()


def test_resume_replaces_replayed_steps(tmp_path):
    """Crash after step 4 with the checkpoint at step 2: the resumed writer's steps 3, 4 replace the old ones."""
    path = tmp_path / "metrics.jsonl"
    crashed = MetricsWriter(path, "grpo")
    for step in (1, 2, 3, 4):
        crashed.log(step, reward=float(step))
    del crashed
    time.sleep(1.01 - time.time() % 1)  # event files sort by their creation second, as across real sessions
    rewind_metrics(path, "grpo", 2)
    resumed = MetricsWriter(path, "grpo")
    for step in (3, 4):
        resumed.log(step, reward=10.0 * step)
    want = [(r["step"], r["reward"]) for r in read_metrics(path, "grpo")]
    assert want == [(1, 1.0), (2, 2.0), (3, 30.0), (4, 40.0)]
    assert scalars(tensorboard_dir(path, "grpo"))["reward"] == want
    first, second = sorted(tensorboard_dir(path, "grpo").glob("events.out.tfevents.*"))
    starts = [e.step for e in EventFileLoader(str(second)).Load() if e.session_log.status == SessionLog.START]
    assert starts == [3]  # purge_step: TensorBoard hides the crashed session's steps ≥ 3
    assert not any(e.HasField("session_log") for e in EventFileLoader(str(first)).Load())
