"""Data-parallel Stage III: `torchrun --nproc_per_node 2 -m vidtune.cli dpo` (2 gloo ranks; rank 0 builds the pairs,
then each rank takes 2 of the 4 pairs of every step) exports the weights and logs the metrics of one process after
2 steps (lr 1e-4, a random 2-frame window per pair), for the joint backward (`standard`) and the decoupled ones that
call backward twice per step (`retain` on one graph, `recompute`; the latter stopped after step 1 and resumed, with
DDP and with the policy sharded by FSDP, `run.parallel=fsdp`).
With too few pairs, the ranks skip the stage together. Tolerances: tests/integration/data_parallel.py."""

import pytest

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.runtime.distributed import World
from vidtune.stages import dpo
from vidtune.stages.dpo import check_data_parallel
from tests.integration.data_parallel import (assert_same_metrics, assert_same_update, launch, metrics, tiny_model,
                                             weights)

LR = 1e-4


def _overrides(model_dir, out_dir, name: str, steps: int, *extra: str) -> list[str]:
    """Tiny DPO: 4 × 16 × 16 clips, 2 prompts × 2 candidates → 4 synthetic pairs (no on-policy ones, whose
    number depends on the random model's clips), global batch 4."""
    return [f"model.init={model_dir}", f"run.out_dir={out_dir}", f"run.name={name}", "run.threads=1",
            "run.tensorboard=false", "world.frames=4", "world.size=16", "sampling.steps=2", f"dpo.steps={steps}",
            "dpo.batch_size=4", f"dpo.lr={LR}", "dpo.log_every=1", "dpo.ckpt_every=1", "dpo.grad_frames=2",
            "dpo.pairs.n_prompts=2", "dpo.pairs.n_candidates=2", "dpo.pairs.n_synthetic_clips=2",
            "dpo.pairs.good_min=0.0", "dpo.pairs.synthetic=[reverse,shuffle]", "dpo.pairs.on_policy=false", *extra]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("schedule,parallel", [("standard", "ddp"), ("retain", "ddp"), ("recompute", "ddp"),
                                               ("recompute", "fsdp")])
def test_two_ranks_equal_one_process(model_dir, tmp_path, schedule, parallel):
    backward = f"dpo.backward={schedule}"
    dpo.run(load_recipe(None, _overrides(model_dir, tmp_path, "single", 2, backward)), tmp_path / "single",
            progress=False)
    ddp = tmp_path / "ddp"
    if schedule == "recompute":
        launch("dpo", _overrides(model_dir, tmp_path, "ddp", 1, backward, f"run.parallel={parallel}"), ranks=2)
        assert [r["step"] for r in metrics(ddp)] == [1]  # rank 0 alone logs
    launch("dpo", _overrides(model_dir, tmp_path, "ddp", 2, backward, f"run.parallel={parallel}"), ranks=2)

    pairs = (tmp_path / "single" / "dpo" / "pairs.jsonl").read_text()
    assert pairs.count("\n") == 4 and (ddp / "dpo" / "pairs.jsonl").read_text() == pairs
    # FSDP sums pre-divided shard gradients (another rounding than one all-reduce); β0 = 5000 turns the step-1
    # weight difference (Δw 1e-3 relative, as under DDP) into a step-2 loss 6e-5 off: the weights are the check
    assert_same_metrics(metrics(tmp_path / "single"), metrics(ddp), rel=1e-5 if parallel == "ddp" else 3e-4)
    assert_same_update(weights(model_dir), weights(tmp_path / "single" / "dpo" / "model"),
                       weights(ddp / "dpo" / "model"), LR, steps=2)


def test_two_ranks_skip_together_with_too_few_pairs(model_dir, tmp_path):
    launch("dpo", _overrides(model_dir, tmp_path, "ddp", 2, "dpo.pairs.good_min=1.0"), ranks=2)  # 0 pairs
    assert "only 0 usable preference pairs" in (tmp_path / "ddp" / "dpo" / "SKIPPED").read_text()
    assert metrics(tmp_path / "ddp") == [{"stage": "dpo", "step": 0, "skipped": 1, "pairs": 0}]
    init, out = weights(model_dir), weights(tmp_path / "ddp" / "dpo" / "model")
    assert all(bool((init[k] == out[k]).all()) for k in init)


def test_data_parallel_needs_an_even_batch():
    check_data_parallel(load_recipe(None, ["dpo.batch_size=3"]), World(0, 1, 0))  # one process: anything goes
    with pytest.raises(VidtuneError, match="dpo.batch_size=3 does not split over WORLD_SIZE=2"):
        check_data_parallel(load_recipe(None, ["dpo.batch_size=3"]), World(1, 2, 1))
    # Wan: test_wan_ddp.py
    check_data_parallel(load_recipe(None, ["model.type=wan", "model.hub_id=x/y"]), World(0, 2, 0))
