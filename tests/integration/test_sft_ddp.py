"""Data-parallel Stage I: `torchrun --nproc_per_node 2 -m vidtune.cli sft` (2 gloo ranks, each on its half of the
global batch, stopped after one step and resumed) exports the weights and logs the metrics of one process.

Tolerance: AdamW normalises each element's gradient (lr·m̂/(√v̂ + ε)), so an element whose true gradient is 0 (the
attention key biases: softmax is shift-invariant) steps by up to a few % of lr on pure rounding noise, which differs
between any two summation orders. Measured (2 steps, lr 1e-4): all but 2 of ~90k elements within rtol 1e-5 /
atol 1e-6, the worst (key biases) 1.9e-6 off, and the update Δw off by 1.2e-4 relative (Frobenius)."""

import json
from pathlib import Path

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.runtime.distributed import World
from vidtune.stages.sft import check_data_parallel
from tests.integration.data_parallel import launch, tiny_model, weights


def _overrides(model_dir: Path, out_dir: Path, name: str, steps: int) -> list[str]:
    """Tiny SFT: 4 × 16 × 16 clips, global batch 4, lr 1e-4 from the first step (no warm-up)."""
    return [f"model.init={model_dir}", f"run.out_dir={out_dir}", f"run.name={name}", "run.threads=1",
            "world.frames=4", "world.size=16", f"sft.steps={steps}", "sft.dataset_size=16", "sft.batch_size=4",
            "sft.lr=1e-4", "sft.warmup=0", "sft.log_every=1", "sft.ckpt_every=1", "run.tensorboard=false"]


def _metrics(run_dir: Path) -> list[tuple[int, float, float]]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["grad_norm"]) for r in rows]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_two_ranks_with_resume_equal_one_process(model_dir, tmp_path, parallel):
    """DDP runs with the counterfactual contrastive term on (its negatives are sharded with the rows too)."""
    extra = ["sft.contrastive_lambda=0.2"] if parallel == "ddp" else []
    launch("sft", [*_overrides(model_dir, tmp_path, "single", 2), *extra], ranks=1)
    ddp = tmp_path / "ddp"
    strategy = f"run.parallel={parallel}"
    launch("sft", [*_overrides(model_dir, tmp_path, "ddp", 1), strategy, *extra], ranks=2)
    first = json.loads((ddp / "metrics.jsonl").read_text())
    assert first["step"] == 1  # rank 0 alone logs
    assert ("counterfactual_error" in first) == bool(extra)
    launch("sft", [*_overrides(model_dir, tmp_path, "ddp", 2), strategy, *extra], ranks=2)  # resumes from step 1

    single, parallel = weights(tmp_path / "single" / "sft" / "model"), weights(ddp / "sft" / "model")
    init = weights(model_dir)
    assert parallel.keys() == single.keys()
    d_single = torch.cat([(single[k] - init[k]).flatten() for k in init])
    d_parallel = torch.cat([(parallel[k] - init[k]).flatten() for k in init])
    assert float(d_single.abs().max()) > 1e-4  # the weights did move (≈ lr per step)
    assert float((d_parallel - d_single).norm() / d_single.norm()) < 1e-3
    for name, w in single.items():  # atol: 2.5 % of lr·steps, the most an Adam step on a zero gradient can differ
        torch.testing.assert_close(parallel[name], w, rtol=1e-5, atol=5e-6, msg=lambda m, n=name: f"{n}: {m}")
    for (s, loss, gnorm), (sp, lossp, gnormp) in zip(_metrics(tmp_path / "single"), _metrics(ddp), strict=True):
        assert s == sp and lossp == pytest.approx(loss, rel=1e-5) and gnormp == pytest.approx(gnorm, rel=1e-5)


def test_data_parallel_needs_an_even_batch():
    check_data_parallel(load_recipe(None, ["sft.batch_size=3"]), World(0, 1, 0))  # one process: anything goes
    with pytest.raises(VidtuneError, match="sft.batch_size=3 does not split"):
        check_data_parallel(load_recipe(None, ["sft.batch_size=3"]), World(1, 2, 1))
    # Wan: test_wan_ddp.py
    check_data_parallel(load_recipe(None, ["model.type=wan", "model.hub_id=x/y"]), World(0, 2, 0))


def test_fsdp_checkpoint_resumes_in_one_process(model_dir, tmp_path):
    """Step 1 under FSDP (name-keyed optimiser state, gathered from the shards), step 2 in one process: the weights of
    an uninterrupted single-process run."""
    launch("sft", _overrides(model_dir, tmp_path, "single", 2), ranks=1)
    launch("sft", [*_overrides(model_dir, tmp_path, "mixed", 1), "run.parallel=fsdp"], ranks=2)
    assert torch.load(tmp_path / "mixed" / "sft" / "checkpoint" / "state.pt", weights_only=False)["opt_by_name"]
    launch("sft", _overrides(model_dir, tmp_path, "mixed", 2), ranks=1)
    single, mixed = weights(tmp_path / "single" / "sft" / "model"), weights(tmp_path / "mixed" / "sft" / "model")
    for name, w in single.items():
        torch.testing.assert_close(mixed[name], w, rtol=1e-5, atol=5e-6, msg=lambda m, n=name: f"{n}: {m}")
