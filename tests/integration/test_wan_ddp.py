"""A Wan policy (tiny random Wan2.1 built from a config, LoRA r=4) under DDP: `torchrun --nproc_per_node 2` SFT and
GRPO (2 gloo ranks, each on its half of the global batch) log the metrics of one process and export the same LoRA
weights. Every rank holds a whole copy (frozen VAE, text encoder and transformer); only the adapters' gradients are
reduced."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidtune.models.wan import WanConfig, WanVideoPolicy
from vidtune.models.wan_io import LORA_WEIGHTS, tiny_wan_components
from tests.integration.data_parallel import assert_same_metrics, launch, metrics

pytestmark = pytest.mark.slow

OPTIONS = "model.options={frames: 9, height: 16, width: 16, max_sequence_length: 16}"
LORA = "lora_targets=[to_q,to_k,to_v,to_out.0]"


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wan") / "base"
    WanVideoPolicy.from_components(WanConfig(frames=9, height=16, width=16, max_sequence_length=16),
                                   **tiny_wan_components(0)).pipe.save_pretrained(str(folder))
    return folder


def _common(base: Path, out: Path, name: str) -> list[str]:
    return ["model.type=wan", f"model.path={base}", OPTIONS, "world.frames=9", "world.size=16", "run.threads=1",
            f"run.out_dir={out}", f"run.name={name}", "run.tensorboard=false"]


def _same_lora(single: Path, parallel: Path, moved: float) -> None:
    a, b = load_file(single / LORA_WEIGHTS), load_file(parallel / LORA_WEIGHTS)
    assert a.keys() == b.keys() and a
    assert max(float(w.abs().max()) for k, w in a.items() if "lora_B" in k) > moved  # the adapters trained
    for k, w in a.items():
        torch.testing.assert_close(b[k], w, rtol=1e-4, atol=1e-6, msg=lambda m, n=k: f"{n}: {m}")


def test_wan_sft_two_ranks_equal_one_process(base, tmp_path):
    sft = ["sft.steps=2", "sft.dataset_size=4", "sft.batch_size=2", "sft.p_i2v=0", "sft.lr=1e-3", "sft.warmup=0",
           "sft.log_every=1", "sft.ckpt_every=1", "sft.lora_rank=4", f"sft.{LORA}"]
    launch("sft", [*_common(base, tmp_path, "single"), *sft], ranks=1)
    launch("sft", [*_common(base, tmp_path, "ddp"), *sft], ranks=2)
    assert_same_metrics(metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), rel=1e-4)
    _same_lora(tmp_path / "single" / "sft" / "model", tmp_path / "ddp" / "sft" / "model", moved=1e-4)


def test_wan_grpo_two_ranks_equal_one_process(base, tmp_path):
    grpo = ["grpo.iterations=2", "grpo.prompts_per_iter=2", "grpo.group_size=2", "grpo.prompt_pool=4",
            "grpo.rollout.steps=3", "grpo.lr=1e-3", "grpo.beta_kl=0.1", "grpo.micro_batch=1", "grpo.lora_rank=4",
            f"grpo.{LORA}", "grpo.reward.heads=[{reward: sharpness}]"]
    launch("grpo", [*_common(base, tmp_path, "single"), *grpo], ranks=1)
    launch("grpo", [*_common(base, tmp_path, "ddp"), *grpo], ranks=2)
    assert_same_metrics(metrics(tmp_path / "single"), metrics(tmp_path / "ddp"), rel=1e-4)
    _same_lora(tmp_path / "single" / "grpo" / "model", tmp_path / "ddp" / "grpo" / "model", moved=1e-5)
