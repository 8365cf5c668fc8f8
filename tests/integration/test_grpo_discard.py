"""ALGORITHMS.md §1, edge cases: a rollout batch with a non-finite velocity is discarded (counted, never trained on)
and the run goes on."""

from vidtune.config import load_recipe
from vidtune.runlog import read_metrics
from vidtune.stages import grpo


def test_a_non_finite_rollout_is_discarded_and_counted(tiny_policy, tmp_path, monkeypatch):
    model = tiny_policy.save_pretrained(tmp_path / "tiny")
    real, calls = grpo.do_rollout, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise FloatingPointError("non-finite velocity at transition 0; rollout batch discarded")
        return real(*args, **kwargs)

    monkeypatch.setattr(grpo, "do_rollout", flaky)
    recipe = load_recipe(None, [f"model.init={model}", "run.threads=1", "world.frames=4", "world.size=16",
                                "grpo.iterations=3", "grpo.prompts_per_iter=2", "grpo.group_size=2",
                                "grpo.rollout.steps=3", "grpo.prompt_pool=4", "grpo.ckpt_every=1"])
    grpo.run(recipe, tmp_path / "run", progress=False)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl", "grpo")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["discarded_batch"] == 1 and "reward" not in rows[1] and "reward" in rows[2]
    assert len(calls) == 3 and (tmp_path / "run" / "grpo" / "model" / "config.json").is_file()
