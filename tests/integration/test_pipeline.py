"""`vidtune run` end to end on a tiny random model: every stage, evals, report; resume after kill -9 equals an
uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


def tiny_overrides(model_dir: Path, out_dir: Path, name: str) -> list[str]:
    return [
        f"model.init={model_dir}", f"run.out_dir={out_dir}", f"run.name={name}", "run.threads=1",
        "world.frames=4", "world.size=16",
        "sft.steps=4", "sft.dataset_size=16", "sft.batch_size=4", "sft.ckpt_every=1", "sft.log_every=1",
        "grpo.iterations=3", "grpo.prompts_per_iter=2", "grpo.group_size=2", "grpo.rollout.steps=3",
        "grpo.prompt_pool=4", "grpo.ckpt_every=1",
        "dpo.steps=3", "dpo.batch_size=2", "dpo.pairs.n_prompts=2", "dpo.pairs.n_candidates=3",
        "dpo.pairs.n_synthetic_clips=2", "dpo.pairs.good_min=0.0", "dpo.pairs.synthetic=[reverse,shuffle]",
        "dpo.ckpt_every=1", "dpo.log_every=1", "dpo.min_pairs=1",
        "eval.n_seen=3", "eval.n_heldout=2", "eval.grid_prompts=2", "sampling.steps=3", "sampling.batch_size=8",
    ]


def vidtune(*args, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.Popen([sys.executable, "-m", "vidtune.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from vidtune.models.tiny import TinyConfig, TinyVideoPolicy
    import torch

    torch.manual_seed(0)
    m = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 8, 8), hidden=32, depth=2, heads=2, text_layers=1))
    with torch.no_grad():
        m.net.final.weight.normal_(std=0.05)  # not the zero-init identity, so stages have something to change
    return m.save_pretrained(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def uninterrupted(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    p = vidtune("run", *tiny_overrides(model_dir, out, "full"))
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 0, stderr[-3000:]
    return out / "full"


def test_run_writes_every_stage_eval_and_report(uninterrupted):
    for stage in ("base", "sft", "grpo", "dpo"):
        res = json.loads((uninterrupted / "evals" / f"{stage}.json").read_text())
        assert res["summary"]["verifier"]["n"] == 5
        assert (uninterrupted / "samples" / f"{stage}.gif").stat().st_size > 0
    assert (uninterrupted / "dpo" / "pairs.jsonl").read_text().strip()
    html = (uninterrupted / "report.html").read_text()
    assert html.count("data:image/gif;base64,") == 4 and "data:image/png;base64," in html
    stages = {json.loads(line)["stage"] for line in (uninterrupted / "metrics.jsonl").read_text().splitlines()}
    assert {"sft", "grpo", "dpo"} <= stages
    _assert_tensorboard_mirrors_metrics(uninterrupted)


def _assert_tensorboard_mirrors_metrics(run_dir: Path) -> None:
    """Every stage's TensorBoard events (as TensorBoard reads them, purges applied) hold exactly the steps and
    values of metrics.jsonl: once each, also after a kill and resume."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from vidtune.runlog import read_metrics

    for stage, tag in (("sft", "loss"), ("grpo", "reward"), ("dpo", "loss")):
        acc = EventAccumulator(str(run_dir / "tensorboard" / stage))
        acc.Reload()
        rows = read_metrics(run_dir / "metrics.jsonl", stage)
        assert [e.step for e in acc.Scalars(tag)] == [r["step"] for r in rows]
        assert [e.value for e in acc.Scalars(tag)] == pytest.approx([float(r[tag]) for r in rows], rel=1e-6,
                                                                     nan_ok=True)


def _final(run_dir: Path) -> dict:
    return {s: json.loads((run_dir / "evals" / f"{s}.json").read_text())["per_sample"]
            for s in ("base", "sft", "grpo", "dpo")}


@pytest.mark.parametrize("kill_after_rows", [3, 9])
def test_resume_after_kill_equals_uninterrupted(model_dir, uninterrupted, tmp_path, kill_after_rows):
    """Kill -9 once the metrics file holds ``kill_after_rows`` rows (inside SFT or GRPO), resume, compare."""
    name = f"killed{kill_after_rows}"
    p = vidtune("run", *tiny_overrides(model_dir, tmp_path, name))
    metrics = tmp_path / name / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and p.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= kill_after_rows:
            break
        time.sleep(0.05)
    assert p.poll() is None, "the run finished before it could be killed; lower kill_after_rows"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    r = vidtune("run", "--resume", str(tmp_path / name))
    _, stderr = r.communicate(timeout=600)
    assert r.returncode == 0, stderr[-3000:]
    assert _final(tmp_path / name) == _final(uninterrupted)
    _assert_tensorboard_mirrors_metrics(tmp_path / name)


def test_existing_run_dir_needs_resume(model_dir, uninterrupted):
    p = vidtune("run", *tiny_overrides(model_dir, uninterrupted.parent, "full"))
    _, stderr = p.communicate(timeout=120)
    assert p.returncode != 0 and "--resume" in stderr and "Traceback" not in stderr
