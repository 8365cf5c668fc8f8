"""Synthetic DPO pairs from the renderer's ground truth (``dpo.pairs.synthetic_from=world``): each winner is a
rendering of its own prompt that the verifier accepts, each loser a temporal corruption of it, and no policy sample
is drawn."""

import torch

from vidtune.config import load_recipe
from vidtune.rewards.verifier import ShapeWorldVerifier
from vidtune.stages.dpo import build_pairs, candidate_prompts, world_clips
from vidtune.world.dataset import render_prompt


def test_rendered_winners_match_their_prompts():
    recipe = load_recipe(None, ["dpo.pairs.n_prompts=6"])
    prompts, videos = world_clips(candidate_prompts(recipe), recipe)
    assert len(prompts) == len(videos) >= 5
    assert videos[0].shape == (recipe.world.frames, 3, recipe.world.size, recipe.world.size)
    scores = ShapeWorldVerifier()(torch.stack(videos), prompts).scores
    assert bool((scores >= 0.9).all()), scores


def test_render_prompt_is_deterministic_and_names_infeasible_prompts_by_none():
    recipe = load_recipe(None, [])
    a = render_prompt("a red circle falls", 3, recipe.world)
    b = render_prompt("a red circle falls", 3, recipe.world)
    assert a is not None and (a.video == b.video).all()
    assert render_prompt("three large blue squares move left", 3, recipe.world.model_copy(update={"size": 16})) is None


class _NoSampling:
    config = None

    def __getattr__(self, name):
        raise AssertionError(f"the policy was used ({name})")


def test_world_source_builds_pairs_without_sampling():
    recipe = load_recipe(None, ["dpo.pairs.n_prompts=3", "dpo.pairs.on_policy=false",
                                "dpo.pairs.synthetic_from=world", "dpo.pairs.synthetic=[reverse,freeze]"])
    prompts = candidate_prompts(recipe)
    pairs, counts = build_pairs(_NoSampling(), prompts, recipe, progress=False)
    assert counts["on_policy"] == 0 and counts["synthetic"] == len(pairs) > 0
    kept, videos = world_clips(prompts, recipe)
    winners = {p.prompt: p.chosen for p in pairs}
    for prompt, video in zip(kept, videos):
        if prompt in winners:
            assert torch.equal(winners[prompt], video)
    assert {p.source for p in pairs} <= {"synthetic/reverse", "synthetic/freeze"}


def test_static_world_clips_are_no_synthetic_winners():
    """§8.2: a synthetic winner must be dynamic (§10.2). A "still" prompt renders a static clip: with the filter it
    is dropped and counted, without it its reversed copy (≈ the clip) is only caught by the 2/255 rejection."""
    over = ["dpo.pairs.on_policy=false", "dpo.pairs.synthetic_from=world", "dpo.pairs.synthetic=[reverse]"]
    recipe = load_recipe(None, over)
    prompts = ["a red circle stays still", "a red circle falls"]
    pairs, counts = build_pairs(_NoSampling(), prompts, recipe, progress=False)
    assert counts["static"] == 1 and [p.prompt for p in pairs] == ["a red circle falls"]
    _, counts = build_pairs(_NoSampling(), prompts, load_recipe(None, over + ["dpo.pairs.dynamic_only=false"]),
                            progress=False)
    assert "static" not in counts and counts["synthetic"] + counts["rejected/reverse"] == 2


def test_on_policy_candidates_that_fail_a_gate_enter_no_pair(tiny_policy, monkeypatch):
    """§8.2: both clips of an on-policy pair pass the safety gates. A gate that blocks every prompt colour marks
    every candidate ineligible for hard-negative mining (and counts it); without it the same candidates are
    eligible (Q is stubbed finite: a random model's quality heads are constant over the pool, which ranks nothing)."""
    from vidtune.stages import dpo

    seen = []
    monkeypatch.setattr(dpo, "pool_quality", lambda heads, spread: torch.zeros(len(heads)))
    monkeypatch.setattr(dpo, "hard_negative_pairs", lambda *a, **k: seen.append(a[5].clone()) or [])
    base = ["run.threads=1", "world.frames=4", "world.size=16", "sampling.steps=2", "dpo.pairs.n_prompts=2",
            "dpo.pairs.n_candidates=3", "dpo.pairs.synthetic=[]"]
    recipe = load_recipe(None, base)
    prompts = candidate_prompts(recipe)
    _, open_counts = dpo.build_pairs(tiny_policy, prompts, recipe, progress=False)
    gate = "[{reward: safety, kwargs: {colours: [red, green, blue, yellow, magenta, cyan], video_colours: []}}]"
    _, counts = dpo.build_pairs(tiny_policy, prompts, load_recipe(None, base + [f"dpo.pairs.gates={gate}"]),
                                progress=False)
    assert open_counts["gated"] == 0 and counts["gated"] == 6
    assert [m.tolist() for m in seen] == [[True] * 3, [True] * 3, [False] * 3, [False] * 3]
