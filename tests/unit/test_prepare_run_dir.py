"""Resume checks the run's recipe by value: a config.yaml written before a key existed still resumes."""

import pytest

from vidtune.config import load_recipe, recipe_to_yaml
from vidtune.errors import VidtuneError
from vidtune.pipeline import prepare_run_dir


def test_resume_accepts_an_older_layout_and_rejects_a_changed_value(tmp_path):
    recipe = load_recipe(None, ["run.name=r"])
    prepare_run_dir(recipe, tmp_path, resume=False)
    cfg = tmp_path / "config.yaml"
    full = cfg.read_text()
    older = "\n".join(line for line in full.splitlines() if "cooldown" not in line) + "\n"  # a key added later
    cfg.write_text(older)
    prepare_run_dir(recipe, tmp_path, resume=True)
    assert cfg.read_text() == recipe_to_yaml(recipe)  # rewritten in full
    with pytest.raises(VidtuneError, match="differs"):
        prepare_run_dir(load_recipe(None, ["run.name=r", "sft.lr=0.5"]), tmp_path, resume=True)
    with pytest.raises(VidtuneError, match="already exists"):
        prepare_run_dir(recipe, tmp_path, resume=False)


def test_overwrite_starts_again(tmp_path):
    recipe = load_recipe(None, ["run.name=r"])
    prepare_run_dir(recipe, tmp_path / "r", resume=False)
    (tmp_path / "r" / "stale.txt").write_text("old")
    prepare_run_dir(recipe, tmp_path / "r", resume=False, overwrite=True)
    assert not (tmp_path / "r" / "stale.txt").exists() and (tmp_path / "r" / "config.yaml").exists()
