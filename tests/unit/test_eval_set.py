"""The eval set: fixed prompts and seeds, and K samples per prompt (eval.samples_per_prompt)."""

import pytest

from vidtune.config import load_recipe
from vidtune.errors import ConfigError
from vidtune.stages.evaluate import eval_set


def test_k_samples_per_prompt_extend_the_single_sample_set():
    one = eval_set(load_recipe(None, ["eval.n_seen=3", "eval.n_heldout=2"]))
    three = eval_set(load_recipe(None, ["eval.n_seen=3", "eval.n_heldout=2", "eval.samples_per_prompt=3"]))
    assert len(one.prompts) == 5 and len(three.prompts) == len(three.seeds) == len(three.scenes) == 15
    assert three.prompts[:5] == one.prompts and three.seeds[:5] == one.seeds  # K = 1 results stay comparable
    assert three.prompts == one.prompts * 3 and three.scenes == one.scenes * 3
    assert len(set(three.seeds)) == 15  # every clip has its own noise


def test_samples_per_prompt_must_be_positive():
    with pytest.raises(ConfigError, match="samples_per_prompt"):
        load_recipe(None, ["eval.samples_per_prompt=0"])
