"""Typed recipes: unknown keys, wrong types, overrides, did-you-mean."""

import pytest

from vidtune.config import load_recipe, recipe_to_yaml
from vidtune.errors import ConfigError


def test_defaults_and_overrides(tmp_path):
    r = load_recipe(None, ["pretrain.steps=7", "world.size=16", "model.patch=[1,4,4]"])
    assert r.pretrain.steps == 7 and r.world.size == 16 and r.model.patch == (1, 4, 4)
    f = tmp_path / "r.yaml"
    f.write_text(recipe_to_yaml(r))
    assert load_recipe(f) == r


def test_unknown_key_names_key_and_suggests(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("pretrain:\n  stepz: 3\n")
    with pytest.raises(ConfigError, match=r"unknown key 'pretrain.stepz' \(did you mean 'steps'\?\)"):
        load_recipe(f)
    with pytest.raises(ConfigError, match=r"unknown key 'wrold' \(did you mean 'world'\?\)"):
        load_recipe(None, ["wrold.size=16"])


def test_wrong_type_and_range_name_the_key():
    with pytest.raises(ConfigError, match=r"'pretrain.steps'.*got 'many'"):
        load_recipe(None, ["pretrain.steps=many"])
    with pytest.raises(ConfigError, match=r"'world.size'"):
        load_recipe(None, ["world.size=8"])
    with pytest.raises(ConfigError, match="not divisible"):
        load_recipe(None, ["model.hidden=130"])


def test_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_recipe(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("run: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(bad)
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping of sections"):
        load_recipe(lst)
    with pytest.raises(ConfigError, match="key.path=value"):
        load_recipe(None, ["pretrain.steps"])


def test_coarse_noise_pool_is_typed_and_refused_with_dense_vipo():
    r = load_recipe(None, ["grpo.rollout.noise_pool=[2,8,8]", "grpo.vipo.enabled=true", "grpo.vipo.reduction=scalar"])
    assert r.grpo.rollout.noise_pool == (2, 8, 8)
    with pytest.raises(ConfigError, match="noise_pool"):
        load_recipe(None, ["grpo.rollout.noise_pool=[0,8,8]"])
    with pytest.raises(ConfigError, match="vipo.reduction=scalar"):
        load_recipe(None, ["grpo.rollout.noise_pool=[2,8,8]", "grpo.vipo.enabled=true"])
