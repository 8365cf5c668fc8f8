"""Pair files (ALGORITHMS.md §8 property 8), hard-negative selection and pair weights."""

import json

import pytest
import torch

from vidtune.errors import VidtuneError
from vidtune.preference.build import dynamic_sources, hard_negative_pairs, pool_quality, synthetic_pairs
from vidtune.preference.pairs import PreferencePair, read_pairs, save_clip, write_pairs
from vidtune.stages.dpo import pair_weight_vector


def _clip(seed, f=8):
    return torch.rand(f, 3, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_round_trip_is_exact_after_uint8(tmp_path):
    pairs = [PreferencePair("a red circle", _clip(0), _clip(1), 2.0, "x", 0.3)]
    f = write_pairs(pairs, tmp_path / "p.jsonl")
    back, counts = read_pairs(f)
    assert counts == {"ties": 0, "duplicates": 0, "identical": 0}
    assert torch.allclose(back[0].chosen, pairs[0].chosen, atol=0.5 / 255 + 1e-7)
    assert back[0].weight == 2.0 and back[0].score_gap == 0.3


def _write(tmp_path, rows, clips=True):
    if clips:
        save_clip(_clip(0), tmp_path / "a.npy")
        save_clip(_clip(1), tmp_path / "b.npy")
        save_clip(_clip(2, f=4), tmp_path / "short.npy")
    f = tmp_path / "h.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f


def test_malformed_pair_files_name_the_line(tmp_path):
    ok = {"prompt": "a red circle", "chosen": "a.npy", "rejected": "b.npy"}
    with pytest.raises(VidtuneError, match=r"h.jsonl:2: rejected video not found"):
        read_pairs(_write(tmp_path, [ok, {**ok, "rejected": "missing.npy"}]))
    with pytest.raises(VidtuneError, match=r"h.jsonl:1: chosen .* shapes differ"):
        read_pairs(_write(tmp_path, [{**ok, "chosen": "short.npy"}]))
    with pytest.raises(VidtuneError, match=r"h.jsonl:1: missing or empty 'prompt'"):
        read_pairs(_write(tmp_path, [{**ok, "prompt": ""}]))
    with pytest.raises(VidtuneError, match=r"'weight' must be > 0"):
        read_pairs(_write(tmp_path, [{**ok, "weight": 0}]))
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n")
    with pytest.raises(VidtuneError, match="is empty"):
        read_pairs(empty)


def test_duplicates_ties_and_identical_are_dropped_and_counted(tmp_path):
    ok = {"prompt": "a red circle", "chosen": "a.npy", "rejected": "b.npy"}
    pairs, counts = read_pairs(_write(tmp_path, [ok, ok, {**ok, "tie": True}, {**ok, "rejected": "a.npy"}]))
    assert len(pairs) == 1 and counts == {"ties": 1, "duplicates": 1, "identical": 1}


def test_hard_negatives_respect_thresholds_and_are_disjoint():
    """4 candidates; Q = (0.9, 0.5, 0.8, 0.1); Sem all equal; embeddings identical except candidate 3 (orthogonal).
    Eligible pairs need gap ≥ 0.1 and cos ≥ 0.9: (0,1) gap 0.4, (2,1) 0.3, (0,2) 0.1; candidate 3 never qualifies.
    Greedy by gap: (0,1) first, then (2,1) shares 1 → skipped; nothing else disjoint remains → 1 pair."""
    vids = torch.stack([_clip(i) for i in range(4)])
    q = torch.tensor([0.9, 0.5, 0.8, 0.1])
    sem = torch.full((4,), 0.7)
    emb = torch.tensor([[1.0, 0], [1, 0], [1, 0], [0, 1]])
    pairs = hard_negative_pairs("p", vids, q, sem, emb, torch.ones(4, dtype=torch.bool))
    assert len(pairs) == 1 and torch.equal(pairs[0].chosen, vids[0]) and torch.equal(pairs[0].rejected, vids[1])
    assert abs(pairs[0].score_gap - 0.4) < 1e-6


def test_pool_quality_normalises_each_head_over_the_pool_and_drops_constant_heads():
    """Head 0 spans 0.9–1.0 → (0, 0.5, 1, ·); head 1 is constant → left out; head 2 spans 0–1 with a NaN.
    Q = mean of the finite normalised heads: (0, (0.5 + 0)/2, (1 + 1)/2) and NaN for a candidate with none."""
    nan = float("nan")
    heads = torch.tensor([[0.9, 1.0, nan], [0.95, 1.0, 0.0], [1.0, 1.0, 1.0], [nan, 1.0, nan]])
    q = pool_quality(heads)
    assert torch.allclose(q[:3], torch.tensor([0.0, 0.25, 1.0]), atol=1e-6) and torch.isnan(q[3])
    # the raw gap 0.05 between candidates 0 and 1 is below a 0.1 threshold; normalised it is not
    assert float(heads[1, 0] - heads[0, 0]) < 0.1 <= float(q[1] - q[0])
    # a head spread below min_spread is divided by min_spread: 0.001 apart stays a 0.02 gap, not 1
    tiny = pool_quality(torch.tensor([[0.500], [0.501]]))
    assert torch.allclose(tiny, torch.tensor([0.0, 0.02]), atol=1e-6)


def test_synthetic_pairs_skip_reverse_for_i2v_and_static_clips_are_rejected():
    static = _clip(0)[:1].expand(8, -1, -1, -1).clone()
    pairs, rejected = synthetic_pairs(["p", "q"], torch.stack([_clip(1), static]), ("reverse", "freeze"),
                                      torch.Generator().manual_seed(0))
    assert len(pairs) == 2 and rejected == {"reverse": 1, "freeze": 1}
    pairs, _ = synthetic_pairs(["p"], _clip(1)[None], ("reverse",), torch.Generator().manual_seed(0), i2v=True)
    assert pairs == []
    with pytest.raises(VidtuneError, match=r"dpo.pairs.synthetic: \['freeze'\] .* these have 4"):
        synthetic_pairs(["p"], _clip(1)[None, :4], ("reverse", "freeze"), torch.Generator().manual_seed(0))


def test_dynamic_sources_keep_only_flagged_clips_and_count_the_rest():
    videos = [_clip(i) for i in range(3)]
    prompts, kept, static = dynamic_sources(["a", "b", "c"], videos, torch.tensor([True, False, True]))
    assert prompts == ["a", "c"] and static == 1
    assert torch.equal(kept[0], videos[0]) and torch.equal(kept[1], videos[2])
    with pytest.raises(ValueError, match="3 clips, 2 flags"):
        dynamic_sources(["a", "b", "c"], videos, torch.tensor([True, False]))


def test_pair_weights_drop_smallest_gaps_and_keep_unscored():
    """Gaps (0.1, 0.4, 0.2, 0.3) + one unscored pair: ⌊0.25·4⌋ = 1 smallest gap (pair 0) dropped; kept gaps
    0.4, 0.2, 0.3 have mean 0.3 → ω ∝ (4/3, 2/3, 1), mean 1; the unscored pair keeps its own weight 1."""
    pairs = [PreferencePair("p", _clip(i), _clip(i + 9), score_gap=g) for i, g in enumerate([0.1, 0.4, 0.2, 0.3])]
    pairs.append(PreferencePair("p", _clip(7), _clip(8)))
    keep, w = pair_weight_vector(pairs, 0.25)
    assert keep == [1, 2, 3, 4]
    assert torch.allclose(w, torch.tensor([4 / 3, 2 / 3, 1.0, 1.0]), atol=1e-6)


def test_the_image_field_round_trips_and_a_missing_image_names_the_line(tmp_path):
    img = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(5))
    f = write_pairs([PreferencePair("a red circle", _clip(0), _clip(1), image=img)], tmp_path / "p.jsonl")
    back, _ = read_pairs(f)
    assert torch.allclose(back[0].image, img, atol=0.5 / 255 + 1e-7)
    ok = {"prompt": "a red circle", "chosen": "a.npy", "rejected": "b.npy"}
    with pytest.raises(VidtuneError, match=r"h.jsonl:1: image not found: .*nope.png"):
        read_pairs(_write(tmp_path, [{**ok, "image": "nope.png"}]))
    (tmp_path / "bad.png").write_text("not a picture")
    with pytest.raises(VidtuneError, match=r"h.jsonl:1: cannot decode the first frame .*bad.png"):
        read_pairs(_write(tmp_path, [{**ok, "image": "bad.png"}]))
