"""Shipped recipes validate, and recipes/shapeworld.yaml is exactly the built-in default `vidtune run` uses."""

from pathlib import Path

import pytest

from vidtune.config import Recipe, load_recipe

RECIPES = sorted(p for p in Path(__file__).parents[2].joinpath("recipes").glob("*.yaml"))


def test_shapeworld_recipe_is_the_default():
    assert load_recipe(Path(__file__).parents[2] / "recipes" / "shapeworld.yaml") == Recipe()


@pytest.mark.parametrize("path", RECIPES, ids=[p.name for p in RECIPES])
def test_every_shipped_recipe_validates(path):
    load_recipe(path)
