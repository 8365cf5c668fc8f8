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



def test_i2v_eval_set_carries_the_ground_truth_first_frames():
    """eval.i2v: each entry's image is the first frame of its prompt's rendering (the clip the verifier's ground
    truth is), repeated with the K samples; the T2V set has none."""
    import numpy as np

    from vidtune.world.dataset import examples

    recipe = load_recipe(None, ["eval.n_seen=2", "eval.n_heldout=1", "eval.samples_per_prompt=2", "eval.i2v=true"])
    es = eval_set(recipe)
    assert eval_set(load_recipe(None, ["eval.n_seen=2", "eval.n_heldout=1"])).images is None
    assert es.images.shape == (6, 3, 32, 32)
    w = recipe.world
    exs = examples(2, recipe.eval.seed, w, "train") + examples(1, recipe.eval.seed, w, "heldout")
    for i, x in enumerate(exs):
        first = x.render(w).video[0].transpose(2, 0, 1)
        assert np.array_equal(es.images[i].numpy(), first) and np.array_equal(es.images[i + 3].numpy(), first)
        assert es.prompts[i] == es.prompts[i + 3]
