"""The real stage entry points (stages/sft.py, grpo.py, dpo.py) on a tiny random Wan checkpoint (2 layers, 9 frames,
16×16, latents 16×3×2×2; docs/real_models.md §6): a recipe with ``model.type: wan`` and ``model.path`` at a
diffusers folder, ShapeWorld data rendered at 9×16×16. Each stage trains fresh LoRA adapters on the previous
stage's output (SFT → GRPO with ViPO on a DINOv2 folder, KL and micro-batches → DPO), leaves every other weight
bitwise untouched, checkpoints only the trainable parameters (a resumed run equals an uninterrupted one) and
exports LoRA files that the next stage loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vidtune.config import load_recipe
from vidtune.models.factory import load_policy
from vidtune.models.wan import WanConfig, WanVideoPolicy
from vidtune.models.wan_io import LORA_WEIGHTS, tiny_wan_components
from vidtune.runlog import read_metrics
from vidtune.stages import dpo, grpo, sft

OPTIONS = {"frames": 9, "height": 16, "width": 16, "max_sequence_length": 16}
LORA = ["dpo.lora_rank=4", "dpo.lora_targets=[to_q,to_k,to_v,to_out.0]", "sft.lora_rank=4",
        "sft.lora_targets=[to_q,to_k,to_v,to_out.0]", "grpo.lora_rank=4", "grpo.lora_targets=[to_q,to_k,to_v,to_out.0]"]


def wan_recipe(base: Path, *overrides: str):
    """A Wan recipe on the tiny checkpoint: 9-frame 16 px ShapeWorld clips, LoRA r=4 in every stage, 1 thread."""
    return load_recipe(None, [
        "model.type=wan", f"model.path={base}", "model.options={frames: 9, height: 16, width: 16, "
        "max_sequence_length: 16}", "world.frames=9", "world.size=16", "run.threads=1", *LORA, *overrides])


def run_stage(module, recipe, run_dir: Path, init: Path | None = None):
    """Run a stage's ``run``; returns (its exported folder, the in-memory policy it exported)."""
    seen = []
    real = module.export
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(module, "export", lambda policy, folder: seen.append(policy) or real(policy, folder))
        out = module.run(recipe, run_dir, init=None if init is None else str(init), progress=False)
    return out, seen[0]


def frozen(policy) -> dict[str, torch.Tensor]:
    """Every non-LoRA parameter (transformer base layers, VAE, text encoder) under its plain module name."""
    return {n.replace(".base_layer", ""): p for n, p in policy.named_parameters() if "lora_" not in n}


def assert_only_lora_trained(policy, start) -> None:
    """Non-LoRA weights bitwise equal to the stage's starting checkpoint ``start``; the adapters moved (lora_B
    starts at zero)."""
    before, after = frozen(start), frozen(policy)
    assert before.keys() == after.keys()
    for n, p in after.items():
        assert torch.equal(p, before[n]), f"{n} changed"
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and any(float(p.detach().abs().max()) > 0 for p in lora_b)


def same_velocity(a, b) -> bool:
    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 16, 3, 2, 2, generator=g), torch.tensor([0.8, 0.3])
    cond = a.encode_prompts(["one red circle moves left", "a blue square"])
    with torch.no_grad():
        return torch.allclose(a.velocity(x, t, cond), b.velocity(x, t, cond), atol=1e-5)


def checkpoint_keys(run_dir: Path, stage: str) -> list[str]:
    return list(torch.load(run_dir / stage / "checkpoint" / "state.pt", weights_only=False)["model"])


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("wan") / "base"
    WanVideoPolicy.from_components(WanConfig(**OPTIONS), **tiny_wan_components(0)).pipe.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="module")
def dino(tmp_path_factory) -> Path:
    """A tiny random DINOv2 folder (16 px patches: 14×14 tokens at the extractor's 224 px) for ViPO."""
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("dino") / "dinov2"
    Dinov2Model(Dinov2Config(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                             patch_size=16, image_size=32)).save_pretrained(folder)
    return folder


SFT = ["sft.steps=3", "sft.dataset_size=4", "sft.batch_size=2", "sft.p_i2v=0", "sft.lr=1e-2", "sft.warmup=0",
       "sft.ckpt_every=1", "sft.log_every=1"]


@pytest.fixture(scope="module")
def sft_run(base, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "sft_full"
    return (run_dir, *run_stage(sft, wan_recipe(base, *SFT), run_dir))


@pytest.fixture(scope="module")
def grpo_run(base, dino, sft_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "grpo"
    recipe = wan_recipe(base, "grpo.iterations=2", "grpo.prompts_per_iter=1", "grpo.group_size=2",
                        "grpo.prompt_pool=2", "grpo.rollout.steps=3", "grpo.lr=1e-2", "grpo.beta_kl=0.1",
                        "grpo.micro_batch=1", "grpo.reward.heads=[{reward: sharpness}]", "grpo.vipo.enabled=true",
                        f"grpo.vipo.extractor={dino}")
    return (run_dir, *run_stage(grpo, recipe, run_dir, init=sft_run[1]))


@pytest.fixture(scope="module")
def dpo_run(base, grpo_run, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "dpo"
    recipe = wan_recipe(base, "sampling.steps=2", "dpo.steps=2", "dpo.batch_size=2", "dpo.lr=1e-2",
                        "dpo.log_every=1", "dpo.ckpt_every=1", "dpo.min_pairs=1", "dpo.pairs.n_prompts=1",
                        "dpo.pairs.n_candidates=2",
                        "dpo.pairs.n_synthetic_clips=1", "dpo.pairs.good_min=0.0",
                        "dpo.pairs.synthetic=[reverse,shuffle]")
    return (run_dir, *run_stage(dpo, recipe, run_dir, init=grpo_run[1]))


def test_sft_trains_lora_on_a_wan_recipe_and_exports_lora_files(base, sft_run):
    run_dir, out, policy = sft_run
    meta = json.loads((out / "vidtune_wan.json").read_text())
    assert (meta["kind"], meta["base"], meta["merged"]) == ("lora", str(base), [])
    assert (out / LORA_WEIGHTS).is_file() and not (out / "model_index.json").exists()
    assert_only_lora_trained(policy, load_policy(str(base), OPTIONS))
    keys = checkpoint_keys(run_dir, "sft")
    assert keys and all("lora_" in k for k in keys)  # trainable parameters only: no VAE, encoder or base weights
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "sft")] == [1, 2, 3]
    assert same_velocity(load_policy(str(out), OPTIONS), policy)


def test_sft_resumed_from_a_trainable_only_checkpoint_equals_the_uninterrupted_run(base, sft_run, tmp_path):
    run_dir = tmp_path / "resumed"
    run_stage(sft, wan_recipe(base, *SFT, "sft.steps=2"), run_dir)
    out, _ = run_stage(sft, wan_recipe(base, *SFT), run_dir)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl", "sft")] == [1, 2, 3]
    full, resumed = load_file(str(sft_run[1] / LORA_WEIGHTS)), load_file(str(out / LORA_WEIGHTS))
    assert full.keys() == resumed.keys() and all(torch.equal(full[k], resumed[k]) for k in full)


def test_grpo_starts_from_the_sft_output_and_trains_fresh_lora(base, sft_run, grpo_run):
    sft_out = sft_run[1]
    run_dir, out, policy = grpo_run
    meta = json.loads((out / "vidtune_wan.json").read_text())
    assert (meta["kind"], meta["base"], meta["merged"]) == ("lora", str(base), [str(sft_out.resolve())])
    start = load_policy(str(sft_out), OPTIONS)  # the SFT checkpoint, adapters merged: π_ref of Stage II
    assert not start.has_lora() and same_velocity(start, sft_run[2])
    assert_only_lora_trained(policy, start)
    rows = read_metrics(run_dir / "metrics.jsonl", "grpo")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["vipo/fallback"] == 0 and r["kl_ref"] >= 0 for r in rows) and rows[1]["kl_ref"] > 0
    assert all("lora_" in k for k in checkpoint_keys(run_dir, "grpo"))
    assert same_velocity(load_policy(str(out), OPTIONS), policy)  # base + SFT merged + GRPO adapters


def test_dpo_starts_from_the_grpo_output_and_trains_fresh_lora(base, sft_run, grpo_run, dpo_run):
    run_dir, out, policy = dpo_run
    meta = json.loads((out / "vidtune_wan.json").read_text())
    assert meta["merged"] == [str(sft_run[1].resolve()), str(grpo_run[1].resolve())]
    start = load_policy(str(grpo_run[1]), OPTIONS)
    assert same_velocity(start, grpo_run[2])
    assert_only_lora_trained(policy, start)
    assert (run_dir / "dpo" / "pairs.jsonl").read_text().strip()
    rows = read_metrics(run_dir / "metrics.jsonl", "dpo")
    assert [r["step"] for r in rows] == [1, 2] and abs(rows[0]["loss"] - 0.6931) < 1e-3  # π_θ = π_ref at step 0
    assert all("lora_" in k for k in checkpoint_keys(run_dir, "dpo"))
    assert same_velocity(load_policy(str(out), OPTIONS), policy)


def test_grpo_micro_batches_give_the_same_rollout_and_update(base):
    """grpo.micro_batch=1 (rollout forwards and per-row backward, each scaled by the minibatch's B_valid) takes the
    same SDE trajectories and the same optimiser step as all rows at once, up to float rounding."""
    import copy

    from vidtune.models.factory import attach_lora, reference_policy
    from vidtune.stages.grpo import do_rollout, rollout_spec, update

    start = attach_lora(load_policy(str(base), OPTIONS), 4, ("to_q", "to_k", "to_v", "to_out.0"), seed=0)
    with torch.no_grad():
        for n, q in start.named_parameters():
            if "lora_B" in n:
                q.normal_(std=0.1, generator=torch.Generator().manual_seed(1))
    finals, steps = [], []
    for micro in ("null", 1):
        cfg = wan_recipe(base, f"grpo.micro_batch={micro}", "grpo.rollout.steps=3", "grpo.beta_kl=0.1").grpo
        policy = copy.deepcopy(start)
        ro, cond, uncond = do_rollout(policy, ["one red circle", "a blue square"], 2, rollout_spec(cfg), seed=3)
        params = [q for q in policy.parameters() if q.requires_grad]
        before = [q.detach().clone() for q in params]
        update(policy, reference_policy(policy), ro, cond, uncond, torch.tensor([1.0, -1.0, 0.5, -0.5]), None,
               torch.ones(4, dtype=torch.bool), cfg, torch.optim.SGD(params, lr=1.0), params, 0)
        finals.append(ro.final)
        steps.append(torch.cat([(q.detach() - b).flatten() for q, b in zip(params, before)]))
    assert torch.allclose(finals[0], finals[1], atol=1e-5)
    assert float(steps[0].abs().max()) > 0 and torch.allclose(steps[0], steps[1], atol=1e-6)


FILE_PROMPTS = ["a dragon circles a lighthouse at dusk", "waves crash on black rocks", "a paper boat in the rain"]
GRPO_ONE = ["grpo.iterations=1", "grpo.prompts_per_iter=2", "grpo.group_size=2", "grpo.rollout.steps=3",
            "grpo.reward.heads=[{reward: sharpness}]"]


def prompts_file(folder: Path) -> Path:
    """FILE_PROMPTS (free-form: Wan's UMT5 takes any text) between a comment and blank lines."""
    f = folder / "prompts.txt"
    f.write_text("# GRPO prompts, one a line\n\n" + "\n  \n".join(FILE_PROMPTS) + "\n# end\n")
    return f


def run_grpo_spying(recipe, run_dir: Path) -> list[tuple[list[str], torch.Tensor | None]]:
    """Run GRPO and return (prompts, first frames) of every rollout batch it drew."""
    seen = []
    real = grpo.do_rollout

    def spy(policy, prompts, group, spec, seed, images, *rest):
        seen.append((list(prompts), images))
        return real(policy, prompts, group, spec, seed, images, *rest)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(grpo, "do_rollout", spy)
        grpo.run(recipe, run_dir, progress=False)
    return seen


def test_grpo_iteration_draws_its_prompts_from_a_prompts_file(base, tmp_path):
    recipe = wan_recipe(base, f"grpo.prompts_file={prompts_file(tmp_path)}", *GRPO_ONE)
    seen = run_grpo_spying(recipe, tmp_path / "run")
    assert len(seen) == 1
    prompts, images = seen[0]
    assert len(prompts) == 2 and set(prompts) <= set(FILE_PROMPTS) and images is None
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "grpo")
    assert [r["step"] for r in rows] == [1] and rows[0]["reward"] == rows[0]["reward"]  # finite, not NaN


@pytest.fixture(scope="module")
def i2v_base(tmp_path_factory) -> Path:
    """A tiny random Wan2.1-I2V folder (36 input channels, CLIP image encoder), 9 frames at 16 px."""
    folder = tmp_path_factory.mktemp("wan") / "i2v"
    policy = WanVideoPolicy.from_components(WanConfig(**OPTIONS), **tiny_wan_components(0, i2v=True))
    policy.pipe.save_pretrained(str(folder))
    return folder


def test_i2v_grpo_conditions_each_prompt_on_its_first_frame(i2v_base, tmp_path):
    """grpo.images_dir: <k>.png is the first frame of the k-th prompt, resized to the clip size (24×20 → 16×16)."""
    import cv2
    import numpy as np

    from vidtune.data.prompts import load_first_frames

    frames = tmp_path / "frames"
    frames.mkdir()
    rng = np.random.default_rng(0)
    for k in range(len(FILE_PROMPTS)):
        cv2.imwrite(str(frames / f"{k}.png"), rng.integers(0, 256, (20, 24, 3), dtype=np.uint8))
    recipe = wan_recipe(i2v_base, f"grpo.prompts_file={prompts_file(tmp_path)}", f"grpo.images_dir={frames}",
                        *GRPO_ONE)
    prompts, images = run_grpo_spying(recipe, tmp_path / "run")[0]
    expected = load_first_frames([frames / f"{FILE_PROMPTS.index(p)}.png" for p in prompts], 16, 16)
    assert images.shape == (2, 3, 16, 16) and torch.equal(images, expected)
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl", "grpo")] == [1]


def test_eval_and_sample_load_a_wan_stage_output(base, sft_run, tmp_path):
    """`vidtune eval` and `vidtune sample` on a stage's Wan LoRA folder, with the recipe's model.options."""
    from typer.testing import CliRunner

    from vidtune.cli import app
    from vidtune.config import recipe_to_yaml
    from vidtune.video.io import read_video

    recipe = tmp_path / "wan.yaml"
    recipe.write_text(recipe_to_yaml(wan_recipe(base, "eval.n_seen=1", "eval.n_heldout=1", "sampling.steps=2")))
    res = CliRunner().invoke(app, ["eval", str(sft_run[1]), "--recipe", str(recipe), "-o", str(tmp_path / "e.json")])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["summary"]["verifier"]["n"] == 2
    res = CliRunner().invoke(app, ["sample", "a dragon circles a lighthouse", "--model", str(sft_run[1]), "--recipe",
                                   str(recipe), "--steps", "2", "-o", str(tmp_path / "s.mp4")])
    assert res.exit_code == 0, res.output
    assert read_video(tmp_path / "s.mp4").shape == (9, 3, 64, 64)  # 9 frames of 16 px, upscaled 4× for viewing


def test_vidtune_run_chains_evaluates_and_reports_wan_stages(base, tmp_path):
    """`vidtune run` on a Wan recipe: base → SFT → GRPO → DPO, each evaluated (and its drift measured) by loading
    the stage's LoRA folder; the report is written."""
    from vidtune.pipeline import run_pipeline

    recipe = wan_recipe(base, *SFT, f"run.out_dir={tmp_path}", "run.name=wan", "run.tensorboard=false",
                        "grpo.iterations=1", "grpo.prompts_per_iter=1", "grpo.group_size=2", "grpo.prompt_pool=2",
                        "grpo.rollout.steps=3", "grpo.reward.heads=[{reward: sharpness}]",
                        "sampling.steps=2", "dpo.steps=1", "dpo.batch_size=1", "dpo.min_pairs=1",
                        "dpo.pairs.n_prompts=1", "dpo.pairs.n_candidates=2", "dpo.pairs.good_min=0.0",
                        "dpo.pairs.synthetic=[reverse]", "dpo.pairs.n_synthetic_clips=1",
                        "eval.n_seen=1", "eval.n_heldout=1", "eval.grid_prompts=1")
    run_dir = tmp_path / "wan"
    assert run_pipeline(recipe, run_dir, progress=False) == run_dir / "report.html"
    assert not (run_dir / "dpo" / "SKIPPED").exists()
    for stage in ("base", "sft", "grpo", "dpo"):
        assert json.loads((run_dir / "evals" / f"{stage}.json").read_text())["summary"]["verifier"]["n"] == 2
    diagnostics = json.loads((run_dir / "evals" / "diagnostics.json").read_text())
    assert all(diagnostics[s]["drift_from_start"] >= 0 for s in ("sft", "grpo", "dpo"))
    meta = json.loads((run_dir / "dpo" / "model" / "vidtune_wan.json").read_text())
    assert meta["merged"] == [str((run_dir / s / "model").resolve()) for s in ("sft", "grpo")]
