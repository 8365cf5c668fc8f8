"""Data-parallel Stage II: `torchrun --nproc_per_node 2 -m vidtune.cli grpo` (2 gloo ranks, each rolling out, scoring
and back-propagating one of the iteration's 2 prompt groups of G = 3) exports the weights and logs the metrics of one
process after 2 iterations (lr 1e-3; tolerances in tests/integration/data_parallel.py):

* plain GRPO with 2 random minibatches (so each rank holds 1–2 rows of a minibatch and calls backward a different
  number of times), micro-batches of 2 and the KL term; stopped after iteration 1 and resumed; with DDP-style
  gradient sums, and with the policy sharded by FSDP (`run.parallel=fsdp`) and micro-batches of 1, so that the
  rank holding 1 row of a minibatch pads to the 2 calls of the other;
* refinements whose statistics span the whole batch: the self-paced curriculum (batch means and within-group
  spreads, their EMA, τ frozen at the quantile of the warm-up group means after iteration 1), BPGO with the
  t2v_reference prior (each rank scores 2 of the 4 pool prompts; auto-k from the std of the batch's Δ_p) and the
  joint reward (min-norm weights from the Gram matrix of the whole batch's per-head advantages)."""

import pytest

from vidtune.config import load_recipe
from vidtune.errors import VidtuneError
from vidtune.runtime.distributed import World
from vidtune.stages import grpo
from vidtune.stages.grpo import check_data_parallel
from tests.integration.data_parallel import (assert_same_metrics, assert_same_update, launch, metrics, tiny_model,
                                             weights)

LR = 1e-3
TWO_HEADS = "grpo.reward.heads=[{reward: sharpness}, {reward: motion_smoothness, weight: 0.5}]"
VARIANTS = {
    "plain": [TWO_HEADS, "grpo.minibatches=2", "grpo.micro_batch=2", "grpo.beta_kl=0.1"],
    "plain_fsdp": [TWO_HEADS, "grpo.minibatches=2", "grpo.micro_batch=1", "grpo.beta_kl=0.1", "run.parallel=fsdp"],
    "curriculum": ["grpo.curriculum.enabled=true", "grpo.curriculum.warmup_steps=1",
                   "grpo.reward.heads=[{reward: sharpness, component: visual}, "
                   "{reward: motion_smoothness, component: temporal}, {reward: freeze, component: semantic}]"],
    "bpgo": ["grpo.bpgo.enabled=true", "grpo.bpgo.n_prior=2", "grpo.reward.heads=[{reward: sharpness}]"],
    "joint": [TWO_HEADS, "grpo.joint.enabled=true", "grpo.joint.mode=mgda_batch"],
}


def _overrides(model_dir, out_dir, name: str, iterations: int, extra: list[str]) -> list[str]:
    """Tiny GRPO: 4 × 16 × 16 clips, 2 prompts × G = 3 per iteration, 3 SDE steps, a pool of 4 prompts."""
    return [f"model.init={model_dir}", f"run.out_dir={out_dir}", f"run.name={name}", "run.threads=1",
            "run.tensorboard=false", "world.frames=4", "world.size=16", f"grpo.iterations={iterations}",
            "grpo.prompts_per_iter=2", "grpo.group_size=3", "grpo.rollout.steps=3", "grpo.prompt_pool=4",
            f"grpo.lr={LR}", "grpo.ckpt_every=1", *extra]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.mark.parametrize("variant", VARIANTS)
def test_two_ranks_equal_one_process(model_dir, tmp_path, variant):
    extra = VARIANTS[variant]
    grpo.run(load_recipe(None, _overrides(model_dir, tmp_path, "single", 2, extra)), tmp_path / "single",
             progress=False)
    ddp = tmp_path / "ddp"
    if variant.startswith("plain"):
        launch("grpo", _overrides(model_dir, tmp_path, "ddp", 1, extra), ranks=2)
        assert [r["step"] for r in metrics(ddp)] == [1]  # rank 0 alone logs
    launch("grpo", _overrides(model_dir, tmp_path, "ddp", 2, extra), ranks=2)  # "plain": resumes from iteration 1

    assert_same_metrics(metrics(tmp_path / "single"), metrics(ddp))
    assert_same_update(weights(model_dir), weights(tmp_path / "single" / "grpo" / "model"),
                       weights(ddp / "grpo" / "model"), LR, steps=2 * (2 if variant.startswith("plain") else 1))


def test_data_parallel_refuses_what_the_ranks_cannot_reproduce(monkeypatch, tmp_path):
    def recipe(*overrides):
        return load_recipe(None, list(overrides))

    two = World(1, 2, 1)
    check_data_parallel(recipe("grpo.prompts_per_iter=3", "run.runtime=ray"), World(0, 1, 0))  # one process: fine
    with pytest.raises(VidtuneError, match="grpo.prompts_per_iter=3 does not split over WORLD_SIZE=2"):
        check_data_parallel(recipe("grpo.prompts_per_iter=3"), two)
    check_data_parallel(recipe("model.type=wan", "model.hub_id=x/y"), two)  # Wan: test_wan_ddp.py
    check_data_parallel(recipe("run.runtime=ray"), two)  # one pool on rank 0 (test_two_ranks_share_one_ray_pool)
    noisy = recipe("grpo.reward.heads=[{reward: sharpness}, {reward: noisy}]")
    with pytest.raises(VidtuneError, match=r"grpo.reward.heads\[1\]: reward 'noisy' draws its noise from one stream"):
        check_data_parallel(noisy, two)
    monkeypatch.setenv("WORLD_SIZE", "2")  # what torchrun sets: the stage refuses before joining any group
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(VidtuneError, match="reward 'noisy'"):
        grpo.run(noisy, tmp_path / "run", progress=False)


@pytest.mark.slow
def test_two_ranks_share_one_ray_pool(model_dir, tmp_path):
    """`run.runtime=ray` under torchrun: rank 0 starts the one reward pool and scores every rank's rollouts; the
    metrics and weights are those of one process scoring in-process."""
    grpo.run(load_recipe(None, _overrides(model_dir, tmp_path, "single", 2, [TWO_HEADS])), tmp_path / "single",
             progress=False)
    launch("grpo", _overrides(model_dir, tmp_path, "ray", 2, [TWO_HEADS, "run.runtime=ray"]), ranks=2)
    assert_same_metrics(metrics(tmp_path / "single"), metrics(tmp_path / "ray"))
    assert_same_update(weights(model_dir), weights(tmp_path / "single" / "grpo" / "model"),
                       weights(tmp_path / "ray" / "grpo" / "model"), LR, steps=2)
