"""Shared pieces of the data-parallel tests: the tiny 16-px model, a stage launched by the CLI in one process or under
torchrun with gloo ranks, and the comparison of a data-parallel run with one process.

Tolerance: AdamW normalises each element's gradient (lr·m̂/(√v̂ + ε)), so an element whose true gradient is 0 (the
attention key biases: softmax is shift-invariant) steps by up to a few % of lr on pure rounding noise, which differs
between any two summation orders (here: batch shards). Those elements are only held to the largest AdamW step; all
others to 1 % of lr·steps, and the whole update Δw to 1 % (relative, Frobenius). A run whose ranks drew their own
noise, or whose gradients were not reduced, is off by O(1) in Δw; a gradient off by a constant factor (which Adam
hides in the weights) shows in the logged gradient norm, which is compared to 1e-5."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vidtune.runtime.distributed import free_port


def tiny_model(folder: Path) -> Path:
    """The tiny DiT of the data-parallel tests (4 frames of 16 px, patch 1×8×8), its output layer drawn so that the
    velocity is not 0, saved to ``folder``."""
    from vidtune.models.tiny import TinyConfig, TinyVideoPolicy

    torch.manual_seed(0)
    m = TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 8, 8), hidden=32, depth=2, heads=2, text_layers=1))
    with torch.no_grad():
        m.net.final.weight.normal_(std=0.05)
    return m.save_pretrained(folder)


def launch(stage: str, overrides: list[str], ranks: int) -> None:
    """``vidtune <stage> <overrides>`` in one process (``ranks`` = 1) or under torchrun with ``ranks`` processes
    (gloo on CPU), one thread each."""
    launcher = [sys.executable]
    if ranks > 1:
        launcher += ["-m", "torch.distributed.run", "--nproc_per_node", str(ranks), "--master_port", str(free_port())]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([*launcher, "-m", "vidtune.cli", stage, *overrides], capture_output=True, text=True,
                         env=env, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]


def weights(model_folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(model_folder / "model.safetensors")


def metrics(run_dir: Path) -> list[dict]:
    """The rows of metrics.jsonl without wall times and runtime bookkeeping."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time", "iter_time", "step_time", "runtime/"))}
            for r in rows]


def assert_same_metrics(single: list[dict], parallel: list[dict], rel: float = 1e-5) -> None:
    """Same rows and keys; numbers to ``rel`` (abs 1e-6 for values that are 0 up to rounding), text exactly."""
    assert [r["step"] for r in parallel] == [r["step"] for r in single]
    for one, many in zip(single, parallel):
        assert many.keys() == one.keys()
        for k, v in one.items():
            assert many[k] == (v if isinstance(v, str) else pytest.approx(v, rel=rel, abs=1e-6)), k


def key_bias(name: str, n: int) -> slice:
    """The attention key-bias entries of a parameter of ``n`` elements (k of the tiny DiT's kv projections, k of
    the text encoder's packed q/k/v); an empty slice for every other parameter."""
    if name.endswith("kv.bias"):
        return slice(0, n // 2)
    if name.endswith("in_proj_bias"):
        return slice(n // 3, 2 * n // 3)
    return slice(0, 0)


def assert_same_update(init: dict, single: dict, parallel: dict, lr: float, steps: int) -> None:
    """The data-parallel weights equal the single-process ones to the tolerance of the module docstring."""
    assert parallel.keys() == single.keys() == init.keys()
    d_single = torch.cat([(single[k] - init[k]).flatten() for k in init])
    d_parallel = torch.cat([(parallel[k] - init[k]).flatten() for k in init])
    assert float(d_single.abs().max()) > 0.5 * lr  # the weights did move (≈ lr per step)
    assert float((d_parallel - d_single).norm() / d_single.norm()) < 1e-2
    for name, w in single.items():
        diff = (parallel[name] - w).abs().flatten()
        keys = key_bias(name, diff.numel())
        assert bool((diff[keys] <= 2 * lr * steps).all()), name
        diff[keys] = 0.0
        assert float((diff - 1e-5 * w.abs().flatten()).max()) <= 0.01 * lr * steps, name
