"""The learned video–text scorer: model, reward and feature-extractor contract, training stage (DESIGN.md §3)."""

import json
import random

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.errors import ConfigError, VidtuneError
from vidtune.rewards.base import build_reward
from vidtune.rewards.scorer import LearnedScorer
from vidtune.rewards.scorer_model import ScorerModelConfig, VideoTextScorer, load_scorer
from vidtune.stages import train_scorer as ts
from vidtune.world.grammar import Scene, caption, loose, parse

PROMPTS = ["two small red circles move right, then fall, camera pans left", "a blue square"]
TINY = ["run.threads=1", "world.frames=4", "world.size=16", "scorer.dim=16", "scorer.depth=1", "scorer.heads=2",
        "scorer.embed_dim=16", "scorer.stem_channels=8", "scorer.text_layers=1", "scorer.batch_size=6",
        "scorer.dataset_size=12", "scorer.hard_negatives=2", "scorer.noise_negatives=2", "scorer.eval_clips=4",
        "scorer.log_every=1", "scorer.warmup=1"]


@pytest.fixture
def scorer():
    """A random scorer for 4-frame 16 px clips: 4×4 patches → a 4×4 grid, D = 16."""
    torch.manual_seed(0)
    return VideoTextScorer(ScorerModelConfig(frames=4, size=16, stem_channels=8, dim=16, depth=1, heads=2,
                                             embed_dim=16, text_layers=1)).eval()


def test_shapes_ranges_and_feature_contract(scorer):
    videos = torch.rand(2, 4, 3, 16, 16)
    enc = scorer.encode_video(videos)
    assert enc.features.shape == (2, 4, 4, 4, 16) and enc.embedding.shape == (2, 16)
    assert torch.allclose(enc.embedding.norm(dim=-1), torch.ones(2), atol=1e-5)
    judge = LearnedScorer(model=scorer)
    out = judge(videos, PROMPTS)
    cos = out.components["cosine"]
    assert out.scores.shape == (2,) and bool(((cos >= -1) & (cos <= 1)).all())
    assert torch.allclose(out.scores, (1 + cos) / 2)  # the documented mapping
    feats = judge.features(videos)
    assert torch.equal(feats.features, enc.features) and feats.frame_cover == [[0], [1], [2], [3]]
    emb = judge.frame_embeddings(videos)
    assert emb.shape == (2, 4, 16) and torch.allclose(emb.norm(dim=-1), torch.ones(2, 4), atol=1e-5)


def test_frozen_features_have_no_grad(scorer):
    judge = LearnedScorer(model=scorer)
    videos = torch.rand(1, 4, 3, 16, 16, requires_grad=True)
    feats = judge.features(videos).features
    assert not feats.requires_grad and not judge.frame_embeddings(videos).requires_grad
    assert not judge.model.training and not any(p.requires_grad for p in judge.model.parameters())
    assert not judge(videos.detach(), PROMPTS[:1]).scores.requires_grad


def test_save_load_gives_identical_outputs(scorer, tmp_path):
    videos = torch.rand(2, 4, 3, 16, 16)
    with torch.no_grad():
        ref = scorer.similarity(videos, PROMPTS)
        loaded = load_scorer(scorer.save_pretrained(tmp_path / "s"))
        assert torch.equal(loaded.similarity(videos, PROMPTS), ref)
    via_registry = build_reward("scorer", model=str(tmp_path / "s"))
    assert torch.equal(via_registry(videos, PROMPTS).scores, (1 + ref) / 2)


def test_broken_folders_and_bad_inputs_are_named_errors(scorer, tmp_path):
    with pytest.raises(VidtuneError, match="not found"):
        load_scorer(tmp_path / "nope")
    with pytest.raises(VidtuneError, match="builtin:scorer"):
        load_scorer("builtin:scorr")
    folder = scorer.save_pretrained(tmp_path / "s")
    (folder / "config.json").write_text("{bad")
    with pytest.raises(VidtuneError, match="not valid JSON"):
        load_scorer(folder)
    (folder / "config.json").write_text(json.dumps({"type": "tiny_dit"}))
    with pytest.raises(VidtuneError, match="expected type"):
        load_scorer(folder)
    (folder / "model.safetensors").unlink()
    with pytest.raises(VidtuneError, match="no model.safetensors"):
        load_scorer(folder)
    judge = LearnedScorer(model=scorer)
    with pytest.raises(VidtuneError, match=r"\[B, 4, 3, 16, 16\].*\(2, 4, 3, 32, 32\)"):
        judge(torch.rand(2, 4, 3, 32, 32), PROMPTS)
    with pytest.raises(VidtuneError, match="float"):
        judge.features(torch.zeros(1, 4, 3, 16, 16, dtype=torch.uint8))
    with pytest.raises(VidtuneError, match="2 videos but 1 prompts"):
        judge(torch.rand(2, 4, 3, 16, 16), PROMPTS[:1])
    with pytest.raises(VidtuneError, match="'circel'"):
        judge(torch.rand(1, 4, 3, 16, 16), ["a red circel"])
    with pytest.raises(VidtuneError, match="modle"):
        build_reward("scorer", modle="x")


def test_non_finite_clip_is_flagged_not_scored(scorer):
    videos = torch.rand(2, 4, 3, 16, 16)
    videos[1, 0, 0, 0, 0] = float("nan")
    out = LearnedScorer(model=scorer)(videos, PROMPTS)
    assert torch.isfinite(out.scores[0]) and torch.isnan(out.scores[1])
    assert out.details[1] == {"invalid": "non-finite pixels"}


def test_hard_negatives_change_one_atom_and_avoid_heldout():
    scene = parse("two small red circles move right, then fall, camera pans left")
    negs = ts.one_atom_negatives(scene, 8, random.Random(0), exclude_heldout=True)
    assert len(negs) == 8 and len({caption(s) for _, s in negs}) == 8
    assert len({a for a, _ in negs}) >= 6  # atom types are mixed
    for atom, s in negs:
        assert not s.is_heldout and not ts.consistent(s, scene)
        field = {"motion": "motions", "order": "motions"}.get(atom, atom)
        assert all(getattr(s, f) == getattr(scene, f) for f in Scene.__dataclass_fields__ if f != field)
    heavy = [ts.one_atom_negatives(scene, 1, random.Random(i), weights={"order": 1e6})[0][0] for i in range(20)]
    assert heavy == ["order"] * 20  # weighted atom order: a dominant weight comes first
    lo = loose(scene, with_motion=True)  # "a red circle moves right" is true of this clip, "a red square" is not
    assert ts.consistent(lo, scene) and not ts.consistent(parse("a red square"), scene)
    # a loose caption naming the whole sequence or the pan must name the clip's, in order
    assert ts.consistent(parse("red circles move right, then fall, camera pans left"), scene)
    assert not ts.consistent(parse("red circles fall, then move right"), scene)
    assert not ts.consistent(parse("red circles move right, camera pans right"), scene)


def test_batches_are_a_pure_function_of_seed_and_step():
    scenes = [parse(p) for p in ["one small red circle falls", "three large blue triangles stay still"]] * 4
    a = ts.draw_batch(3, 7, scenes, 4, 2, 1, 0.5, 0.5, 3)
    b = ts.draw_batch(3, 7, scenes, 4, 2, 1, 0.5, 0.5, 3)
    c = ts.draw_batch(4, 7, scenes, 4, 2, 1, 0.5, 0.5, 3)
    assert a.texts == b.texts and torch.equal(a.index, b.index) and torch.equal(a.owner, b.owner)
    assert (a.texts, a.index.tolist()) != (c.texts, c.index.tolist())
    v = torch.rand(2, 4, 3, 16, 16)
    assert torch.equal(ts.add_noise(v, a.generator), ts.add_noise(v, b.generator))


def test_training_steps_decrease_the_loss(scorer):
    """20 AdamW steps on one fixed batch (6 clips, 2 hard negatives each, 2 noised copies) lower the InfoNCE loss."""
    r = load_recipe(None, TINY)
    exs = ts.examples(6, 0, r.world)
    videos = ts.render_bank(exs, r.world, progress=False).float() / 255
    scenes = [e.scene for e in exs]
    scorer.train()
    opt = torch.optim.AdamW(scorer.parameters(), lr=3e-3)

    def loss() -> torch.Tensor:
        b = ts.draw_batch(0, 0, scenes, 6, 2, 2, 0.25, 0.5, 3)
        return ts.contrastive_loss(scorer, videos[b.index], [scenes[i] for i in b.index.tolist()], b).loss

    first = float(loss().detach())
    for _ in range(20):
        opt.zero_grad()
        loss().backward()
        opt.step()
    assert float(loss().detach()) < 0.7 * first


def test_resume_equals_uninterrupted_run(tmp_path, monkeypatch):
    """Kill after step 3 (checkpoint at step 2), rerun: the final weights equal a run of 4 steps without a break."""
    r = load_recipe(None, TINY + ["scorer.steps=4", "scorer.ckpt_every=2", "scorer.eval_every=2"])
    ref = ts.run(r, tmp_path / "a", progress=False)
    real, calls = ts.contrastive_loss, {"n": 0}

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(ts, "contrastive_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        ts.run(r, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b/scorer/checkpoint/state.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(ts, "contrastive_loss", real)
    resumed = ts.run(r, tmp_path / "b", progress=False)
    a, b = load_scorer(ref).state_dict(), load_scorer(resumed).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_retrieval_eval_and_config_errors(scorer):
    r = load_recipe(None, TINY)
    exs = ts.examples(3, 1, r.world, split="heldout")
    videos = ts.render_bank(exs, r.world, progress=False).float() / 255
    res = ts.retrieval_eval(scorer, videos, [e.scene for e in exs], n_distractors=8)
    assert res["n"] == 3 and 0 <= res["top1"] <= 1
    assert set(res["per_atom"]) <= {"colour", "shape", "size", "count", "motion", "order", "camera"}
    with pytest.raises(ConfigError, match="did you mean 'hard_negatives'"):
        load_recipe(None, ["scorer.hard_negative=3"])
    with pytest.raises(ConfigError, match="scorer.dim"):
        load_recipe(None, ["scorer.dim=30", "scorer.heads=4"])
